"""Child processes on real processes: everything a server started goes, also what ignores
SIGTERM, what left the group, and what outlived its leader; a child dies with its parent even
by SIGKILL; a dead run's servers are found and stopped; the wait with a deadline."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from autotune._errors import ServerError
from autotune.serving import (
    ChildProcess,
    ChildRecord,
    reap_orphans,
    stop_process_group,
    wait_until,
)
from autotune.serving._process import MARKER_ENV

# The leader prints the pids it started, then waits (or exits, with "exit" as argument).
LEADER = r"""
import subprocess, sys, time
stubborn = subprocess.Popen([sys.executable, "-c",
    "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(60)"])
escaped = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"],
                           start_new_session=True)
print(stubborn.pid, escaped.pid, flush=True)
if sys.argv[1:] != ["exit"]:
    time.sleep(60)
"""


def _start(*args: str) -> tuple[subprocess.Popen[str], list[int]]:
    proc = subprocess.Popen(
        [sys.executable, "-c", LEADER, *args],
        stdout=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    assert proc.stdout is not None
    pids = [int(p) for p in proc.stdout.readline().split()]
    proc.stdout.close()  # the leader prints nothing more
    return proc, pids


def _alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def test_the_leader_its_stubborn_child_and_an_escaped_child_all_stop() -> None:
    proc, (stubborn, escaped) = _start()
    started = time.monotonic()
    stop_process_group(proc, timeout_s=1.0)
    assert proc.returncode is not None
    assert not _alive(stubborn) and not _alive(escaped)
    assert time.monotonic() - started < 15


def test_group_members_that_outlived_their_leader_stop() -> None:
    proc, (stubborn, escaped) = _start("exit")
    proc.wait(timeout=10)  # the leader is gone and reaped; its child is still in the group
    assert _alive(stubborn)
    try:
        stop_process_group(proc, timeout_s=1.0)
        assert not _alive(stubborn)
    finally:
        for pid in (stubborn, escaped):  # the escaped one left the group: not ours to find
            if _alive(pid):
                psutil.Process(pid).kill()


# -- ChildProcess: dies with its parent, even by SIGKILL ----------------------------------------
# The parent starts a ChildProcess whose command starts a grandchild (in the group) and an
# escaped one (own session, like a worker that called setsid), prints every pid, then waits.
PARENT = r"""
import sys, time
from autotune.serving import ChildProcess
child = ChildProcess([sys.executable, "-c", sys.argv[1]], name="tree")
child.start()
print(child.pid, flush=True)
time.sleep(60)
"""


def _wait_gone(pids: list[int], timeout_s: float = 10.0) -> list[int]:
    deadline = time.monotonic() + timeout_s
    while (alive := [p for p in pids if _alive(p)]) and time.monotonic() < deadline:
        time.sleep(0.1)
    return alive


def _descendants(pid: int) -> list[int]:
    return [p.pid for p in psutil.Process(pid).children(recursive=True)]


def test_a_child_process_and_all_it_started_die_when_its_parent_is_killed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AUTOTUNE_HOST_DIR", str(tmp_path))
    parent = subprocess.Popen(
        [sys.executable, "-c", PARENT, LEADER], stdout=subprocess.PIPE, text=True
    )
    assert parent.stdout is not None
    guard = int(parent.stdout.readline())
    deadline = time.monotonic() + 20
    while len(tree := _descendants(guard)) < 3 and time.monotonic() < deadline:
        time.sleep(0.1)  # guard -> leader -> stubborn (ignores SIGTERM) + escaped (own session)
    assert len(tree) >= 3, tree
    assert list((tmp_path / "children").glob("*.json"))  # recorded with its owner
    parent.kill()
    parent.wait(timeout=10)
    parent.stdout.close()
    assert not _wait_gone([guard, *tree]), "children survived their parent's SIGKILL"


# The command starts a middle process that starts an escaped one (own session) and exits, as a
# daemon's double fork does, then waits.
DOUBLE_FORK = r"""
import subprocess, sys, time
subprocess.run([sys.executable, "-c", "import subprocess, sys; subprocess.Popen([sys.executable, "
                "'-c', 'import time; time.sleep(60)'], start_new_session=True)"], check=True)
