"""The child processes autotune drives (torchserve, optuna-dashboard): finding their scripts,
starting them so that they die with us, waiting for them with a deadline, and stopping them.

``ChildProcess`` is the one way a server is started. Its command runs under a small guard in a
session (process group) of its own. The guard asks the kernel for a parent-death signal
(``prctl(PR_SET_PDEATHSIG)``): when autotune dies, even by SIGKILL, the guard kills its whole
group and whatever else descends from it. That matters because ``torchserve --start
--foreground`` is a Python wrapper that starts Java, which starts the Python workers; a
parent-death signal on the wrapper alone would leave Java and the workers running. The guard is
also a subreaper, so that a descendant that left the group (``setsid``) and lost its own parent
is still the guard's to kill. Each started child is also written down in the host folder
(``host_dir()/children``) with its owner, and every process it starts carries its owner in its
environment (``MARKER_ENV``), so that the next run on the host finds and stops what a dead run
left (``reap_orphans``), should the signal not have been delivered (a kernel that lacks it, a
guard killed first).

``wait_until(predicate, timeout_s=..., what=...)`` is the one wait with a deadline and backoff.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import psutil

from autotune._errors import ServerError

T = TypeVar("T")


def find_executable(name: str) -> str | None:
    """The script installed beside this Python (the venv's own) first, then the one on PATH."""
    local = Path(sys.executable).with_name(name)
    if local.exists():
        return str(local)
    return shutil.which(name)


# -- waiting ----------------------------------------------------------------------------------
def wait_until(
    predicate: Callable[[], T | None],
    *,
    timeout_s: float,
    what: str,
    first_delay_s: float = 0.1,
    max_delay_s: float = 1.0,
    error: type[Exception] = ServerError,
) -> T:
    """Call ``predicate`` until it returns something truthy, and return that.

    Between calls it sleeps with backoff (x1.5, from ``first_delay_s`` to ``max_delay_s``); once
    ``timeout_s`` has passed it raises ``error`` saying ``what`` did not happen in time. The
    predicate raises to give up early (e.g. the process it waits for exited).
    """
    deadline = time.monotonic() + timeout_s
    delay = first_delay_s
    while True:
        value = predicate()
        if value:
            return value
        left = deadline - time.monotonic()
        if left <= 0:
            raise error(f"{what} within {timeout_s:.0f} s")
        time.sleep(min(delay, left))
        delay = min(delay * 1.5, max_delay_s)


# -- the host folder and the record of our children -------------------------------------------
def host_dir() -> Path:
    """This user's host-wide folder of autotune (the measurement lock, the children record).

    ``$AUTOTUNE_HOST_DIR`` when set (tests), else ``$XDG_RUNTIME_DIR/autotune``, else
    ``/tmp/autotune-<uid>``; created private (0700).
    """
    explicit = os.environ.get("AUTOTUNE_HOST_DIR")
    if explicit:
        path = Path(explicit)
    elif os.environ.get("XDG_RUNTIME_DIR") and Path(os.environ["XDG_RUNTIME_DIR"]).is_dir():
        path = Path(os.environ["XDG_RUNTIME_DIR"]) / "autotune"
    else:
        path = Path(tempfile.gettempdir()) / f"autotune-{os.getuid()}"
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    return path


def _children_dir() -> Path:
    path = host_dir() / "children"
    path.mkdir(exist_ok=True, mode=0o700)
    return path


def _create_time(pid: int) -> float | None:
    try:
        return float(psutil.Process(pid).create_time())
    except psutil.Error:
        return None


def _same_process(pid: int, create_time: float) -> bool:
    """Whether ``pid`` is still the process that was created at ``create_time``."""
    now = _create_time(pid)
    return now is not None and abs(now - create_time) < 0.05


@dataclass(frozen=True, kw_only=True)
class ChildRecord:
    """A started child as written in ``host_dir()/children``: its group and its owner."""

    name: str
    pgid: int  # the guard's pid, leader of the child's process group
    create_time: float
    owner_pid: int
    owner_create_time: float
    argv: tuple[str, ...]

    @property
    def path(self) -> Path:
        return _children_dir() / f"{self.pgid}.json"

    def write(self) -> None:
        data = {**self.__dict__, "argv": list(self.argv)}
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(data))
        tmp.replace(self.path)

    @classmethod
    def read(cls, path: Path) -> ChildRecord | None:
        try:
            data = json.loads(path.read_text())
            return cls(**{**data, "argv": tuple(data["argv"])})
        except (OSError, ValueError, TypeError, KeyError):
            return None

    def owner_alive(self) -> bool:
        return _same_process(self.owner_pid, self.owner_create_time)

    def members(self) -> list[psutil.Process]:
        """The live processes of the child's group (none when the group id was reused)."""
        leader = _create_time(self.pgid)
        if leader is not None and abs(leader - self.create_time) >= 0.05:
            return []  # the pid now belongs to another process: its group is not ours
        return [p for p in _group_members(self.pgid) if p.pid != os.getpid()]


