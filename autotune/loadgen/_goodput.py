"""Goodput: the highest offered rate a server answers with P99 <= SLA and no errors.

The search, for one configuration (13-30 s for a server of 20-400 req/s):

1. **Idle probe.** ``warmup_requests`` sequential requests (not measured), then up to
   ``idle_probe_requests`` more, one at a time, ending as soon as a majority of them is over
   the SLA (or when the time budget ends with every answer over it): even an idle server is too
   slow, and the verdict is ``over_sla_idle`` after a handful of requests (a 1.5 s Mask R-CNN
   against a 100 ms SLA is ruled out in about 6 s).
   Any error ends the search with ``errors``.
   *Batching servers* wait up to their batch delay for a batch to fill, so they can be slower
   idle than loaded. When the idle latency is within twice the SLA, ``burst_probe_requests``
   requests are sent at once; if any of them is answered within the SLA the search goes on.
2. **Capacity probe.** ``capacity_concurrency`` closed-loop clients for ``capacity_probe_s``:
   their throughput estimates the capacity, and they warm the server under load.
3. **Bracketing, then bisection** on the open-loop (Poisson) rate. The first step offers the
   capacity times the load at which a one-server queue with constant service time (M/D/1) has
   its P99 at the SLA, ``rho = (x / 2.3) / (1 + x / 2.3)`` with ``x = SLA / idle latency - 1``,
   clamped to 10-90 % (or ``start_fraction`` when set). While steps pass the rate grows by a
   factor, while they fail it shrinks by it; the factor starts at ``1 + 2 * rel_precision`` and
   squares at every move in the same direction. Once a pass and a failure bracket the goodput,
   the rate bisects until they are within ``rel_precision``, ``max_steps`` steps ran, or the
   next step would end after ``time_budget_s``.
4. **Verification** (opt in: ``verify_s`` > 0, e.g. 6). The goodput rests on a window of at
   least ``verify_s`` that passed with no early pass (MLPerf's minimum duration,
   perf_analyzer's stable windows): near capacity a server with stalls every second or two
   passes a 2 s window by luck. Off by default: on the quick model it made the answer less
   repeatable, not more (max/min 1.54 with it, 1.19 without, quiet host, 2026-12-02), since a
   6 s window at those rates still passes or fails by its stalls, and each failure stepped the
   answer 10 % down. Unless its own window lasted that long (a slow server's
   steps do), the best passing rate is measured again for that long; a
   failure rejects it and the next candidate is the highest rate that passed below it, at most
   ``1 + 2 * rel_precision`` below (that rate itself when none passed there), verified the same
   way while the time budget lasts (see ``_Search._verify``).

Each step is an open loop of ``step_warmup_s`` unjudged (opt in; every step starts on an idle
server: the window is then judged once the rate has been carried for a moment; 0.5 s did not
change the spread on the quick model and cost 4 s a search), then a window of at most
``step_max_s`` (longer, up to ``step_long_s``, at a rate too
low to give the 299 requests a pass needs in that time) that ends as soon as its verdict is
settled by the binomial rule of ``_stats`` (a request is over when it is slower than the SLA,
errored, or already older than the SLA while unanswered): FAIL as soon as the count over the
SLA rejects "P99 <= SLA" at ``confidence`` (never on one request alone), or once the errors
exceed ``max_error_ratio`` of the planned requests (any error, by default); PASS once the sample
is large enough for that count, and no earlier than ``step_min_s``. A failure on the count
over the SLA waits for ``fail_min_s`` (2 s) of window as well: one stall of a shared core makes
several requests in a row late, and 2 of the first 15 requests used to fail a step that passed
when run for its full window (errors still end a step at once; figures with and without it:
the README's "Repeatability").

*A failure is confirmed before the search shrinks* (``confirm_failures``): a failed step is run
again at the same rate, with other arrivals, and only a second failure lowers the rate; a pass
of the repeat counts as the rate's verdict. A stall of the shared cores or a garbage collection
fails one step, not the configuration (it is what collapsed searches to a few req/s).

*A step that reaches its time cap undecided* counts as passing only on a sample of at least
``undecided_min_samples`` requests whose own P99 is within the SLA (``_stats.p99_within``:
at most ``floor(0.01 (n - 1))`` of them over it) and its errors within the allowance; it stays
reported as undecided:
``GoodputResult.decided`` is False and ``samples`` says how many requests the verdict rests on.
With fewer requests it does not pass. The goodput is the offered rate of the verified step (of
the passing step of highest rate without verification): the arrival rate the server answered
in full within the SLA, not the step's ``throughput_rps``, which loses the answers still in
flight when a window closes early.

Answers are awaited up to ``drain_max_s`` after each run so that the next one starts on an
empty server queue.
"""

