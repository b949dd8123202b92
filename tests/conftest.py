"""Shared fixtures: no test may leave a TorchServe process behind, and each test has its own
host folder (the measurement lock, the record of children), so that tests running side by side
under pytest-xdist do not wait for each other's measurement or see each other's children."""

from __future__ import annotations

import signal
import time
from collections.abc import Iterator

import psutil
import pytest

MODEL_SERVER = "org.pytorch.serve.ModelServer"


def model_server_pids(under: str = "") -> set[int]:
    """TorchServe frontends whose command line mentions ``under`` (its folders live there)."""
    pids = set()
    for proc in psutil.process_iter(["pid", "cmdline"]):
        cmdline = " ".join(proc.info["cmdline"] or [])
        if MODEL_SERVER in cmdline and under in cmdline:
            pids.add(proc.info["pid"])
    return pids


@pytest.fixture(autouse=True, scope="session")
def interruptible() -> None:
    """Ctrl-C reaches the commands the tests start. A shell without job control starts
    background commands with SIGINT ignored (POSIX), every child inherits that across exec, and
    Python then leaves it ignored: `autotune dashboard` and `autotune run` started by a test never
    saw the SIGINT it sent. A handled signal is reset to its default on exec, so handling it here
    gives each child the default, and Python's KeyboardInterrupt."""
    if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)


@pytest.fixture(autouse=True)
def own_host_dir(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """``AUTOTUNE_HOST_DIR`` of this test and the commands it starts (a test may set its own).
    A module-scoped fixture is set up before it and keeps the user's host folder: the studies
    made that way run in the `measures` phase, alone."""
    monkeypatch.setenv("AUTOTUNE_HOST_DIR", str(tmp_path_factory.mktemp("host")))


@pytest.fixture
def no_orphans(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Fails the test when a TorchServe started under this session's temporary folders
    outlives it (other servers on the machine are not ours to judge)."""
    base = str(tmp_path_factory.getbasetemp())
    yield
    deadline = time.monotonic() + 15
    while (left := model_server_pids(base)) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert not left, f"TorchServe processes left behind: {sorted(left)}"
