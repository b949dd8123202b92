"""Percentiles of raw latencies, and the binomial rule that settles "P99 <= SLA".

The rule (a request is *over* when it errored, is still unanswered, or took longer than the SLA;
``t`` requests over among ``n``; confidence ``c``, 0.95 by default):

* PASS once ``n >= n_min(t)``: the smallest ``n`` with ``P(Binomial(n, 0.01) <= t) <= 1 - c``.
  Were the true share over the SLA 1 % (P99 exactly at the SLA), seeing this few over would be
  that unlikely. It is MLPerf's early-stopping rule (d = 0). At c = 0.95:
  t = 0 -> 299, 1 -> 473, 5 -> 1,049, 10 -> 1,693; at c = 0.99: 459, 662, 1,307, 2,010.
* FAIL once ``t >= t_fail(n)``: the smallest ``t`` with ``P(Binomial(n, 0.01) >= t) <= 1 - c``,
  a one-sided exact test that rejects "P99 <= SLA". At c = 0.95: n = 200 -> 6, 500 -> 10,
  1,000 -> 16, 2,000 -> 29. A queue that grows without bound is rejected within a few hundred
  requests, and requests already older than the SLA count before they are answered.
* Otherwise UNDECIDED (the time cap came first).

Checked continuously, each bound is a little looser than its nominal level; latencies near
saturation are correlated, so treat ``n`` as a minimum. The goodput search adds a minimum step
time and accepts an undecided step on its point estimate (see ``_goodput``).
"""

from __future__ import annotations

import enum
import functools
import math
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy.stats import binom

FloatArray = np.ndarray[Any, np.dtype[np.float64]]

QUANTILE = 0.99
"""The SLA is on P99: at most 1 % of requests may be over it."""


class Verdict(enum.StrEnum):
    """Whether one measured step meets "P99 <= SLA"."""

    PASS = "pass"
    FAIL = "fail"
    UNDECIDED = "undecided"


@dataclass(frozen=True, kw_only=True)
class LatencySummary:
    """Percentiles of the successful requests' latencies (ms); NaN when there are none.

    ``failed`` counts the entries left out: non-finite latencies (errors, by convention +inf).
    """

    count: int
    failed: int
    p50_ms: float
    p90_ms: float
    p99_ms: float
    p999_ms: float
    max_ms: float
    mean_ms: float


def summarize(latencies_ms: FloatArray) -> LatencySummary:
    """Exact percentiles (numpy's linear interpolation) of the finite entries of ``latencies_ms``.

    Errors are +inf in the raw latencies: they are counted in ``failed`` and judged by the SLA
    rule, not folded into the percentiles.
    """
    values = np.asarray(latencies_ms, dtype=np.float64)
    ok = values[np.isfinite(values)]
    failed = int(values.size - ok.size)
    if ok.size == 0:
        nan = math.nan
        return LatencySummary(
            count=0, failed=failed, p50_ms=nan, p90_ms=nan, p99_ms=nan, p999_ms=nan,
            max_ms=nan, mean_ms=nan,
        )  # fmt: skip
    p50, p90, p99, p999 = np.percentile(ok, [50.0, 90.0, 99.0, 99.9])
    return LatencySummary(
        count=int(ok.size),
        failed=failed,
        p50_ms=float(p50),
        p90_ms=float(p90),
        p99_ms=float(p99),
        p999_ms=float(p999),
        max_ms=float(ok.max()),
        mean_ms=float(ok.mean()),
    )


@functools.lru_cache(maxsize=4096)
def pass_min_samples(over: int, confidence: float = 0.95) -> int:
    """Smallest sample size at which ``over`` requests over the SLA still prove P99 <= SLA."""
    _check_confidence(confidence)
    alpha = 1.0 - confidence
    p = 1.0 - QUANTILE
    # P(Binomial(n, p) <= over) falls as n grows: double, then bisect on scipy's exact cdf.
    lo, hi = over + 1, max(2 * (over + 1), 64)
    while binom.cdf(over, hi, p) > alpha:
        lo, hi = hi, 2 * hi
    while lo < hi:
        mid = (lo + hi) // 2
        if binom.cdf(over, mid, p) <= alpha:
            hi = mid
        else:
            lo = mid + 1
    return lo


@functools.lru_cache(maxsize=65536)
def fail_min_over(n: int, confidence: float = 0.95) -> int:
    """Smallest count over the SLA among ``n`` that proves P99 > SLA."""
    _check_confidence(confidence)
    if n <= 0:
        return 1
    # The smallest t with P(X >= t) = sf(t - 1) <= alpha: one past scipy's inverse survival.
    return int(binom.isf(1.0 - confidence, n, 1.0 - QUANTILE)) + 1


def sla_verdict(*, samples: int, over: int, confidence: float = 0.95) -> Verdict:
    """The rule of the module docstring on ``over`` of ``samples`` requests."""
    if over >= fail_min_over(samples, confidence) and samples > 0:
        return Verdict.FAIL
    if samples >= pass_min_samples(over, confidence):
        return Verdict.PASS
    return Verdict.UNDECIDED


def p99_within(*, samples: int, over: int) -> bool:
    """Whether the sample's own P99 is within the SLA when ``over`` of ``samples`` are over it.

    Numpy's P99 (linear interpolation) lies between the sorted values at ``floor(h)`` and
    ``ceil(h)``, ``h = 0.99 (n - 1)``: it is within the SLA for certain only when both are, that
    is, when at most ``floor(0.01 (n - 1))`` values are over it (2 of 200 are one too many).
    """
    if samples <= 0:
        return False
    return over <= math.floor((1.0 - QUANTILE) * (samples - 1) + 1e-9)


def _check_confidence(confidence: float) -> None:
    if not 0.5 <= confidence < 1.0:
        raise ValueError(f"`0.5 <= confidence < 1` must hold, but got ({confidence=}).")
