"""The search space: what a study may deploy (``TrialConfig``), read from YAML and filtered by
the host's hardware, and how Optuna sees it."""

from autotune.space._config import PARAMETERS, Device, Hardware, TrialConfig
from autotune.space._space import (
    MAX_WORKERS_PER_GPU,
    Backend,
    PerDevice,
    SearchSpace,
    builtin_space,
    load_space,
    torchserve_default,
)

__all__ = [
    "MAX_WORKERS_PER_GPU",
    "PARAMETERS",
    "Backend",
    "Device",
    "Hardware",
    "PerDevice",
    "SearchSpace",
    "TrialConfig",
    "builtin_space",
    "load_space",
    "torchserve_default",
]
