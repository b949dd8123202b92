"""What one trial measured, as plain data: the result an ``Evaluator`` returns."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from autotune.space import TrialConfig
from autotune.study import _schema as A

Verdict = Literal["feasible", "over_sla", "failed"]


@dataclass(frozen=True, kw_only=True)
class TrialResult:
    """What one trial measured: plain data, units in the names."""

    config: TrialConfig
    verdict: Verdict
    throughput_rps: float = 0.0
    offered_rps: float = 0.0
    p50_ms: float = math.nan
    p90_ms: float = math.nan
    p99_ms: float = math.nan
    p999_ms: float = math.nan
    mean_ms: float = math.nan
    max_ms: float = math.nan
    idle_latency_ms: float = math.nan
    requests: int = 0
    errors: int = 0
    errors_total: int = 0
    failure: str | None = None
    deploy_s: float = 0.0
    measure_s: float = 0.0
    latencies_ms: np.ndarray[Any, np.dtype[np.float64]] | None = field(default=None, repr=False)

    def user_attrs(self, sla_ms: float) -> dict[str, Any]:
        attrs: dict[str, Any] = {
            A.CONFIG: self.config.as_dict(),
            A.VERDICT: self.verdict,
            A.THROUGHPUT_RPS: self.throughput_rps,
            A.OFFERED_RPS: self.offered_rps,
            A.P50_MS: self.p50_ms,
            A.P90_MS: self.p90_ms,
            A.P99_MS: self.p99_ms,
            A.P999_MS: self.p999_ms,
            A.MEAN_MS: self.mean_ms,
            A.MAX_MS: self.max_ms,
            A.IDLE_LATENCY_MS: self.idle_latency_ms,
            A.REQUESTS: self.requests,
            A.ERRORS: self.errors,
            A.ERRORS_TOTAL: self.errors_total,
            A.SLA_MS: sla_ms,
            A.DEPLOY_S: round(self.deploy_s, 3),
            A.MEASURE_S: round(self.measure_s, 3),
        }
        if self.failure:
            attrs[A.FAILURE] = self.failure
        # JSON has no NaN/inf: leave such figures out, so that the dashboard keeps seeing a
        # numeric attr (a None in one trial makes it non-numeric for the whole study).
        return {
            k: v for k, v in attrs.items() if not (isinstance(v, float) and not math.isfinite(v))
        }

    def constraint(self, sla_ms: float) -> float:
        """``p99_ms - sla_ms``, but violated whenever the trial is not feasible: a trial whose
        only passing P99 came with errors (timeouts, 503s) still misses the SLA."""
        value = A.constraint_value(self.p99_ms, sla_ms, ok=self.verdict != "failed")
        if self.verdict == "feasible":
            return min(value, 0.0)
        return value if value > 0 else A.constraint_value(math.nan, sla_ms, ok=False)
