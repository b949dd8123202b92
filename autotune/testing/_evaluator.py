"""An ``Evaluator`` that looks a configuration up in a landscape instead of deploying it."""

from __future__ import annotations

import hashlib
import math

import numpy as np

from autotune.space import TrialConfig
from autotune.study import TrialResult
from autotune.testing._landscape import Landscape

__all__ = ["TableEvaluator", "noise_factor"]


def noise_factor(config: TrialConfig, *, cv: float, seed: int, repeat: int = 0) -> float:
    """The measurement noise of ``config`` in the replay ``seed``: a lognormal factor with mean 1
    and coefficient of variation ``cv`` (1.0 when ``cv`` is 0). Deterministic per (config, seed,
    repeat), so every search of one seed measures a configuration alike (common random numbers);
    ``repeat`` > 0 draws the noise of a re-measurement (confirmation of the winner)."""
    if cv <= 0:
        return 1.0
    key = f"{seed}|{config.label()}" + (f"|{repeat}" if repeat else "")
    digest = hashlib.blake2b(key.encode(), digest_size=8).digest()
    z = float(np.random.default_rng(int.from_bytes(digest, "little")).standard_normal())
    sigma = math.sqrt(math.log1p(cv * cv))
    return math.exp(sigma * z - sigma * sigma / 2)


class TableEvaluator:
    """An :class:`~autotune.study.Evaluator` that looks the configuration up in the table.

    A configuration the table lacks is a failed deployment (no goodput) and is counted in
    ``missing``; a row over ``sla_ms`` is ``over_sla``. With ``noise_cv`` > 0 the measured
    goodput is the table's times :func:`noise_factor` (the verdict stays the table's).
    """

    def __init__(
        self, landscape: Landscape, *, sla_ms: float, noise_cv: float = 0.0, seed: int = 0
    ) -> None:
        if not noise_cv >= 0:
            raise ValueError(f"`noise_cv >= 0` must hold, but got ({noise_cv=}).")
        self.landscape = landscape
        self.sla_ms = sla_ms
        self.noise_cv = noise_cv
        self.seed = seed
        self.calls = 0
        self.missing: list[TrialConfig] = []

    def evaluate(self, config: TrialConfig) -> TrialResult:
        self.calls += 1
        row = self.landscape.rows.get(config)
        if row is None or math.isnan(row.p99_ms):
            if row is None:
                self.missing.append(config)
            return TrialResult(config=config, verdict="failed", failure="not in the landscape")
        if row.throughput_rps > 0 and row.p99_ms <= self.sla_ms:
            factor = noise_factor(config, cv=self.noise_cv, seed=self.seed)
            return TrialResult(
                config=config,
                verdict="feasible",
                throughput_rps=row.throughput_rps * factor,
                p99_ms=row.p99_ms,
            )
        # A row without goodput holds its P99 at light load: the idle latency the stop rule reads.
        return TrialResult(
            config=config, verdict="over_sla", p99_ms=row.p99_ms, idle_latency_ms=row.p99_ms
        )
