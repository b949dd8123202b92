"""The SLA constraint of a trial: stored, read back, and what makes a trial feasible."""

from __future__ import annotations

import optuna
from optuna.trial import FrozenTrial, TrialState

from autotune.study import _schema as A


def set_sla_constraint(trial: optuna.Trial, value: float) -> None:
    """Store the SLA constraint in the legacy list form.

    Optuna 5 reads it (as key "0") and optuna-dashboard 0.21 shows feasibility only from this
    form; ``Trial.set_constraint`` writes a key the dashboard ignores. Optuna has no public call
    that writes this system attr (samplers write it from ``constraints_func``), so this is the
    one place autotune reaches past Optuna's public API (``trial._trial_id``); drop it for
    ``trial.set_constraint`` once the dashboard reads Optuna 5's constraints.
    """
    trial.storage.set_trial_system_attr(trial._trial_id, A.CONSTRAINTS_SYSTEM_ATTR, (value,))


def trial_constraint(trial: FrozenTrial) -> float | None:
    values = list(trial.constraints.values())
    return max(values) if values else None


def is_feasible(trial: FrozenTrial) -> bool:
    value = trial_constraint(trial)
    return trial.state == TrialState.COMPLETE and value is not None and value <= 0


def best_feasible(study: optuna.Study) -> FrozenTrial | None:
    try:
        best = study.best_trial
    except ValueError:
        return None
    return best if is_feasible(best) else None
