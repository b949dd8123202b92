"""Closed loop: ``concurrency`` clients, each sending its next request when its answer arrives.

This is Apache Bench's model, kept to compare with TorchServe's own benchmark and to probe a
server's capacity. Each latency counts from the request's actual send, which is all a closed
client knows: while the server stalls, no request is sent, so the stall barely shows in P99
(coordinated omission). Use the open loop for SLA figures.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable

from autotune.loadgen._http import HttpEngine
from autotune.loadgen._metrics import scrape, server_means
from autotune.loadgen._open_loop import default_drain_s
from autotune.loadgen._recorder import Recorder
from autotune.loadgen._result import LoadResult, Mode
from autotune.loadgen._stats import sla_verdict
from autotune.loadgen._target import Target


async def run_closed_loop(
    target: Target,
    *,
    concurrency: int,
    duration_s: float,
    warmup_s: float = 0.0,
    sla_ms: float | None = None,
    confidence: float = 0.95,
    max_requests: int | None = None,
    drain_s: float | None = None,
) -> LoadResult:
    """Keeps ``concurrency`` requests in flight for ``warmup_s + duration_s``.

    The last ``duration_s`` are measured; ``max_requests`` ends the window earlier, after that
    many measured requests. With ``sla_ms`` the result carries ``over_sla`` and ``verdict``.
    """
    if not duration_s > 0:
        raise ValueError(f"`duration_s > 0` must hold, but got ({duration_s=}).")
    if not warmup_s >= 0:
        raise ValueError(f"`warmup_s >= 0` must hold, but got ({warmup_s=}).")
    return await closed_loop(
        target,
        concurrency=concurrency,
        duration_s=duration_s,
        warmup_s=warmup_s,
        sla_ms=sla_ms,
        confidence=confidence,
        max_requests=max_requests,
        drain_s=drain_s,
    )


async def closed_loop(
    target: Target,
    *,
    concurrency: int,
    duration_s: float,
    warmup_s: float = 0.0,
    warmup_requests: int = 0,
    sla_ms: float | None = None,
    confidence: float = 0.95,
    max_requests: int | None = None,
    drain_s: float | None = None,
    stop: Callable[[Recorder], bool] | None = None,
) -> LoadResult:
    """``run_closed_loop``, plus a warm-up by count and a ``stop`` predicate checked per answer."""
    if concurrency < 1:
        raise ValueError(f"`concurrency >= 1` must hold, but got ({concurrency=}).")
    if max_requests is not None and max_requests < 1:
        raise ValueError(f"`max_requests >= 1` must hold, but got ({max_requests=}).")
    rec = Recorder(sla_ms=sla_ms)
    limit = warmup_requests + max_requests if max_requests is not None else None
    stopping = False
    window_end = 0.0
    finished: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def issue() -> None:
        now = time.perf_counter()
        rid = rec.add(now, 0.0)
        if not rec.window_open and (
            (warmup_requests and rid == warmup_requests)
            or (not warmup_requests and now >= window_start)
        ):
            rec.open_window(rid, now)
        engine.submit(rid, now)

    def end(t: float) -> None:
        nonlocal stopping, window_end
        if not stopping:
            stopping = True
            window_end = min(t, deadline)
        if not rec.outstanding and not finished.done():
            finished.set_result(None)

    def on_done(rid: int, t_done: float, kind: str | None) -> None:
        rec.finish(rid, t_done, kind)
        if stopping or (
            t_done >= deadline
            or (limit is not None and len(rec.intended) >= limit)
            or (stop is not None and stop(rec))
        ):
            end(t_done)
        else:
            issue()

    engine = HttpEngine(target, max_connections=concurrency, on_done=on_done)
    before = (
        await scrape(target.metrics_url, model=target.metrics_model) if target.metrics_url else {}
    )
    await engine.start()
    try:
        t0 = time.perf_counter()
        window_start = t0 + warmup_s
        deadline = window_start + duration_s
        if not warmup_requests and not warmup_s:
            rec.open_window(0, t0)
        for _ in range(concurrency if limit is None else min(concurrency, limit)):
            issue()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(max(0.0, deadline - time.perf_counter())):
                await asyncio.shield(finished)
        end(time.perf_counter())
        await rec.drain(default_drain_s(target, sla_ms) if drain_s is None else drain_s)
    finally:
        engine.close()
    after = (
        await scrape(target.metrics_url, model=target.metrics_model) if target.metrics_url else {}
    )
    verdict = None
    if sla_ms is not None:
        verdict = sla_verdict(samples=rec.resolved, over=rec.over, confidence=confidence)
    return rec.result(
        mode=Mode.CLOSED,
        offered_rps=None,
        window_end=window_end,
        concurrency=concurrency,
        sla_ms=sla_ms,
        verdict=verdict,
        stopped_early=False,
        server=server_means(before, after),
    )
