"""Percentiles and the binomial SLA rule, against the published tables."""

from __future__ import annotations

import math

import numpy as np
import pytest

from autotune.loadgen import (
    Verdict,
    _stats,
    fail_min_over,
    pass_min_samples,
    sla_verdict,
    summarize,
)


@pytest.mark.parametrize(
    ("over", "confidence", "expected"),
    [
        (0, 0.95, 299),
        (1, 0.95, 473),
        (5, 0.95, 1049),
        (10, 0.95, 1693),
        (50, 0.95, 6323),
        (0, 0.99, 459),
        (1, 0.99, 662),
        (10, 0.99, 2010),
    ],
)
def test_pass_min_samples_matches_mlperf_early_stopping(
    over: int, confidence: float, expected: int
) -> None:
    assert pass_min_samples(over, confidence) == expected


@pytest.mark.parametrize(
    ("n", "confidence", "expected"),
    [(200, 0.95, 6), (500, 0.95, 10), (1000, 0.95, 16), (2000, 0.95, 29), (10_000, 0.95, 118),
     (500, 0.99, 12), (1000, 0.99, 19)],
)  # fmt: skip
def test_fail_min_over_is_the_one_sided_binomial_bound(
    n: int, confidence: float, expected: int
) -> None:
    assert fail_min_over(n, confidence) == expected


def test_sla_verdict() -> None:
    assert sla_verdict(samples=299, over=0) == Verdict.PASS
    assert sla_verdict(samples=298, over=0) == Verdict.UNDECIDED
    assert sla_verdict(samples=500, over=10) == Verdict.FAIL
    assert sla_verdict(samples=500, over=5) == Verdict.UNDECIDED
    assert sla_verdict(samples=0, over=0) == Verdict.UNDECIDED


def test_confidence_is_validated() -> None:
    with pytest.raises(ValueError, match="confidence"):
        pass_min_samples(0, 1.0)


def test_summarize_uses_numpy_percentiles_of_the_successes() -> None:
    rng = np.random.default_rng(0)
    ok = rng.exponential(20.0, size=10_000)
    latencies = np.concatenate([ok, [math.inf] * 7])
    summary = summarize(latencies)
    assert summary.count == 10_000
    assert summary.failed == 7
    assert summary.p50_ms == pytest.approx(np.percentile(ok, 50))
    assert summary.p99_ms == pytest.approx(np.percentile(ok, 99))
    assert summary.p999_ms == pytest.approx(np.percentile(ok, 99.9))
    assert summary.max_ms == pytest.approx(ok.max())
    assert summary.mean_ms == pytest.approx(ok.mean())


def test_summarize_without_successes_gives_nan() -> None:
    summary = summarize(np.array([math.inf, math.inf]))
    assert summary.count == 0
    assert summary.failed == 2
    assert math.isnan(summary.p99_ms)


@pytest.mark.parametrize("samples", [1, 99, 100, 101, 199, 200, 201, 250, 1000])
def test_p99_within_agrees_with_numpys_p99(samples: int) -> None:
    # SLA 100 ms: `over` requests far over it, the rest at 50 ms; numpy's P99 of that sample is
    # within the SLA, however far over the others are, exactly when p99_within says so.
    for over in range(0, min(samples, 15) + 1):
        latencies = np.array([50.0] * (samples - over) + [1e12] * over)
        within = float(np.percentile(latencies, 99)) <= 100.0
        assert _stats.p99_within(samples=samples, over=over) is within, (samples, over)
    assert not _stats.p99_within(samples=0, over=0)
