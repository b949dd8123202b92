"""The Optuna study: storage, sampler, the SLA constraint, the trial schema and the trial loop.

The loop (``Tuner``) sees only an ``Evaluator``; a measured ``TrialResult`` is stored through
one schema (``autotune.study.schema``) that every reader of a study uses.
"""

from autotune.study import _schema as schema
from autotune.study._confirm import (
    RULE as CONFIRMATION_RULE,
)
from autotune.study._confirm import (
    WINNER_RULE,
    Replicates,
    best_replicates,
    confirmed_winner,
    is_confirmation,
    replicates,
)
from autotune.study._confirmation_run import (
    ConfirmationPlan,
    plan_confirmation,
    record_winner,
    run_confirmation,
)
from autotune.study._constraint import (
    best_feasible,
    is_feasible,
    set_sla_constraint,
    trial_constraint,
)
from autotune.study._result import TrialRecord, TrialResult, Verdict
from autotune.study._sampler import SAMPLERS, make_sampler
from autotune.study._storage import DEFAULT_STORAGE, open_storage, redact
from autotune.study._study import (
    check_sqlite_file,
    count_complete,
    create_or_resume,
    default_study_name,
    load_study,
    owner,
    recover_interrupted,
)
from autotune.study._tuner import (
    Evaluator,
    StopRule,
    TrialEnd,
    TrialStart,
    Tuner,
    enqueue_seeds,
)

__all__ = [
    "CONFIRMATION_RULE",
    "DEFAULT_STORAGE",
    "SAMPLERS",
    "WINNER_RULE",
    "ConfirmationPlan",
    "Evaluator",
    "Replicates",
    "StopRule",
    "TrialEnd",
    "TrialRecord",
    "TrialResult",
    "TrialStart",
    "Tuner",
    "Verdict",
    "best_feasible",
    "best_replicates",
    "check_sqlite_file",
    "confirmed_winner",
    "count_complete",
    "create_or_resume",
    "default_study_name",
    "enqueue_seeds",
    "is_confirmation",
    "is_feasible",
    "load_study",
    "make_sampler",
    "open_storage",
    "owner",
    "plan_confirmation",
    "record_winner",
    "recover_interrupted",
    "redact",
    "replicates",
    "run_confirmation",
    "schema",
    "set_sla_constraint",
    "trial_constraint",
]