time.sleep(60)
"""


def test_a_descendant_whose_parent_died_is_handed_to_the_guard_and_stopped_with_it() -> None:
    child = ChildProcess([sys.executable, "-c", DOUBLE_FORK], name="tree")
    child.start()
    assert child.pid is not None
    try:
        deadline = time.monotonic() + 20
        escaped: list[psutil.Process] = []
        while time.monotonic() < deadline and not escaped:
            escaped = [
                p
                for p in psutil.Process(child.pid).children()
                if p.cmdline()[-1:] == ["import time; time.sleep(60)"]
            ]
            time.sleep(0.1)
        assert escaped, "the escaped process was not handed to the guard (a subreaper)"
        assert os.getpgid(escaped[0].pid) != child.pid  # it left the group
    finally:
        child.stop(timeout_s=1.0)
    assert not _wait_gone([p.pid for p in escaped])


def test_what_a_command_left_behind_dies_when_it_exits(tmp_path: Path) -> None:
    # The leader prints the pids of its stubborn child (in the group) and of its escaped one
    # (own session), then exits: the guard kills both and exits with the leader's status.
    log = tmp_path / "leader.log"
    child = ChildProcess([sys.executable, "-c", LEADER, "exit"], name="tree", log_path=log)
    child.start()
    assert child.wait(timeout_s=20) == 0
    left = [int(p) for p in log.read_text().split()]
    assert len(left) == 2, left
    assert not _wait_gone(left)
    child.stop()


def test_the_next_run_stops_a_marked_descendant_of_a_dead_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A dead run's worker that left its group and whose guard is gone as well: no record names
    # it; the owner in its environment does.
    monkeypatch.setenv("AUTOTUNE_HOST_DIR", str(tmp_path))
    dead_owner = subprocess.Popen([sys.executable, "-c", "pass"])
    dead_owner.wait(timeout=10)
    marker = f"{dead_owner.pid}:{time.time() - 100:.3f}:{tmp_path}"
    sleeper = [sys.executable, "-c", "import time; time.sleep(60)"]
    stray = subprocess.Popen(
        sleeper, env={**os.environ, MARKER_ENV: marker}, start_new_session=True
    )
    me = psutil.Process()
    alive_marker = f"{me.pid}:{me.create_time():.3f}:{tmp_path}"
    other_host = f"{dead_owner.pid}:0.000:{tmp_path / 'elsewhere'}"
    kept = [
        subprocess.Popen(sleeper, env={**os.environ, MARKER_ENV: m}, start_new_session=True)
        for m in (alive_marker, other_host)
    ]
    try:
        deadline = time.monotonic() + 10  # the environment is readable once they run
        while (
            time.monotonic() < deadline
            and psutil.Process(stray.pid).environ().get(MARKER_ENV) != marker
        ):
            time.sleep(0.05)
        assert reap_orphans() == []  # no record: the marker alone found it
        assert not _wait_gone([stray.pid]) and stray.poll() is not None
        assert all(p.poll() is None for p in kept)
    finally:
        for p in (stray, *kept):
            p.kill()
            p.wait(timeout=10)


def test_the_next_run_stops_a_child_whose_owner_died(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AUTOTUNE_HOST_DIR", str(tmp_path))
    # A server group whose recorded owner is dead, as if the parent-death signal never came.
    dead_owner = subprocess.Popen([sys.executable, "-c", "pass"])
    dead_owner.wait(timeout=10)
    orphan, (stubborn, escaped) = _start()
    live_owner, _ = _start()  # a group owned by a live process (another run): left alone
    try:
        for proc, owner in ((orphan, dead_owner.pid), (live_owner, os.getpid())):
            ChildRecord(
                name="torchserve",
                pgid=proc.pid,
                create_time=psutil.Process(proc.pid).create_time(),
                owner_pid=owner,
                owner_create_time=psutil.Process(os.getpid()).create_time()
                if owner == os.getpid()
                else 0.0,
                argv=("torchserve",),
            ).write()
        reaped = reap_orphans()
        assert [r.pgid for r in reaped] == [orphan.pid]
        assert not _wait_gone([orphan.pid, stubborn])
        assert _alive(live_owner.pid)
        assert [p.name for p in (tmp_path / "children").glob("*.json")] == [
            f"{live_owner.pid}.json"
        ]
    finally:
        stop_process_group(live_owner, timeout_s=1.0)
        orphan.wait(timeout=10)
        if _alive(escaped):
            psutil.Process(escaped).kill()


def test_wait_until_returns_the_value_and_states_what_timed_out() -> None:
    calls = iter([None, 0, "ready"])
    assert wait_until(lambda: next(calls), timeout_s=5, what="x", first_delay_s=0.01) == "ready"
    started = time.monotonic()
    with pytest.raises(ServerError, match=r"the thing did not happen within 0 s"):
        wait_until(lambda: False, timeout_s=0.3, what="the thing did not happen")
    assert 0.3 <= time.monotonic() - started < 2
    with pytest.raises(KeyError):  # the predicate gives up early by raising
        empty: dict[str, int] = {}
        wait_until(lambda: empty["gone"], timeout_s=5, what="never")