def _marker(owner: psutil.Process | None = None) -> str:
    """The value of ``MARKER_ENV`` for the children of ``owner`` (this process by default)."""
    me = owner or psutil.Process()
    return f"{me.pid}:{me.create_time():.3f}:{host_dir()}"


def _marked_orphans() -> list[psutil.Process]:
    """This user's processes marked as descendants of a run of this host folder that died."""
    suffix = f":{host_dir()}"
    found = []
    for p in psutil.process_iter():
        with contextlib.suppress(psutil.Error, ValueError):
            marker = p.environ().get(MARKER_ENV, "")
            if not marker.endswith(suffix) or p.pid == os.getpid():
                continue
            pid, create_time = marker.removesuffix(suffix).split(":")
            if not _same_process(int(pid), float(create_time)):
                found.append(p)
    return found


def reap_orphans() -> list[ChildRecord]:
    """Stop every recorded child whose owner died (a run killed with SIGKILL); returns them.

    Then every process still marked (``MARKER_ENV``) as a descendant of a dead run of this host
    folder: one that left its group and outlived its guard. Children of live owners (another
    run on the host) are left alone.
    """
    reaped = []
    for path in sorted(_children_dir().glob("*.json")):
        record = ChildRecord.read(path)
        if record is None:
            path.unlink(missing_ok=True)
            continue
        if record.owner_alive():
            continue
        members = record.members()
        for p in members:
            with contextlib.suppress(psutil.Error):
                p.kill()
        psutil.wait_procs(members, timeout=10)
        path.unlink(missing_ok=True)
        if members:
            reaped.append(record)
    strays = _marked_orphans()
    for p in strays:
        with contextlib.suppress(psutil.Error):
            p.kill()
    psutil.wait_procs(strays, timeout=10)
    return reaped


