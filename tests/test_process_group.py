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
from autotune.serving import ChildRecord, reap_orphans, stop_process_group, wait_until

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


@pytest.mark.xfail(
    reason="known defect (issue 12): a descendant that left the group with setsid can outlive "
    "a SIGKILLed parent; TorchServe's workers stay in its group (tests/test_sigkill.py)",
    strict=False,
)
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
