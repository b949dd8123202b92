"""What one trial measured, as plain data: the result an ``Evaluator`` returns, and a stored
trial read back (``TrialRecord``). Both go through the one schema, ``_schema.TRIAL_FIELDS``."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any, Final, Literal, cast

import numpy as np
from optuna.trial import FrozenTrial, TrialState

from autotune.space import TrialConfig
from autotune.study import _schema as A
from autotune.study._constraint import trial_constraint

Verdict = Literal["feasible", "over_sla", "failed"]
_VERDICTS: Final = ("feasible", "over_sla", "failed")
# Stored rounded: wall times to the millisecond.
_ROUNDED: Final = {A.DEPLOY_S: 3, A.MEASURE_S: 3}


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
        """The measured fields of ``TRIAL_FIELDS`` as Optuna user attrs (JSON values)."""
        attrs: dict[str, Any] = {}
        for spec in A.TRIAL_FIELDS:
            if not spec.measured:
                continue
            value = sla_ms if spec.key == A.SLA_MS else getattr(self, spec.key)
            if spec.key == A.CONFIG:
                value = self.config.as_dict()
            elif spec.key in _ROUNDED:
                value = round(value, _ROUNDED[spec.key])
            if value is None:  # no failure: no attr
                continue
            # JSON has no NaN/inf: leave such figures out, so that the dashboard keeps seeing a
            # numeric attr (a None in one trial makes it non-numeric for the whole study).
            if isinstance(value, float) and not math.isfinite(value):
                continue
            attrs[spec.key] = value
        return attrs

    @classmethod
    def from_user_attrs(cls, attrs: Mapping[str, Any]) -> TrialResult:
        """The inverse of ``user_attrs``: a figure left out (NaN) or of the wrong type reads as
        the field's default. ValueError/TypeError when ``attrs`` hold no valid configuration."""
        raw = attrs.get(A.CONFIG)
        if not isinstance(raw, Mapping):
            raise ValueError(f"the trial's user attrs hold no {A.CONFIG!r} mapping")
        verdict = attrs.get(A.VERDICT)
        values: dict[str, Any] = {
            "config": TrialConfig.from_dict(dict(raw)),
            "verdict": verdict if verdict in _VERDICTS else "over_sla",
        }
        names = {f.name for f in fields(cls)}
        for spec in A.TRIAL_FIELDS:
            if not spec.measured or spec.key in (A.CONFIG, A.VERDICT) or spec.key not in names:
                continue
            value = _typed(attrs.get(spec.key), spec.kind)
            if value is not None:
                values[spec.key] = value
        return cls(**values)

    def constraint(self, sla_ms: float) -> float:
        """``p99_ms - sla_ms``, but violated whenever the trial is not feasible: a trial whose
        only passing P99 came with errors (timeouts, 503s) still misses the SLA."""
        value = A.constraint_value(self.p99_ms, sla_ms, ok=self.verdict != "failed")
        if self.verdict == "feasible":
            return min(value, 0.0)
        return value if value > 0 else A.constraint_value(math.nan, sla_ms, ok=False)


def _typed(value: Any, kind: type) -> Any:
    """``value`` as ``kind`` when it is one (ints read as floats), else None."""
    if isinstance(value, bool) and kind is not bool:
        return None
    if kind is float and isinstance(value, int | float):
        return float(value)
    return value if isinstance(value, kind) else None


@dataclass(frozen=True, kw_only=True)
class TrialRecord:
    """A stored trial read back through the schema: what it measured and how it ran.

    ``result`` is None when the trial holds no valid configuration (not measured yet, or not
    written by autotune). ``feasible``: COMPLETE and its SLA constraint is <= 0.
    """

    number: int
    state: TrialState
    value: float | None
    constraint: float | None
    params: Mapping[str, Any]
    result: TrialResult | None
    sla_ms: float | None = None
    baseline: bool = False
    retry_of: int | None = None
    reused_from: int | None = None
    confirmation_of: int | None = None
    host: str | None = None
    pid: int | None = None
    answer_changed: str | None = None

    @classmethod
    def from_frozen(cls, trial: FrozenTrial) -> TrialRecord:
        attrs = trial.user_attrs
        try:
            result: TrialResult | None = TrialResult.from_user_attrs(attrs)
        except (TypeError, ValueError):
            result = None
        return cls(
            number=trial.number,
            state=trial.state,
            value=trial.value if trial.state == TrialState.COMPLETE else None,
            constraint=trial_constraint(trial),
            params=dict(trial.params),
            result=result,
            sla_ms=cast("float | None", _typed(attrs.get(A.SLA_MS), float)),
            baseline=attrs.get(A.BASELINE) is True,
            retry_of=cast("int | None", _typed(attrs.get(A.RETRY_OF), int)),
            reused_from=cast("int | None", _typed(attrs.get(A.REUSED_FROM), int)),
            confirmation_of=cast("int | None", _typed(attrs.get(A.CONFIRMATION_OF), int)),
            host=cast("str | None", _typed(attrs.get(A.HOST), str)),
            pid=cast("int | None", _typed(attrs.get(A.PID), int)),
            answer_changed=cast("str | None", _typed(attrs.get(A.ANSWER_CHANGED), str)),
        )

    @property
    def complete(self) -> bool:
        return self.state == TrialState.COMPLETE

    @property
    def feasible(self) -> bool:
        return self.complete and self.constraint is not None and self.constraint <= 0

    @property
    def config(self) -> TrialConfig | None:
        return self.result.config if self.result is not None else None

    @property
    def label(self) -> str:
        """The configuration's label, or its params when it has no stored configuration."""
        if self.result is not None:
            return self.result.config.label()
        return " ".join(f"{k}={v}" for k, v in self.params.items())
