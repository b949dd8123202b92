"""One measurement per host at a time.

Two load tests on one host corrupt each other's figures (they share the cores), so every
measurement (a trial's deployment and load test, a confirmation, ``autotune loadtest``) holds
``HostLock``: an exclusive ``flock`` on ``host_dir()/measure.lock``. The file says who holds it
(pid, study, command, since when), so that a second run prints whom it waits for, or, told not
to wait, refuses with that line. The kernel drops the lock when its holder dies, SIGKILL
included, so a dead run never blocks the host. Before it measures, the new holder stops every
server a dead run left behind (``reap_orphans``). The lock is per host: runs on other hosts that
share a PostgreSQL study are not affected.

The lock is re-entrant within a process (a confirmation inside a run that already holds it).
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from types import TracebackType

from autotune._errors import HostBusyError
from autotune.serving._process import ChildRecord, host_dir, reap_orphans
from autotune.space import TrialConfig
from autotune.study import Evaluator, TrialResult

LOCK_FILE = "measure.lock"


@dataclass(frozen=True, kw_only=True)
class Holder:
    """Who holds the host: written into the lock file by its holder."""

    pid: int
    host: str
    study: str
    command: str
    since: float  # seconds since the epoch

    def describe(self) -> str:
        study = f", study {self.study}" if self.study else ""
        when = time.strftime("%H:%M:%S", time.localtime(self.since))
        return f"pid {self.pid} ({self.command[:120]}{study}), measuring since {when}"


def read_holder(path: Path) -> Holder | None:
    """The holder written in ``path``; None while it is empty or being written."""
    try:
        data = json.loads(path.read_text() or "null")
        return Holder(**data) if isinstance(data, dict) else None
    except (OSError, ValueError, TypeError):
        return None


_held: dict[str, tuple[int, int]] = {}  # lock path -> (fd, depth), this process
_held_lock = threading.Lock()


class HostLock:
    """The host's measurement lock as a context manager (see the module docstring).

    ``wait=False`` raises ``HostBusyError`` at once when another process holds it; otherwise
    ``on_wait(holder)`` is called once (to print whom we wait for) and the lock is awaited.
    ``on_reaped`` sees the servers of dead runs that were stopped after it was taken.
    """

    def __init__(
        self,
        *,
        study: str = "",
        command: str | None = None,
        wait: bool = True,
        on_wait: Callable[[Holder | None], None] | None = None,
        on_reaped: Callable[[list[ChildRecord]], None] | None = None,
        path: Path | None = None,
    ) -> None:
        self.study = study
        self.command = command if command is not None else " ".join(sys.argv)
        self.wait = wait
        self.on_wait = on_wait
        self.on_reaped = on_reaped
        self._path = path
        self.waited_s = 0.0

    @property
    def path(self) -> Path:
        return self._path if self._path is not None else host_dir() / LOCK_FILE

    def acquire(self) -> None:
        key = str(self.path)
        with _held_lock:
            if key in _held:
                fd, depth = _held[key]
                _held[key] = (fd, depth + 1)
                return
        fd = os.open(key, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = read_holder(self.path)
                if not self.wait:
                    who = holder.describe() if holder is not None else "another autotune run"
                    raise HostBusyError(
                        f"this host is measuring for {who}; wait for it to finish, or run "
                        "again without --no-wait to queue behind it"
                    ) from None
                if self.on_wait is not None:
                    self.on_wait(holder)
                started = time.monotonic()
                fcntl.flock(fd, fcntl.LOCK_EX)
                self.waited_s = time.monotonic() - started
            holder = Holder(
                pid=os.getpid(),
                host=socket.gethostname(),
                study=self.study,
                command=self.command,
                since=time.time(),
            )
            os.ftruncate(fd, 0)
            os.pwrite(fd, json.dumps(asdict(holder)).encode(), 0)
        except BaseException:
            os.close(fd)
            raise
        with _held_lock:
            _held[key] = (fd, 1)
        reaped = reap_orphans()
        if reaped and self.on_reaped is not None:
            self.on_reaped(reaped)

    def acquire_once(self) -> None:
        """Take the lock and give it back: waits (or refuses) and cleans up like ``acquire``."""
        self.acquire()
        self.release()

    def release(self) -> None:
        key = str(self.path)
        with _held_lock:
            if key not in _held:
                return
            fd, depth = _held[key]
            if depth > 1:
                _held[key] = (fd, depth - 1)
                return
            del _held[key]
        try:
            os.ftruncate(fd, 0)
            fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)

    def __enter__(self) -> HostLock:
        self.acquire()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.release()


class HostLocked:
    """An ``Evaluator`` whose every ``evaluate`` (deploy + load test) holds the host lock."""

    def __init__(self, evaluator: Evaluator, lock: HostLock) -> None:
        self.evaluator = evaluator
        self.lock = lock

    def evaluate(self, config: TrialConfig) -> TrialResult:
        with self.lock:
            return self.evaluator.evaluate(config)