from __future__ import annotations

import itertools
import math
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from autotune.loadgen._closed_loop import closed_loop
from autotune.loadgen._open_loop import run_open_loop
from autotune.loadgen._recorder import Recorder
from autotune.loadgen._result import GoodputResult, GoodputVerdict, LoadResult
from autotune.loadgen._stats import Verdict, p99_within, pass_min_samples
from autotune.loadgen._target import Arrival, Target

_MIN_START, _MAX_START = 0.1, 0.9


@dataclass(frozen=True, kw_only=True)
class GoodputSettings:
    """How ``find_goodput`` searches (see the module docstring); defaults fit 20-100 req/s.

    ``step_min_s`` (no pass before it) is capped at ``step_max_s``, so that setting the time cap
    alone is enough; ``step_long_s`` (the cap of a step at a low rate) defaults to three times
    ``step_max_s``.
    """

    warmup_requests: int = 1
    idle_probe_requests: int = 5
    burst_probe_requests: int = 8
    capacity_probe_s: float = 2.0
    capacity_concurrency: int = 32
    start_fraction: float | None = None
    step_min_s: float = 2.0
    fail_min_s: float = 2.0
    step_max_s: float = 8.0
    step_long_s: float | None = None
    step_warmup_s: float = 0.0
    confirm_failures: bool = True
    undecided_min_samples: int = 200
    max_steps: int = 8
    rel_precision: float = 0.05
    verify_s: float = 0.0
    confidence: float = 0.95
    max_error_ratio: float = 0.0
    arrival: Arrival = Arrival.POISSON
    seed: int = 0
    drain_max_s: float = 5.0
    time_budget_s: float = 45.0
    max_connections: int | None = None

    def __post_init__(self) -> None:
        for name in ("capacity_probe_s", "step_max_s", "rel_precision", "time_budget_s"):
            value = getattr(self, name)
            if not value > 0:
                raise ValueError(f"`{name} > 0` must hold, but got ({name}={value}).")
        for name in ("idle_probe_requests", "capacity_concurrency", "max_steps"):
            value = getattr(self, name)
            if value < 1:
                raise ValueError(f"`{name} >= 1` must hold, but got ({name}={value}).")
        if self.step_long_s is not None and not self.step_long_s >= self.step_max_s:
            raise ValueError(
                f"`step_long_s >= step_max_s` must hold, but got ({self.step_long_s=}, "
                f"{self.step_max_s=})."
            )
        for name in ("warmup_requests", "burst_probe_requests", "undecided_min_samples"):
            value = getattr(self, name)
            if value < 0:
                raise ValueError(f"`{name} >= 0` must hold, but got ({name}={value}).")
        if self.start_fraction is not None and not 0 < self.start_fraction <= 1:
            raise ValueError(
                f"`0 < start_fraction <= 1` must hold, but got ({self.start_fraction=})."
            )
        for name in ("step_min_s", "fail_min_s"):
            value = getattr(self, name)
            if not value >= 0:
                raise ValueError(f"`{name} >= 0` must hold, but got ({name}={value}).")
        if not 0.5 <= self.confidence < 1:
            raise ValueError(f"`0.5 <= confidence < 1` must hold, but got ({self.confidence=}).")
        if not 0 <= self.max_error_ratio < 1:
            raise ValueError(
                f"`0 <= max_error_ratio < 1` must hold, but got ({self.max_error_ratio=})."
            )
        if not self.verify_s >= 0:
            raise ValueError(f"`verify_s >= 0` must hold, but got ({self.verify_s=}).")
        if not self.step_warmup_s >= 0:
            raise ValueError(f"`step_warmup_s >= 0` must hold, but got ({self.step_warmup_s=}).")
        if not self.drain_max_s >= 0:
            raise ValueError(f"`drain_max_s >= 0` must hold, but got ({self.drain_max_s=}).")
        object.__setattr__(self, "arrival", Arrival.parse(self.arrival))


