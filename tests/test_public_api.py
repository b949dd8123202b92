"""The public surface: ``autotune.__all__`` and every sub-package face's ``__all__``, pinned.

A name added to or dropped from a face is a change of the public API: update the list here in
the same change. Benchmarks and scripts import only these names.
"""

from __future__ import annotations

import ast
import importlib
import importlib.metadata
import subprocess
import sys
from pathlib import Path

import pytest

import autotune

PUBLIC: dict[str, list[str]] = {
    "autotune": [
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
    ],
    "autotune.cli": [
        "app",
        "entry",
        "main",
    ],
    "autotune.loadgen": [
        "Arrival",
        "GoodputResult",
        "GoodputSettings",
        "GoodputVerdict",
        "LatencySummary",
        "LoadResult",
        "Mode",
        "Target",
        "Verdict",
        "arrival_times",
        "fail_min_over",
        "find_goodput",
        "pass_min_samples",
        "run_closed_loop",
        "run_open_loop",
        "run_sync",
        "sla_verdict",
        "slow_model_settings",
        "step_passes",
        "summarize",
    ],
    "autotune.results": [
        "CDF_PNG",
        "CSV_FILE",
        "HISTOGRAM_FILE",
        "HISTORY_PNG",
        "IMPORTANCE_PNG",
        "JSON_FILE",
        "LATENCIES_FILE",
        "SUMMARY_FILE",
        "TRADEOFF_PNG",
        "DashboardServer",
        "ExportResult",
        "Report",
        "StudySummary",
        "SummaryRow",
        "TrialLine",
        "best_feasible_trial",
        "confirmed_text",
        "dashboard_argv",
        "export_best",
        "export_properties",
        "frozen_trial",
        "load_latencies",
        "markdown_summary",
        "param_importances",
        "pareto_frame",
        "pareto_front",
        "pareto_trials",
        "percentile",
        "save_study_note",
        "save_trial_artifacts",
        "study_artifact_dir",
        "study_note",
        "summarize",
        "summary_rows",
        "trial_config_properties",
        "trials_frame",
        "trials_table",
        "write_report",
    ],
    "autotune.serving": [
        "BUILTIN_MODELS",
        "CONFIG_PROPERTIES_FILE",
        "CONTROLLED_KEYS",
        "DEFAULT_MODEL",
        "ENV_FILE",
        "HANDLER_KNOBS",
        "MODEL_CONFIG_FILE",
        "MODEL_STORE_DIR",
        "MODEL_VERSION",
        "THREAD_ENV",
        "TOLERANCE_TEXT",
        "Addresses",
        "ChildProcess",
        "ChildRecord",
        "ExportedServer",
        "HandlerInfo",
        "Holder",
        "HostLock",
        "HostLocked",
        "Knobs",
        "Manifest",
        "ModelArchive",
        "ModelEntry",
        "ModelSource",
        "ModelSpec",
        "ServerSettings",
        "TorchServe",
        "TorchServeEvaluator",
        "answer_difference",
        "archive_kind",
        "build_archive",
        "describe_knobs",
        "detect_hardware",
        "find_executable",
        "find_java_home",
        "find_knobs",
        "free_port",
        "get_model",
        "host_dir",
        "inference_key",
        "inspect_handler",
        "model_config",
        "model_source",
        "open_archive",
        "overridden_keys",
        "pack_mar",
        "read_env",
        "read_manifest",
        "read_properties",
        "reap_orphans",
        "render_env",
        "render_properties",
        "restrict_space",
        "result_from_goodput",
        "rewrite_model_config",
        "server_properties",
        "stop_all",
        "stop_process_group",
        "thread_env",
        "torchserve_executable",
        "visible_gpus",
        "wait_until",
        "worker_error",
        "write_yaml_atomic",
    ],
    "autotune.space": [
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
    ],
    "autotune.study": [
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
    ],
    "autotune.testing": [
        "COLUMNS",
        "CONTRACT",
        "DEFAULT_RANGES",
        "FAMILIES",
        "HELD_OUT_SEEDS",
        "OPTIONAL_COLUMNS",
        "SETS",
        "TUNING_SEEDS",
        "WIDE_RANGES",
        "Landscape",
        "LandscapeError",
        "Profile",
        "Ranges",
        "Row",
        "TableEvaluator",
        "check_evaluator",
        "check_result",
        "generate",
        "landscape_files",
        "landscape_set",
        "noise_factor",
        "read_landscape",
        "space_from_configs",
        "write_landscape",
    ],
}


@pytest.mark.parametrize("face", sorted(PUBLIC))
def test_each_face_exports_exactly_its_pinned_names(face: str) -> None:
    module = importlib.import_module(face)
    assert module.__all__ == PUBLIC[face]
    if face != "autotune":  # the top level loads lazily: its dir() is __all__
        public = {name for name in vars(module) if not name.startswith("_")}
        assert public == set(module.__all__), "a public name left out of __all__"


@pytest.mark.parametrize("face", sorted(PUBLIC))
def test_every_exported_name_resolves(face: str) -> None:
    module = importlib.import_module(face)
    for name in module.__all__:
        assert getattr(module, name) is not None, name


def test_the_top_level_re_exports_the_faces_own_objects() -> None:
    for name in autotune.__all__:
        value = getattr(autotune, name)
        home = autotune._LAZY.get(name)
        if home is not None:
            assert value is getattr(importlib.import_module(home), name)
    assert sorted(dir(autotune)) == sorted(autotune.__all__)
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        _ = autotune.nope


def test_the_version_comes_from_the_package_metadata() -> None:
    assert autotune.__version__ == importlib.metadata.version("autotune")


def test_importing_autotune_loads_no_sub_package() -> None:
    """``autotune --help`` stays fast: the public names load on first use."""
    code = (
        "import sys, autotune; "
        "print(sorted(m for m in sys.modules if m.startswith('autotune.') or m == 'optuna'))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    ).stdout
    assert out.strip() == "['autotune._errors']"


def test_benchmarks_and_scripts_import_nothing_private() -> None:
    root = Path(__file__).resolve().parent.parent
    private = []
    for path in sorted([*root.glob("benchmarks/**/*.py"), *root.glob("scripts/*.py")]):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module:
                modules = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
            elif isinstance(node, ast.Import):
                modules = [a.name for a in node.names]
            else:
                continue
            for module in modules:
                parts = module.split(".")
                if parts[0] == "autotune" and any(p.startswith("_") for p in parts[1:]):
                    private.append(f"{path.relative_to(root)}:{node.lineno} {module}")
    assert private == []
