"""The open loop's plan."""

from __future__ import annotations

import numpy as np
import pytest

from autotune.loadgen import Arrival, arrival_times


def test_poisson_plan_has_the_rate_and_exponential_gaps() -> None:
    plan = arrival_times(rate_rps=1000.0, duration_s=20.0, seed=3)
    assert plan.size == pytest.approx(20_000, rel=0.03)
    assert np.all(np.diff(plan) >= 0)
    assert plan.min() >= 0.0
    assert plan.max() < 20.0
    gaps = np.diff(plan)
    assert gaps.mean() == pytest.approx(1e-3, rel=0.03)
    assert gaps.std() == pytest.approx(1e-3, rel=0.05)  # exponential: std = mean


def test_poisson_plan_is_reproducible_by_seed() -> None:
    a = arrival_times(rate_rps=50.0, duration_s=5.0, seed=7)
    b = arrival_times(rate_rps=50.0, duration_s=5.0, seed=7)
    c = arrival_times(rate_rps=50.0, duration_s=5.0, seed=8)
    np.testing.assert_array_equal(a, b)
    assert a.size != c.size or not np.array_equal(a, c)


def test_constant_plan_is_evenly_spaced() -> None:
    plan = arrival_times(rate_rps=4.0, duration_s=2.0, arrival=Arrival.CONSTANT)
    np.testing.assert_allclose(plan, [0.0, 0.25, 0.5, 0.75, 1.0, 1.25, 1.5, 1.75])


def test_bad_values_are_rejected() -> None:
    with pytest.raises(ValueError, match="rate_rps"):
        arrival_times(rate_rps=0.0, duration_s=1.0)
    with pytest.raises(ValueError, match="uniform"):
        arrival_times(rate_rps=1.0, duration_s=1.0, arrival="uniform")
