"""The console scripts autotune drives (torchserve, torch-model-archiver, optuna-dashboard):
finding them, and stopping what they started."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import psutil


def find_executable(name: str) -> str | None:
    """The script installed beside this Python (the venv's own) first, then the one on PATH."""
    local = Path(sys.executable).with_name(name)
    if local.exists():
        return str(local)
    return shutil.which(name)


def _group_members(pgid: int) -> list[psutil.Process]:
    members = []
    for p in psutil.process_iter():
        with contextlib.suppress(psutil.Error, ProcessLookupError):
            if os.getpgid(p.pid) == pgid:
                members.append(p)
    return members


def stop_process_group(proc: subprocess.Popen[Any], timeout_s: float) -> None:
    """Stop ``proc`` (started with ``start_new_session=True``) and every process it started:
    SIGTERM to its process group, then SIGKILL to whatever is left after ``timeout_s``,
    descendants that left the group included. Returns once they are gone.

    The group is signalled only while it has members (the leader may be dead while its workers
    live on), so a group id that nobody of ours holds any more is never signalled."""
    family: dict[int, psutil.Process] = {p.pid: p for p in _group_members(proc.pid)}
    if proc.poll() is None:  # not reaped: the pid is still our process, and so its children
        with contextlib.suppress(psutil.Error):
            for p in psutil.Process(proc.pid).children(recursive=True):
                family.setdefault(p.pid, p)
    if family:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGTERM)
    _, alive = psutil.wait_procs(list(family.values()), timeout=timeout_s)
    for p in alive:
        with contextlib.suppress(psutil.Error):
            p.kill()
    if _group_members(proc.pid):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
    psutil.wait_procs(alive, timeout=5)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=5)
