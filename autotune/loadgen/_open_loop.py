"""Open loop: requests leave at planned times, whatever the server does.

One scheduler coroutine walks the precomputed plan: it sleeps until the next intended time and
hands every request that is due to the connection pool (no task per request, none created up
front). Each latency counts from the request's intended time, so a stall of the server (or of
this process) is charged in full: no coordinated omission. How late each dispatch was against
the plan is kept and reported as the schedule lag.
"""

from __future__ import annotations

import asyncio
import math
import time
from dataclasses import dataclass

import numpy as np

from autotune.loadgen._http import HttpEngine
from autotune.loadgen._metrics import scrape, server_means
from autotune.loadgen._recorder import Recorder
from autotune.loadgen._result import LoadResult, Mode
from autotune.loadgen._schedule import arrival_times
from autotune.loadgen._stats import Verdict, fail_min_over, pass_min_samples, sla_verdict
from autotune.loadgen._target import Arrival, Target

_CHECK_EVERY_S = 0.05
_MIN_SLEEP_S = 0.001
"""Event-loop timers have 1 ms resolution: a shorter sleep would spin, burning the CPU that a
server on the same host needs. Requests due within a tick leave together, at most about 1 ms
late; that lag is measured and charged to their latency."""
_MAX_CONNECTIONS = 1024
_MAX_COUNTED_IN_FLIGHT = 10_000


def default_connections(rate_rps: float, sla_ms: float | None) -> int:
    """Pool cap: the requests in flight at ``rate_rps`` over 4 SLAs (1 s without one), 32..1024.

    A cap keeps an overloaded run from opening sockets until the file limit; requests over it
    wait in the client, their latency still counted from their intended time.
    """
    horizon_s = 4.0 * sla_ms / 1000.0 if sla_ms is not None else 1.0
    return int(min(_MAX_CONNECTIONS, max(32, math.ceil(rate_rps * horizon_s))))


def default_drain_s(target: Target, sla_ms: float | None) -> float:
    """How long answers are awaited after the last send: 3 SLAs (at least 1 s), else the timeout.

    Without an SLA the wait is a little longer than the timeout, so that every request ends
    answered or timed out rather than unfinished.
    """
    if sla_ms is None:
        return target.timeout_s + 0.25
    return min(target.timeout_s, max(1.0, 3.0 * sla_ms / 1000.0))


@dataclass(frozen=True, kw_only=True)
class _StopRule:
    confidence: float
    min_s: float
    max_errors: int | None
    fail_min_s: float = 0.0

    def check(self, rec: Recorder, now: float) -> Verdict | None:
        """The settled verdict of the window so far, or None while it is open."""
        if self.max_errors is not None and rec.errors > self.max_errors:
            return Verdict.FAIL
        over = rec.over + rec.over_in_flight(now, _MAX_COUNTED_IN_FLIGHT)
        elapsed = now - rec.window_start
        # Checked after every few answers, one early slow request would fail too many good
        # steps: a single request over the SLA never fails a step on its own, and no count
        # fails it before ``fail_min_s`` (one stall makes several requests in a row late).
        if elapsed >= self.fail_min_s and over >= max(
            2, fail_min_over(rec.resolved + over - rec.over, self.confidence)
        ):
            return Verdict.FAIL
        if elapsed >= self.min_s and rec.resolved >= pass_min_samples(over, self.confidence):
            return Verdict.PASS
        return None


