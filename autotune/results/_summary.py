"""The answer of a study as plain data, computed once: every reader of a study renders this.

``summarize(study)`` reads every trial once through the schema (``TrialRecord``) and decides:

* **the best**: Optuna's ``study.best_trial`` (feasible trials only). When the study holds
  confirmation trials (user attr ``confirmation_of``), the winner is instead
  ``autotune.study.confirmed_winner``: the confirmed configuration with the highest geometric
  mean of the goodputs of all its measurements; None when no confirmed configuration kept a
  goodput above 0 in every repeat. The figure shown for a confirmed configuration is its
  *confirmed figure*, the lowest goodput of all its measurements.
* **the ranking** (the one order of every table): the best first; then, in a confirmed study,
  the other confirmed configurations in the winner's order (geometric mean); then feasible
  before infeasible, by goodput from high to low, then P99 from low to high, then trial
  number. Confirmation trials are not lines of their own: their figures are folded into the
  search trial they repeat (``TrialLine.replicates``).
* **the baseline** (the TorchServe-default trial), **the speed-up** of the best over it,
  and **the fastest P99** of the measured trials (with the round SLA it could meet).

It feeds the run's verdict and table, the report's Markdown, the dashboard note and the
export's "no feasible trial" error.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field

import optuna
from optuna.trial import TrialState

from autotune.space import TrialConfig
from autotune.study import Replicates, TrialRecord, best_feasible, confirmed_winner, replicates
from autotune.study import schema as A


@dataclass(frozen=True, kw_only=True)
class TrialLine:
    """One search trial of a study, as the tables and the summary show it."""

    number: int
    state: str  # the TrialState name
    label: str
    config: TrialConfig | None
    device: str
    throughput_rps: float  # the objective (goodput); NaN while not COMPLETE
    p99_ms: float
    errors: int | None
    feasible: bool
    verdict: str
    failure: str | None
    baseline: bool
    reused_from: int | None = None
    replicates: Replicates | None = None  # every measurement, when it was confirmed
    answer_changed: str | None = None  # its answers differed from the reference: how

    @property
    def complete(self) -> bool:
        return self.state == TrialState.COMPLETE.name

    @property
    def confirmed_rps(self) -> float | None:
        """The confirmed figure (the lowest goodput of its measurements), when confirmed."""
        return self.replicates.confirmed_rps if self.replicates is not None else None

    @property
    def figure_rps(self) -> float:
        """The figure this trial is judged by: the confirmed one, else its own goodput."""
        confirmed = self.confirmed_rps
        return confirmed if confirmed is not None else self.throughput_rps


@dataclass(frozen=True, kw_only=True)
class StudySummary:
    study_name: str
    model: str | None
    sla_ms: float | None
    trials: tuple[TrialLine, ...]  # search trials, every state, in the ranking order
    best: TrialLine | None
    baseline: TrialLine | None
    fastest: TrialLine | None  # lowest P99 of the measured trials, feasible or not
    confirmation_trials: int = 0
    confirmations: Mapping[int, Replicates] = field(default_factory=dict)

    @property
    def confirmed(self) -> bool:
        """Whether the study holds confirmation trials (then the best is the confirmed one)."""
        return bool(self.confirmations)

    @property
    def complete(self) -> int:
        return sum(1 for line in self.trials if line.complete)

    @property
    def feasible(self) -> int:
        return sum(1 for line in self.trials if line.feasible)

    @property
    def speedup(self) -> float | None:
        """The best's figure over the baseline's; None without either or when the baseline's is
        not positive."""
        if self.best is None or self.baseline is None:
            return None
        base = self.baseline.figure_rps
        if not (math.isfinite(base) and base > 0):
            return None
        return self.best.figure_rps / base

    @property
    def reachable_sla_ms(self) -> float | None:
        """A round SLA the fastest configuration could meet (its P99, rounded up)."""
        if self.fastest is None or not math.isfinite(self.fastest.p99_ms):
            return None
        p99 = self.fastest.p99_ms * 1.05
        step = 10 ** max(0, math.floor(math.log10(p99)) - 1)
        return float(math.ceil(p99 / step) * step)

    def qualifies(self, line: TrialLine) -> bool:
        """Whether a line could be a best: feasible, and in a confirmed study confirmed above 0."""
        if not line.feasible:
            return False
        return not self.confirmed or (line.confirmed_rps or 0.0) > 0


def _line(record: TrialRecord, reps: Replicates | None) -> TrialLine:
    result = record.result
    if record.complete:
        value = record.value
        throughput = float(value) if value is not None else math.nan
        if value is None and result is not None:
            throughput = result.throughput_rps
    else:
        throughput = math.nan
    config = record.config
    device = config.device if config is not None else str(record.params.get("device", "cpu"))
    return TrialLine(
        number=record.number,
        state=record.state.name,
        label=record.label,
        config=config,
        device=device,
        throughput_rps=throughput,
        p99_ms=result.p99_ms if result is not None else math.nan,
        errors=result.errors if result is not None else None,
        feasible=record.feasible,
        verdict=result.verdict if result is not None else "",
        failure=result.failure if result is not None else None,
        baseline=record.baseline,
        reused_from=record.reused_from,
        replicates=reps,
        answer_changed=record.answer_changed,
    )


def _sla_of(study: optuna.Study, records: list[TrialRecord]) -> float | None:
    value = study.user_attrs.get(A.STUDY_SLA_MS)
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    return next((r.sla_ms for r in records if r.sla_ms is not None), None)


def summarize(study: optuna.Study) -> StudySummary:
    """The summary of ``study`` (see the module docstring for every rule)."""
    frozen = study.get_trials(deepcopy=False)
    records = [TrialRecord.from_frozen(t) for t in frozen]
    reps = replicates(frozen)
    confirmation_numbers = {n for r in reps.values() for n in r.confirmations}
    lines = [_line(r, reps.get(r.number)) for r in records if r.number not in confirmation_numbers]
    by_number = {line.number: line for line in lines}
    if reps:
        winner = confirmed_winner(frozen)
        best = by_number.get(winner.trial) if winner is not None else None
    else:
        best_trial = best_feasible(study)
        best = by_number.get(best_trial.number) if best_trial is not None else None

    def rank(line: TrialLine) -> tuple[int, int, int, float, float, int]:
        confirmed = (line.confirmed_rps or 0.0) > 0
        if confirmed and line.replicates is not None:
            figure = line.replicates.mean_rps  # the winner's rule orders the confirmed ones
        else:
            figure = line.figure_rps if math.isfinite(line.figure_rps) else -1.0
        return (
            0 if line is best else 1,
            0 if confirmed else 1,
            0 if line.feasible else 1,
            -figure,
            line.p99_ms if math.isfinite(line.p99_ms) else math.inf,
            line.number,
        )

    measured = [
        x for x in lines if x.complete and math.isfinite(x.p99_ms) and x.verdict != "failed"
    ]
    model = study.user_attrs.get(A.STUDY_MODEL)
    return StudySummary(
        study_name=study.study_name,
        model=model if isinstance(model, str) else None,
        sla_ms=_sla_of(study, records),
        trials=tuple(sorted(lines, key=rank)),
        best=best,
        baseline=next((x for x in lines if x.baseline and x.complete), None),
        fastest=min(measured, key=lambda x: (x.p99_ms, x.number)) if measured else None,
        confirmation_trials=len(confirmation_numbers),
        confirmations=reps,
    )
