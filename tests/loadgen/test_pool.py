"""The connection pool of ``HttpEngine`` against a real server on loopback: a request waits
briefly for a busy connection before the pool grows for it."""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING

import pytest

from autotune.loadgen import Target, _http
from autotune.loadgen._http import HttpEngine

if TYPE_CHECKING:
    from tests.loadgen.conftest import Servers


async def _burst(url: str, n: int) -> tuple[list[float], int]:
    """Submits ``n`` requests at once; returns their latencies (s) and the pool's size."""
    done: dict[int, float] = {}
    finished = asyncio.Event()

    def on_done(rid: int, t_done: float, kind: str | None) -> None:
        assert kind is None, kind
        done[rid] = t_done
        if len(done) == n:
            finished.set()

    engine = HttpEngine(Target(url=url, method="GET"), max_connections=64, on_done=on_done)
    await engine.start()
    try:
        t0 = time.perf_counter()
        for rid in range(n):
            engine.submit(rid, t0)
        async with asyncio.timeout(20):
            await finished.wait()
        return [done[rid] - t0 for rid in range(n)], engine.connections
    finally:
        engine.close()


def test_a_burst_to_a_slow_server_grows_the_pool_and_runs_concurrently(
    servers: Servers,
) -> None:
    latencies, connections = asyncio.run(_burst(servers.url("/sleep?ms=300"), 8))
    assert connections == 8
    # one at a time they would take 8 x 300 ms: the last answer comes with the first ones
    assert max(latencies) < 1.2


def test_a_request_waits_for_a_busy_connection_before_the_pool_grows(
    servers: Servers, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_http, "_GROW_AFTER_S", 30.0)  # never grows within the test
    latencies, connections = asyncio.run(_burst(servers.url("/sleep?ms=100"), 3))
    assert connections == 1
    assert sorted(latencies) == pytest.approx([0.1, 0.2, 0.3], abs=0.09)  # served in turn