async def run_open_loop(
    target: Target,
    *,
    rate_rps: float,
    duration_s: float,
    arrival: Arrival | str = Arrival.POISSON,
    seed: int = 0,
    sla_ms: float | None = None,
    warmup_s: float = 0.0,
    confidence: float = 0.95,
    stop_when_settled: bool = False,
    settle_min_s: float = 0.0,
    fail_min_s: float = 0.0,
    max_errors: int | None = None,
    max_connections: int | None = None,
    drain_s: float | None = None,
) -> LoadResult:
    """Sends at ``rate_rps`` for ``warmup_s + duration_s`` and measures the last ``duration_s``.

    With ``sla_ms`` the result carries ``over_sla`` and the binomial ``verdict`` (see
    ``_stats``). With ``stop_when_settled`` too, the run ends as soon as that verdict is settled
    (a pass no earlier than ``settle_min_s`` into the window, a failure on the count over the
    SLA no earlier than ``fail_min_s``), or once more than ``max_errors`` errors came back.
    Answers are awaited ``drain_s`` after the last send (default: ``default_drain_s``); those
    still missing count as ``unfinished`` errors. A pass that ended the run is then judged again
    on every request of the window (the late answers of a stall at its end can undo it), so
    that a passing result's own P99 is within the SLA.
    Raises LoadTestError when the target cannot be reached at all.
    """
    if not rate_rps > 0:
        raise ValueError(f"`rate_rps > 0` must hold, but got ({rate_rps=}).")
    if not duration_s > 0:
        raise ValueError(f"`duration_s > 0` must hold, but got ({duration_s=}).")
    if not warmup_s >= 0:
        raise ValueError(f"`warmup_s >= 0` must hold, but got ({warmup_s=}).")
    if sla_ms is not None and not sla_ms > 0:
        raise ValueError(f"`sla_ms > 0` must hold, but got ({sla_ms=}).")
    if stop_when_settled and sla_ms is None:
        raise ValueError("`stop_when_settled` needs `sla_ms`.")
    # Warm-up and window are planned apart, so that the window holds exactly its share.
    warm = arrival_times(
        rate_rps=rate_rps, duration_s=warmup_s, arrival=arrival, seed=seed + 104_729
    )
    window = arrival_times(rate_rps=rate_rps, duration_s=duration_s, arrival=arrival, seed=seed)
    plan = np.concatenate([warm, window + warmup_s])
    first_measured = warm.size
    rule = None
    if stop_when_settled:
        rule = _StopRule(
            confidence=confidence,
            min_s=settle_min_s,
            max_errors=max_errors,
            fail_min_s=fail_min_s,
        )
    rec = Recorder(sla_ms=sla_ms)
    engine = HttpEngine(
        target,
        max_connections=max_connections or default_connections(rate_rps, sla_ms),
        on_done=rec.finish,
    )
    before = (
        await scrape(target.metrics_url, model=target.metrics_model) if target.metrics_url else {}
    )
    await engine.start()
    try:
        t0 = time.perf_counter()
        rec.open_window(first_measured, t0 + warmup_s)
        settled = await _drive(engine, rec, (plan + t0).tolist(), rule)
        window_end = time.perf_counter() if settled is not None else t0 + warmup_s + duration_s
        await rec.drain(default_drain_s(target, sla_ms) if drain_s is None else drain_s)
    finally:
        engine.close()
    after = (
        await scrape(target.metrics_url, model=target.metrics_model) if target.metrics_url else {}
    )
    verdict = settled
    if sla_ms is not None and verdict != Verdict.FAIL:
        # A pass settled early is judged again on every request of its window, the answers that
        # came back after it closed included: a stall at its very end makes those late, and the
        # P99 reported for the step must agree with its verdict.
        verdict = sla_verdict(samples=rec.resolved, over=rec.over, confidence=confidence)
    return rec.result(
        mode=Mode.OPEN,
        offered_rps=rate_rps,
        window_end=window_end,
        sla_ms=sla_ms,
        verdict=verdict,
        stopped_early=settled is not None,
        server=server_means(before, after),
    )


async def _drive(
    engine: HttpEngine, rec: Recorder, plan: list[float], rule: _StopRule | None
) -> Verdict | None:
    """Dispatches the plan on time; returns the verdict that ended it early, if any."""
    perf = time.perf_counter
    sleep = asyncio.sleep
    submit = engine.submit
    add = rec.add
    n = len(plan)
    i = 0
    next_check = plan[0] if n else 0.0
    while i < n:
        now = perf()
        while i < n and plan[i] <= now:
            t_intended = plan[i]
            submit(add(t_intended, now - t_intended), t_intended)
            i += 1
            now = perf()
        if rule is not None and now >= next_check and now >= rec.window_start:
            verdict = rule.check(rec, now)
            if verdict is not None:
                return verdict
            next_check = now + _CHECK_EVERY_S
        if i < n:
            delay = plan[i] - perf()
            await sleep(delay if delay > _MIN_SLEEP_S else _MIN_SLEEP_S)
    return None