def slow_model_settings() -> GoodputSettings:
    """Settings for a model that answers about 0.3-1 request a second (a detector on a small
    CPU): the defaults fit 20-100 req/s and cannot judge such a model. 8 capacity-probe clients
    instead of 32 (32 leave a queue of 30 s and more), answers awaited until the queue is empty
    (up to 60 s, not 5 s), steps up to 30 s (60 s at a low rate), and a step undecided at its
    cap passes on 15 answers with none over the SLA instead of 200: at 1 req/s a step cannot
    gather the 299 answers a decided pass needs. Its P99 is then that of a small sample (the
    verdict says undecided, with the sample size). Measured on the Detectron2 and torchvision
    detectors at 320 px (``benchmarks/detector_backends.py --tune``)."""
    return GoodputSettings(
        warmup_requests=2,
        capacity_concurrency=8,
        drain_max_s=60.0,
        step_max_s=30.0,
        step_long_s=60.0,
        undecided_min_samples=15,
        rel_precision=0.2,
        time_budget_s=240.0,
    )


def step_passes(step: LoadResult, *, max_errors: int, min_samples: int = 200) -> bool:
    """Whether a search step counts as passing (see the module docstring): PASS, or undecided
    on at least ``min_samples`` requests whose own P99 is within the SLA."""
    if step.errors > max_errors:
        return False
    if step.verdict == Verdict.PASS:
        return True
    if step.verdict == Verdict.UNDECIDED:
        over = step.over_sla if step.over_sla is not None else 0
        return step.sent >= max(1, min_samples) and p99_within(samples=step.sent, over=over)
    return False


def step_duration_s(rate_rps: float, settings: GoodputSettings) -> float:
    """The time cap of a step at ``rate_rps``: ``step_max_s``, or longer (up to ``step_long_s``)
    when that is too short for the requests a pass needs with none over the SLA."""
    needed_s = 1.1 * pass_min_samples(0, settings.confidence) / max(rate_rps, 1e-9)
    long_s = settings.step_long_s if settings.step_long_s is not None else 3 * settings.step_max_s
    return min(max(settings.step_max_s, needed_s), long_s)


def start_fraction(*, idle_ms: float, sla_ms: float) -> float:
    """Load at which an M/D/1 queue's P99 reaches the SLA, clamped to 10-90 %."""
    if not idle_ms > 0:
        return _MAX_START
    x = max(sla_ms / idle_ms - 1.0, 0.0) / 2.3
    return min(_MAX_START, max(_MIN_START, x / (1.0 + x)))


async def find_goodput(
    target: Target,
    *,
    sla_ms: float,
    settings: GoodputSettings = GoodputSettings(),
    on_step: Callable[[LoadResult], None] | None = None,
) -> GoodputResult:
    """Runs the search of the module docstring; ``on_step`` sees every probe and step as it ends.

    Raises LoadTestError when the target cannot be reached at all.
    """
    if not sla_ms > 0:
        raise ValueError(f"`sla_ms > 0` must hold, but got ({sla_ms=}).")
    search = _Search(target, sla_ms=sla_ms, settings=settings, on_step=on_step)
    return await search.run()


