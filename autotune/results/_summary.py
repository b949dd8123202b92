"""The answer of a study as plain data: the best feasible trial, or why there is none."""

from __future__ import annotations

import math
from dataclasses import dataclass

import optuna
from optuna.trial import FrozenTrial, TrialState

from autotune.space import TrialConfig
from autotune.study import best_feasible
from autotune.study import schema as A


@dataclass(frozen=True, kw_only=True)
class TrialLine:
    number: int
    config: TrialConfig
    throughput_rps: float
    p99_ms: float
    feasible: bool
    verdict: str
    failure: str | None
    baseline: bool


@dataclass(frozen=True, kw_only=True)
class StudySummary:
    sla_ms: float
    trials: tuple[TrialLine, ...]
    best: TrialLine | None
    baseline: TrialLine | None
    fastest: TrialLine | None  # lowest P99 of all trials, feasible or not

    @property
    def speedup(self) -> float | None:
        if self.best is None or self.baseline is None or self.baseline.throughput_rps <= 0:
            return None
        return self.best.throughput_rps / self.baseline.throughput_rps

    @property
    def reachable_sla_ms(self) -> float | None:
        """A round SLA the fastest configuration could meet (its P99, rounded up)."""
        if self.fastest is None or not math.isfinite(self.fastest.p99_ms):
            return None
        p99 = self.fastest.p99_ms * 1.05
        step = 10 ** max(0, math.floor(math.log10(p99)) - 1)
        return float(math.ceil(p99 / step) * step)


def _line(trial: FrozenTrial, best_number: int | None) -> TrialLine | None:
    raw = trial.user_attrs.get(A.CONFIG)
    if not isinstance(raw, dict):
        return None
    p99 = trial.user_attrs.get(A.P99_MS)
    constraint = list(trial.constraints.values())
    return TrialLine(
        number=trial.number,
        config=TrialConfig.from_dict(raw),
        throughput_rps=float(trial.value or 0.0),
        p99_ms=float(p99) if isinstance(p99, int | float) else math.nan,
        feasible=bool(constraint) and max(constraint) <= 0,
        verdict=str(trial.user_attrs.get(A.VERDICT, "")),
        failure=trial.user_attrs.get(A.FAILURE),
        baseline=bool(trial.user_attrs.get(A.BASELINE)),
    )


def summarize(study: optuna.Study) -> StudySummary:
    sla_ms = float(study.user_attrs.get(A.STUDY_SLA_MS, math.nan))
    best_trial = best_feasible(study)
    lines = [
        line
        for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
        if (line := _line(t, best_trial.number if best_trial else None)) is not None
    ]
    best = next((x for x in lines if best_trial and x.number == best_trial.number), None)
    baseline = next((x for x in lines if x.baseline), None)
    measured = [x for x in lines if math.isfinite(x.p99_ms) and x.verdict != "failed"]
    fastest = min(measured, key=lambda x: x.p99_ms) if measured else None
    return StudySummary(
        sla_ms=sla_ms,
        trials=tuple(sorted(lines, key=lambda x: (-x.throughput_rps, x.p99_ms))),
        best=best,
        baseline=baseline,
        fastest=fastest,
    )
