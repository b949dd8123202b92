"""autotune: find the TorchServe configuration that serves the most requests/s within a P99 SLA.

The package follows the flow of one study, one sub-package per idea; imports run one way, from
the top of this list to the bottom (``autotune.cli`` may use all of them, ``space`` none):

* ``autotune.cli``      the thin command line
* ``autotune._run``     one run wired together (``RunSettings``, ``prepare``, ``run_study``)
* ``autotune.results``  one summary of a study, report, artifacts, dashboard, export
* ``autotune.serving``  TorchServe, the model archive, the models, the real evaluator
* ``autotune.study``    the Optuna study, the trial schema, the trial loop
* ``autotune.loadgen``  the load generator
* ``autotune.space``    the search space and a configuration (``TrialConfig``)
* ``autotune.testing``  what tests and benchmarks share (table evaluator, landscapes)

This module is the public surface: everything in ``__all__`` is importable from ``autotune``
(loaded on first use, so that ``autotune --help`` stays fast).
"""

from __future__ import annotations

import importlib
import importlib.metadata
from typing import TYPE_CHECKING, Any

from autotune._errors import (
    AutotuneError,
    ConfigError,
    DeploymentError,
    JavaNotFoundError,
    LoadTestError,
    ServerError,
    StorageError,
)

if TYPE_CHECKING:
    from autotune._run import RunSettings, open_study, prepare, read_input, run_study
    from autotune.results import (
        DashboardServer,
        ExportResult,
        StudySummary,
        export_best,
        study_artifact_dir,
        summarize,
        trials_table,
        write_report,
    )
    from autotune.serving import (
        ExportedServer,
        ModelSpec,
        TorchServe,
        TorchServeEvaluator,
        detect_hardware,
        find_java_home,
        get_model,
    )
    from autotune.space import Hardware, SearchSpace, TrialConfig, load_space
    from autotune.study import (
        Evaluator,
        StopRule,
        TrialRecord,
        TrialResult,
        Tuner,
        load_study,
        make_sampler,
    )

__version__: str = importlib.metadata.version("autotune")

_LAZY: dict[str, str] = {
    "RunSettings": "autotune._run",
    "open_study": "autotune._run",
    "prepare": "autotune._run",
    "read_input": "autotune._run",
    "run_study": "autotune._run",
    "DashboardServer": "autotune.results",
    "ExportResult": "autotune.results",
    "StudySummary": "autotune.results",
    "export_best": "autotune.results",
    "study_artifact_dir": "autotune.results",
    "summarize": "autotune.results",
    "trials_table": "autotune.results",
    "write_report": "autotune.results",
    "ExportedServer": "autotune.serving",
    "ModelSpec": "autotune.serving",
    "TorchServe": "autotune.serving",
    "TorchServeEvaluator": "autotune.serving",
    "detect_hardware": "autotune.serving",
    "find_java_home": "autotune.serving",
    "get_model": "autotune.serving",
    "Hardware": "autotune.space",
    "SearchSpace": "autotune.space",
    "TrialConfig": "autotune.space",
    "load_space": "autotune.space",
    "Evaluator": "autotune.study",
    "StopRule": "autotune.study",
    "TrialRecord": "autotune.study",
    "TrialResult": "autotune.study",
    "Tuner": "autotune.study",
    "load_study": "autotune.study",
    "make_sampler": "autotune.study",
}

__all__ = [
    "AutotuneError",
    "ConfigError",
    "DashboardServer",
    "DeploymentError",
    "Evaluator",
    "ExportResult",
    "ExportedServer",
    "Hardware",
    "JavaNotFoundError",
    "LoadTestError",
    "ModelSpec",
    "RunSettings",
    "SearchSpace",
    "ServerError",
    "StopRule",
    "StorageError",
    "StudySummary",
    "TorchServe",
    "TorchServeEvaluator",
    "TrialConfig",
    "TrialRecord",
    "TrialResult",
    "Tuner",
    "__version__",
    "detect_hardware",
    "export_best",
    "find_java_home",
    "get_model",
    "load_space",
    "load_study",
    "make_sampler",
    "open_study",
    "prepare",
    "read_input",
    "run_study",
    "study_artifact_dir",
    "summarize",
    "trials_table",
    "write_report",
]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'autotune' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
