"""Fixtures of the load generator's tests: real servers on loopback, always stopped."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

SERVERS = Path(__file__).with_name("_servers.py")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "slow: takes more than a few seconds (deselect: -m 'not slow')"
    )


@dataclass(frozen=True)
class Servers:
    http: str
    """Base URL of the aiohttp application, e.g. ``http://127.0.0.1:PORT``."""
    raw: str
    """Base URL of the port that answers bytes that are not HTTP."""

    def url(self, path: str) -> str:
        return f"{self.http}{path}"


def _read_line(process: subprocess.Popen[str], timeout_s: float) -> str:
    box: list[str] = []
    reader = threading.Thread(target=lambda: box.append(process.stdout.readline()), daemon=True)  # type: ignore[union-attr]
    reader.start()
    reader.join(timeout_s)
    if not box or not box[0]:
        raise RuntimeError(f"test server did not start within {timeout_s} s")
    return box[0]


@pytest.fixture(scope="session")
def servers() -> Iterator[Servers]:
    """One server process for the whole session; stopped (and waited for) at the end."""
    process = subprocess.Popen([sys.executable, str(SERVERS)], stdout=subprocess.PIPE, text=True)
    try:
        ports = json.loads(_read_line(process, timeout_s=30))
        yield Servers(
            http=f"http://127.0.0.1:{ports['http']}", raw=f"http://127.0.0.1:{ports['raw']}"
        )
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)
        if process.stdout is not None:
            process.stdout.close()


@pytest.fixture
def closed_port() -> int:
    """A loopback port where nothing listens."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])
