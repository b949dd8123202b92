"""Per-request bookkeeping shared by the open and the closed loop, and the result it gives.

Request ids are positions in send order. Each request stores its intended time, the lag of its
dispatch and its answer time; errors are kept apart by id. Running counters over the measured
window (answered, over the SLA, errors) feed the stop rule without a pass over the data.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import math
import sys
import time

import numpy as np

from autotune.loadgen._result import LoadResult
from autotune.loadgen._stats import summarize

UNFINISHED = "unfinished"


def client_bound_lag_ms(sla_ms: float | None) -> float:
    """Schedule lag p99 above which a step measures the generator rather than the server."""
    return max(2.0, 0.02 * sla_ms) if sla_ms is not None else 2.0


class Recorder:
    def __init__(self, *, sla_ms: float | None) -> None:
        self.sla_s = math.inf if sla_ms is None else sla_ms / 1000.0
        self.intended: list[float] = []
        self.lag: list[float] = []
        self.done: list[float] = []
        self.kinds: dict[int, str] = {}
        self.outstanding: dict[int, None] = {}
        self.first_window = sys.maxsize
        self.window_start = math.inf
        self.resolved = 0
        self.over = 0
        self.errors = 0
        self._waiter: asyncio.Future[None] | None = None

    @property
    def window_open(self) -> bool:
        return self.first_window != sys.maxsize

    def open_window(self, first_rid: int, t_start: float) -> None:
        """Requests from ``first_rid`` on are measured; the window's clock starts at ``t_start``."""
        self.first_window = first_rid
        self.window_start = t_start

    def add(self, t_intended: float, lag_s: float) -> int:
        rid = len(self.intended)
        self.intended.append(t_intended)
        self.lag.append(lag_s)
        self.done.append(math.nan)
        self.outstanding[rid] = None
        return rid

    def finish(self, rid: int, t_done: float, kind: str | None) -> None:
        try:
            del self.outstanding[rid]
        except KeyError:
            return
        self.done[rid] = t_done
        if kind is not None:
            self.kinds[rid] = kind
        if rid >= self.first_window:
            self.resolved += 1
            if kind is not None:
                self.errors += 1
                self.over += 1
            elif t_done - self.intended[rid] > self.sla_s:
                self.over += 1
        if not self.outstanding and self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    def over_in_flight(self, now: float, cap: int) -> int:
        """Measured requests still unanswered and already older than the SLA (at most ``cap``)."""
        cutoff = now - self.sla_s
        count = 0
        for rid in self.outstanding:  # insertion order is send order
            if self.intended[rid] > cutoff:
                break
            if rid >= self.first_window:
                count += 1
                if count >= cap:
                    break
        return count

    async def drain(self, timeout_s: float) -> None:
        """Waits until every request is answered or ``timeout_s`` passed; the rest is unfinished."""
        if self.outstanding and timeout_s > 0:
            self._waiter = asyncio.get_running_loop().create_future()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(timeout_s):
                    await self._waiter
            self._waiter = None
        now = time.perf_counter()
        for rid in list(self.outstanding):
            self.finish(rid, now, UNFINISHED)

    def result(
        self,
        *,
        mode: str,
        offered_rps: float | None,
        window_end: float,
        concurrency: int | None = None,
        sla_ms: float | None = None,
        verdict: str | None = None,
        stopped_early: bool = False,
        server: tuple[float | None, float | None] = (None, None),
    ) -> LoadResult:
        n = len(self.intended)
        first = min(self.first_window, n)
        intended = np.asarray(self.intended, dtype=np.float64)
        done = np.asarray(self.done, dtype=np.float64)
        failed = np.zeros(n, dtype=bool)
        if self.kinds:
            failed[np.fromiter(self.kinds, dtype=np.int64)] = True
        latencies_ms = (done[first:] - intended[first:]) * 1000.0
        latencies_ms[failed[first:] | ~np.isfinite(latencies_ms)] = math.inf
        summary = summarize(latencies_ms)
        by_kind = collections.Counter(k for rid, k in self.kinds.items() if rid >= first)
        duration_s = max(window_end - self.window_start, 0.0) if first < n else 0.0
        ok_in_window = (~failed) & (done >= self.window_start) & (done <= window_end)
        throughput = float(np.count_nonzero(ok_in_window)) / duration_s if duration_s else 0.0
        sent = n - first
        if offered_rps is None:
            offered_rps = sent / duration_s if duration_s else 0.0
        lag_ms = np.asarray(self.lag[first:], dtype=np.float64) * 1000.0
        lag_p99 = float(np.percentile(lag_ms, 99.0)) if lag_ms.size else 0.0
        lag_max = float(lag_ms.max()) if lag_ms.size else 0.0
        over = None
        if sla_ms is not None:
            over = int(np.count_nonzero(~(latencies_ms <= sla_ms)))
        return LoadResult(
            mode=mode,
            offered_rps=float(offered_rps),
            throughput_rps=throughput,
            sent=sent,
            completed=summary.count,
            errors=summary.failed,
            errors_by_kind=dict(sorted(by_kind.items())),
            p50_ms=summary.p50_ms,
            p90_ms=summary.p90_ms,
            p99_ms=summary.p99_ms,
            p999_ms=summary.p999_ms,
            max_ms=summary.max_ms,
            mean_ms=summary.mean_ms,
            duration_s=duration_s,
            schedule_lag_p99_ms=lag_p99,
            schedule_lag_max_ms=lag_max,
            client_bound=lag_p99 > client_bound_lag_ms(sla_ms),
            latencies_ms=latencies_ms,
            warmup_requests=first,
            concurrency=concurrency,
            sla_ms=sla_ms,
            over_sla=over,
            verdict=verdict,
            stopped_early=stopped_early,
            server_latency_ms_mean=server[0],
            server_queue_ms_mean=server[1],
        )
