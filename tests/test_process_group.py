"""stop_process_group on real processes: everything a server started goes, also what ignores
SIGTERM, what left the group, and what outlived its leader."""

from __future__ import annotations

import subprocess
import sys
import time

import psutil

from autotune.serving import stop_process_group

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
