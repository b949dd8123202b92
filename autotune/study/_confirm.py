"""Confirmation of the winner, as data: which measurements belong to which configuration, the
conservative figure of each, and the confirmed winner.

After the search, the top configurations are measured again (``confirmation`` trials, each with
the user attr ``confirmation_of`` = the search trial it repeats). The winner is the confirmed
configuration with the highest *geometric mean* of the goodputs of all its measurements (the
search trial's and every confirmation's; a configuration with one failed or over-SLA
measurement is out); ties go to the lower median P99, then to the earlier trial. The mean
decides because it is the steadier estimate: the lowest of three noisy measurements picks the
configuration with the luckiest worst draw more often than the best one (measured on the
generator's tuning landscapes, noise CV 0.15: median 97.5 % vs 96.6 % of the optimum, 10th
percentile 85.7 % vs 83.8 %). The figure reported for it, its *confirmed figure*, stays
conservative: the lowest goodput of all its measurements. Without confirmation trials there is
no confirmed winner, and ``study.best_trial`` (feasible trials only) stands.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from optuna.trial import FrozenTrial, TrialState

from autotune.study import _schema as A
from autotune.study._constraint import is_feasible

RULE = "the lowest goodput of all its measurements"  # the confirmed figure
WINNER_RULE = "the highest geometric mean of the goodputs of all its measurements"


@dataclass(frozen=True, kw_only=True)
class Replicates:
    """Every measurement of one search trial's configuration, the search trial's first."""

    trial: int  # the search trial
    throughput_rps: tuple[float, ...]
    p99_ms: tuple[float, ...]
    confirmations: tuple[int, ...]  # numbers of the confirmation trials

    @property
    def confirmed_rps(self) -> float:
        """The conservative figure: the lowest goodput measured (see the module docstring)."""
        return min(self.throughput_rps)

    @property
    def mean_rps(self) -> float:
        """What picks the winner: the geometric mean of the goodputs (0 when one of them is)."""
        if min(self.throughput_rps) <= 0:
            return 0.0
        return math.exp(statistics.fmean(math.log(v) for v in self.throughput_rps))

    @property
    def spread(self) -> float:
        """max / min of the goodputs (inf when one of them is 0)."""
        low, high = min(self.throughput_rps), max(self.throughput_rps)
        if high <= 0:
            return 1.0
        return high / low if low > 0 else math.inf

    @property
    def median_p99_ms(self) -> float:
        finite = [p for p in self.p99_ms if math.isfinite(p)]
        return statistics.median(finite) if finite else math.nan


def _measured_rps(trial: FrozenTrial) -> float:
    """A trial's goodput: its objective when feasible, else 0 (over the SLA or failed)."""
    return float(trial.value or 0.0) if is_feasible(trial) else 0.0


def _p99(trial: FrozenTrial) -> float:
    value = trial.user_attrs.get(A.P99_MS)
    return float(value) if isinstance(value, int | float) else math.nan


def replicates(trials: Sequence[FrozenTrial]) -> dict[int, Replicates]:
    """The replicates of every search trial that has at least one confirmation trial."""
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    by_number = {t.number: t for t in complete}
    grouped: dict[int, list[FrozenTrial]] = {}
    for trial in complete:
        origin = trial.user_attrs.get(A.CONFIRMATION_OF)
        if isinstance(origin, int) and origin in by_number:
            grouped.setdefault(origin, []).append(trial)
    result: dict[int, Replicates] = {}
    for origin, confirmations in sorted(grouped.items()):
        confirmations.sort(key=lambda t: t.number)
        all_trials = [by_number[origin], *confirmations]
        result[origin] = Replicates(
            trial=origin,
            throughput_rps=tuple(_measured_rps(t) for t in all_trials),
            p99_ms=tuple(_p99(t) for t in all_trials),
            confirmations=tuple(t.number for t in confirmations),
        )
    return result


def confirmed_winner(trials: Sequence[FrozenTrial]) -> Replicates | None:
    """The confirmed configuration of highest geometric mean goodput, or None (see the module
    docstring)."""
    return best_replicates(replicates(trials).values())


def best_replicates(candidates: Iterable[Replicates]) -> Replicates | None:
    """The winner among ``candidates`` (the rule of the module docstring); None when none has
    every measurement feasible."""
    candidates = [r for r in candidates if r.mean_rps > 0]
    if not candidates:
        return None
    return min(
        candidates,
        key=lambda r: (
            -r.mean_rps,
            r.median_p99_ms if math.isfinite(r.median_p99_ms) else math.inf,
            r.trial,
        ),
    )


def is_confirmation(trial: FrozenTrial) -> bool:
    return isinstance(trial.user_attrs.get(A.CONFIRMATION_OF), int)
