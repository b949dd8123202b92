"""The trade-off view: the Pareto front of throughput (higher is better) against P99 (lower).

The study's objective stays the constrained one (maximise goodput with P99 <= SLA); the front is
computed afterwards from what the trials recorded, for reports that show what a lower latency
costs in throughput.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from optuna.trial import FrozenTrial, TrialState

from autotune.study import schema as A

__all__ = ["pareto_front", "pareto_trials"]


def pareto_front(rows: Sequence[tuple[float, float]]) -> list[int]:
    """The indices of the ``(throughput, p99)`` rows that no other row dominates.

    A row dominates another when its throughput is at least as high and its P99 at least as low,
    and one of the two strictly. Equal rows do not dominate each other: both are kept. Rows with
    a NaN are left out. The indices come in order of rising P99 (and so of rising throughput).
    """
    usable = [i for i, (rps, p99) in enumerate(rows) if not (math.isnan(rps) or math.isnan(p99))]
    usable.sort(key=lambda i: (rows[i][1], -rows[i][0]))
    front: list[int] = []
    best_rps = -math.inf
    best_p99 = math.nan
    for i in usable:
        rps, p99 = rows[i]
        if rps > best_rps:
            front.append(i)
            best_rps, best_p99 = rps, p99
        elif rps == best_rps and p99 == best_p99:
            front.append(i)
    return front


def pareto_trials(trials: Sequence[FrozenTrial]) -> list[FrozenTrial]:
    """The completed trials on the front of throughput against P99, in order of rising P99.

    Only trials that served something (``throughput_rps`` > 0) with a measured ``p99_ms`` take
    part, and a trial that reused another's measurement does not count twice.
    """
    candidates: list[FrozenTrial] = []
    rows: list[tuple[float, float]] = []
    for trial in trials:
        if trial.state != TrialState.COMPLETE or A.REUSED_FROM in trial.user_attrs:
            continue
        rps = trial.user_attrs.get(A.THROUGHPUT_RPS)
        p99 = trial.user_attrs.get(A.P99_MS)
        if not isinstance(rps, int | float) or not isinstance(p99, int | float) or rps <= 0:
            continue
        candidates.append(trial)
        rows.append((float(rps), float(p99)))
    return [candidates[i] for i in pareto_front(rows)]
