"""The host's measurement lock between real processes: a second one waits (saying for whom),
or refuses with one line; the lock goes with its holder, even on SIGKILL."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from autotune._errors import HostBusyError
from autotune.serving import HostLock
from autotune.serving._hostlock import read_holder

# Takes the lock, says so, holds it until its stdin closes (or for 30 s), says when it let go.
HOLDER = r"""
import sys, time
from autotune.serving import HostLock
with HostLock(study=sys.argv[1], command="holder " + sys.argv[1]):
    print("held", time.time(), flush=True)
    sys.stdin.readline()
    released = time.time()
print("released", released, flush=True)
"""
# Waits for the lock (printing whom for), prints when it got it.
WAITER = r"""
import sys, time
from autotune.serving import HostLock
def on_wait(holder):
    print("waiting for", holder.describe() if holder else None, flush=True)
with HostLock(study="second", on_wait=on_wait):
    print("got", time.time(), flush=True)
"""


def _python(code: str, *args: str, env: dict[str, str]) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", code, *args],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
    )


def _done(*procs: subprocess.Popen[str]) -> None:
    for proc in procs:
        proc.kill()
        proc.wait(timeout=10)
        for pipe in (proc.stdin, proc.stdout):
            if pipe is not None and not pipe.closed:
                pipe.close()


def _line(proc: subprocess.Popen[str]) -> list[str]:
    assert proc.stdout is not None
    return proc.stdout.readline().split()


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    monkeypatch.setenv("AUTOTUNE_HOST_DIR", str(tmp_path))
    return dict(os.environ)


def test_a_second_process_waits_for_the_first_ones_measurement(env: dict[str, str]) -> None:
    holder = _python(HOLDER, "first", env=env)
    waiter = _python("import time; time.sleep(0)", env=env)
    try:
        assert _line(holder)[0] == "held"
        _done(waiter)
        waiter = _python(WAITER, env=env)
        words = _line(waiter)
        assert words[:4] == ["waiting", "for", "pid", str(holder.pid)]
        assert "study first" in " ".join(words)
        time.sleep(1.0)
        assert waiter.poll() is None  # still waiting
        assert holder.stdin is not None
        holder.stdin.close()
        released = float(_line(holder)[1])
        got = float(_line(waiter)[1])
        assert got >= released
        assert waiter.wait(timeout=10) == 0
    finally:
        _done(holder, waiter)


def test_no_wait_refuses_with_the_holder_and_the_lock_dies_with_a_killed_holder(
    env: dict[str, str], tmp_path: Path
) -> None:
    holder = _python(HOLDER, "first", env=env)
    try:
        assert _line(holder)[0] == "held"
        info = read_holder(tmp_path / "measure.lock")
        assert info is not None and info.pid == holder.pid and info.study == "first"
        with pytest.raises(HostBusyError, match=rf"pid {holder.pid} \(holder first, study first\)"):
            HostLock(study="second", wait=False).acquire()
        holder.kill()  # SIGKILL while holding: the kernel drops the flock
        holder.wait(timeout=10)
        started = time.monotonic()
        with HostLock(study="second", wait=False):
            held = read_holder(tmp_path / "measure.lock")
            assert held is not None and held.pid == os.getpid()
        assert time.monotonic() - started < 5
    finally:
        _done(holder)


def test_the_lock_is_reentrant_within_a_process(env: dict[str, str]) -> None:
    outer = HostLock(study="a", wait=False)
    with outer, HostLock(study="a", wait=False):
        pass
    with HostLock(study="b", wait=False):  # released: free again
        pass


def test_a_run_told_not_to_wait_refuses_before_it_starts_a_server(
    env: dict[str, str], tmp_path: Path
) -> None:
    # The model check starts TorchServe and sends requests: it is a measurement of the host too,
    # so `autotune run --no-wait` refuses before it, with the holder's line, and stores nothing.
    holder = _python(HOLDER, "first", env=env)
    db = tmp_path / "studies.db"
    try:
        assert _line(holder)[0] == "held"
        run = subprocess.run(
            [sys.executable, "-m", "autotune", "run", "--sla-ms", "100", "--model", "quick",
             "--trials", "1", "--no-wait", "--storage", f"sqlite:///{db}",
             "--workdir", str(tmp_path / "work")],
            capture_output=True, text=True, env=env, timeout=300,
        )  # fmt: skip
        assert run.returncode == 1, run.stderr
        lines = [line for line in run.stderr.splitlines() if line.strip()]
        assert len(lines) == 1, run.stderr
        assert f"pid {holder.pid} (holder first, study first)" in lines[0]
        if db.exists():
            import optuna

            assert optuna.get_all_study_names(storage=f"sqlite:///{db}") == []
    finally:
        _done(holder)