class _Search:
    def __init__(
        self,
        target: Target,
        *,
        sla_ms: float,
        settings: GoodputSettings,
        on_step: Callable[[LoadResult], None] | None,
    ) -> None:
        self.target = target
        self.sla_ms = sla_ms
        self.s = settings
        self.on_step = on_step
        self.started = time.perf_counter()
        self.drain_s = min(target.timeout_s, settings.drain_max_s)
        self.runs: list[LoadResult] = []
        self.idle_ms = math.nan

    def _record(self, result: LoadResult) -> LoadResult:
        self.runs.append(result)
        if self.on_step is not None:
            self.on_step(result)
        return result

    def _done(
        self,
        verdict: GoodputVerdict,
        *,
        steps: tuple[LoadResult, ...] = (),
        best: LoadResult | None = None,
        capacity_rps: float = math.nan,
        capacity_probe: LoadResult | None = None,
        burst_probe: LoadResult | None = None,
    ) -> GoodputResult:
        return GoodputResult(
            sla_ms=self.sla_ms,
            goodput_rps=best.offered_rps if best is not None else 0.0,
            best=best,
            steps=steps,
            verdict=verdict,
            idle_latency_ms=self.idle_ms,
            requests=sum(run.requests for run in self.runs),
            capacity_rps=capacity_rps,
            idle_probe=self.runs[0] if self.runs else None,
            capacity_probe=capacity_probe,
            burst_probe=burst_probe,
            elapsed_s=time.perf_counter() - self.started,
        )

    async def run(self) -> GoodputResult:
        s, sla_ms = self.s, self.sla_ms
        majority = s.idle_probe_requests // 2 + 1

        def idle_settled(rec: Recorder) -> bool:
            return rec.errors > 0 or rec.over >= majority

        idle = self._record(
            await closed_loop(
                self.target,
                concurrency=1,
                duration_s=s.time_budget_s,
                warmup_requests=s.warmup_requests,
                sla_ms=sla_ms,
                max_requests=s.idle_probe_requests,
                stop=idle_settled,
                drain_s=self.drain_s,
            )
        )
        finite = idle.latencies_ms[np.isfinite(idle.latencies_ms)]
        # A request still unanswered when the probe's time budget ends is slow, not broken.
        unfinished = int(idle.errors_by_kind.get("unfinished", 0))
        if idle.errors - unfinished > 0 or not (finite.size or unfinished):
            self.idle_ms = float(np.median(finite)) if finite.size else math.nan
            return self._done(GoodputVerdict.ERRORS)
        # With no answer at all, the budget it waited is a lower bound of the idle latency.
        self.idle_ms = float(np.median(finite)) if finite.size else 1000.0 * s.time_budget_s
        burst = None
        # The probe can also end on its time budget (a server taking seconds per request):
        # then every answer it got being over the SLA is the verdict.
        cut_short = (unfinished > 0 or idle.sent < s.idle_probe_requests) and bool(
            np.all(finite > sla_ms)
        )
        if (idle.over_sla or 0) >= majority or cut_short:
            if not (s.burst_probe_requests and self.idle_ms <= 2.0 * sla_ms):
                return self._done(GoodputVerdict.OVER_SLA_IDLE)
            burst = self._record(
                await closed_loop(
                    self.target,
                    concurrency=s.burst_probe_requests,
                    duration_s=s.time_budget_s,
                    sla_ms=sla_ms,
                    max_requests=s.burst_probe_requests,
                    drain_s=self.drain_s,
                )
            )
            if not np.any(burst.latencies_ms <= sla_ms):
                return self._done(GoodputVerdict.OVER_SLA_IDLE, burst_probe=burst)

        probe = self._record(
            await closed_loop(
                self.target,
                concurrency=s.capacity_concurrency,
                duration_s=s.capacity_probe_s,
                sla_ms=sla_ms,
                drain_s=self.drain_s,
            )
        )
        # One request at a time is a floor: the probe cannot be below it on a sane server.
        capacity = max(probe.throughput_rps, 1000.0 / self.idle_ms if self.idle_ms > 0 else 0.0)
        fraction = s.start_fraction
        if fraction is None:
            fraction = start_fraction(idle_ms=self.idle_ms, sla_ms=sla_ms)
        steps, best, errors_at_lowest = await self._bracket(fraction * capacity)
        if best is not None and s.verify_s > 0 and best.duration_s < s.verify_s:
            best = await self._verify(best, steps)  # a shorter window passed it
        if best is not None:
            verdict = GoodputVerdict.FEASIBLE
        elif errors_at_lowest:
            verdict = GoodputVerdict.ERRORS
        else:
            verdict = GoodputVerdict.OVER_SLA
        return self._done(
            verdict,
            steps=tuple(steps),
            best=best,
            capacity_rps=capacity,
            capacity_probe=probe,
            burst_probe=burst,
        )

    async def _bracket(self, rate: float) -> tuple[list[LoadResult], LoadResult | None, bool]:
        """The steps run, the best passing one, and whether the gentlest failed on errors."""
        s = self.s
        steps: list[LoadResult] = []
        best: LoadResult | None = None
        lo, hi = 0.0, math.inf
        base = 1.0 + 2.0 * s.rel_precision
        factor, last_move = base, 0
        errors_at_lowest = False
        for k in range(s.max_steps):
            duration_s = step_duration_s(rate, s)
            # Leave room for one verification window (and its warm-up) after this step.
            reserve_s = s.verify_s + s.step_warmup_s if s.verify_s > 0 else 0.0
            if steps and not self._fits(duration_s + reserve_s):
                break
            max_errors = math.floor(s.max_error_ratio * rate * duration_s)
            step = await self._step(rate, duration_s, seed=s.seed + k, max_errors=max_errors)
            steps.append(step)
            passed = step_passes(step, max_errors=max_errors, min_samples=s.undecided_min_samples)
            if not passed and s.confirm_failures and self._fits(duration_s):
                # Confirm the failure before shrinking: a stall fails one step, not the rate.
                again = await self._step(
                    rate, duration_s, seed=s.seed + 1000 + k, max_errors=max_errors
                )
                steps.append(again)
                if step_passes(again, max_errors=max_errors, min_samples=s.undecided_min_samples):
                    passed, step = True, again
            if passed:
                lo, best = rate, step
            else:
                hi = rate
                if rate <= min(st.offered_rps for st in steps):
                    errors_at_lowest = step.errors > max_errors
            if lo > 0 and not math.isinf(hi):
                if hi - lo <= s.rel_precision * hi:
                    break
                rate = (lo + hi) / 2.0
                continue
            move = 1 if passed else -1
            factor = factor * factor if move == last_move else base
            last_move = move
            rate = rate * factor if passed else rate / factor
        return steps, best, errors_at_lowest

    def _passes(self, step: LoadResult) -> bool:
        s = self.s
        max_errors = math.floor(s.max_error_ratio * step.offered_rps * step.duration_s)
        return step_passes(step, max_errors=max_errors, min_samples=s.undecided_min_samples)

    def _fits(self, duration_s: float) -> bool:
        elapsed = time.perf_counter() - self.started
        return elapsed + self.s.step_warmup_s + duration_s <= self.s.time_budget_s

    async def _verify(self, best: LoadResult, steps: list[LoadResult]) -> LoadResult | None:
        """The goodput rests on a window of at least ``verify_s`` that passed: the best passing
        rate is measured again for that long (no pass before its end), unless a window that
        long passed at that rate already. A failure rejects the
        rate, and the next candidate is the highest rate that passed below it, but no lower
        than ``1 + 2 * rel_precision`` times below it (that rate itself when none passed there);
        it is verified the same way, while the time budget lasts. When it ends before a
        verified pass, the highest passing step below every rejected rate stands (None: no rate
        passed)."""
        s = self.s
        rate, rejected = best.offered_rps, math.inf
        for k in itertools.count():
            done = [
                st
                for st in steps
                if st.offered_rps == rate and st.duration_s >= s.verify_s and self._passes(st)
            ]
            if done:  # a window that long passed at this rate already
                return done[-1]
            duration_s = self._verify_duration_s(rate)
            if not self._fits(duration_s):
                break
            check = await self._step(
                rate,
                duration_s,
                seed=s.seed + 2000 + k,
                max_errors=math.floor(s.max_error_ratio * rate * duration_s),
                settle_min_s=s.verify_s,
            )
            steps.append(check)
            if self._passes(check):
                return check
            rejected = rate
            floor = rate / (1.0 + 2.0 * s.rel_precision)
            near = [
                st.offered_rps
                for st in steps
                if floor <= st.offered_rps < rate and self._passes(st)
            ]
            rate = max(near, default=floor)
        return self._highest_pass_below(steps, rejected)

    def _verify_duration_s(self, rate: float) -> float:
        return max(self.s.verify_s, step_duration_s(rate, self.s)) if self.s.verify_s > 0 else 0.0

    def _highest_pass_below(self, steps: list[LoadResult], rate: float) -> LoadResult | None:
        passed = [st for st in steps if st.offered_rps < rate and self._passes(st)]
        return max(passed, key=lambda st: st.offered_rps) if passed else None

    async def _step(
        self,
        rate: float,
        duration_s: float,
        *,
        seed: int,
        max_errors: int,
        settle_min_s: float | None = None,
    ) -> LoadResult:
        s = self.s
        return self._record(
            await run_open_loop(
                self.target,
                rate_rps=rate,
                duration_s=duration_s,
                warmup_s=s.step_warmup_s,
                arrival=s.arrival,
                seed=seed,
                sla_ms=self.sla_ms,
                confidence=s.confidence,
                stop_when_settled=True,
                settle_min_s=min(
                    s.step_min_s if settle_min_s is None else settle_min_s, duration_s
                ),
                fail_min_s=min(s.fail_min_s, duration_s),
                max_errors=max_errors,
                max_connections=s.max_connections,
                drain_s=self.drain_s,
            )
        )