# -- starting and stopping --------------------------------------------------------------------
# Runs as ``python -c _GUARD <parent pid> <marker> <argv...>``, leader of its own session. It
# becomes a subreaper (PR_SET_CHILD_SUBREAPER): a descendant whose own parent died (a worker
# that called setsid, then lost its parent) is handed to the guard, not to init, so it stays
# among the guard's descendants. It asks for a parent-death signal, starts the command in its
# group with ``AUTOTUNE_CHILD=<marker>`` in its environment, reaps every child handed to it,
# and once the command exits kills what it left and mirrors its exit status. On the parent's
# death it kills every descendant and its group. The kernel sends the parent-death signal again
# each time the guard is handed on to another thread of the dying parent (a SIGKILLed process's
# threads die one by one), so the handler ignores the signal first: re-entered halfway through
# ``import psutil`` it found a half-imported module and left the escaped descendants alive.
_GUARD = r"""
import ctypes, os, signal, subprocess, sys
import psutil
parent, marker = int(sys.argv[1]), sys.argv[2]
libc = ctypes.CDLL(None, use_errno=True)
libc.prctl(36, ctypes.c_ulong(1))  # PR_SET_CHILD_SUBREAPER
def die(*_):
    signal.signal(signal.SIGUSR1, signal.SIG_IGN)
    try:
        for p in psutil.Process().children(recursive=True):
            try: p.kill()
            except psutil.Error: pass
    finally:
        os.killpg(0, signal.SIGKILL)
signal.signal(signal.SIGUSR1, die)
libc.prctl(1, ctypes.c_ulong(signal.SIGUSR1))  # PR_SET_PDEATHSIG
if os.getppid() != parent:
    die()
def term(*_):
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    os.killpg(0, signal.SIGTERM)
signal.signal(signal.SIGTERM, term)
child = subprocess.Popen(sys.argv[3:], env={**os.environ, "AUTOTUNE_CHILD": marker})
while True:
    try:
        pid, status = os.wait()
    except InterruptedError:
        continue
    except ChildProcessError:
        sys.exit(1)
    if pid == child.pid:
        break
code = os.waitstatus_to_exitcode(status)
for p in psutil.Process().children(recursive=True):  # what the command left behind
    try: p.kill()
    except psutil.Error: pass
sys.exit(code if code >= 0 else 128 - code)
"""

MARKER_ENV = "AUTOTUNE_CHILD"
"""Set in the environment of every command started by ``ChildProcess`` (and so inherited by
what it starts): ``<owner pid>:<guard's start time>``. The next run finds by it the descendants
of a dead run that left its group and lost its guard (``reap_orphans``)."""


class ChildProcess:
    """One long-running child (a server): its own session, dies with us, always stopped.

    ``start()`` runs ``argv`` under the guard of the module docstring, with stdout and stderr to
    ``log_path`` (or ours); ``stop()`` stops its whole process group (``stop_process_group``).
    Start it from a thread that lives as long as the child should: the kernel sends the
    parent-death signal when the *thread* that started it ends.
    """

    def __init__(
        self,
        argv: Sequence[str],
        *,
        name: str,
        cwd: Path | None = None,
        env: Mapping[str, str] | None = None,
        log_path: Path | None = None,
    ) -> None:
        self.argv = tuple(argv)
        self.name = name
        self.cwd = cwd
        self.env = dict(env) if env is not None else None
        self.log_path = log_path
        self._proc: subprocess.Popen[bytes] | None = None
        self._record: ChildRecord | None = None

    @property
    def pid(self) -> int | None:
        """The pid of the guard, leader of the child's process group."""
        return self._proc.pid if self._proc is not None else None

    def start(self) -> None:
        if self.is_alive():
            return
        # Without a log file the child's messages go to our terminal.
        log = self.log_path.open("ab") if self.log_path is not None else None
        try:
            self._proc = subprocess.Popen(
                [sys.executable, "-c", _GUARD, str(os.getpid()), _marker(), *self.argv],
                cwd=self.cwd,
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT if log is not None else None,
                start_new_session=True,
            )
        finally:
            if log is not None:
                log.close()
        me = psutil.Process()
        record = ChildRecord(
            name=self.name,
            pgid=self._proc.pid,
            create_time=_create_time(self._proc.pid) or time.time(),
            owner_pid=me.pid,
            owner_create_time=float(me.create_time()),
            argv=self.argv,
        )
        with contextlib.suppress(OSError):
            record.write()
            self._record = record

    def is_alive(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def wait(self, timeout_s: float | None = None) -> int:
        """Block until the child exits; its exit status."""
        if self._proc is None:
            raise ServerError(f"{self.name} was never started")
        return self._proc.wait(timeout=timeout_s)

    def stop(self, timeout_s: float = 30.0) -> None:
        """Stop the child and everything it started (see ``stop_process_group``). Idempotent."""
        proc = self._proc
        if proc is None:
            return
        stop_process_group(proc, timeout_s)
        self._proc = None
        if self._record is not None:
            self._record.path.unlink(missing_ok=True)
            self._record = None


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
