"""What a study found, for people and for deployment: one summary of the study, the trials as a
frame and a table, the report (Markdown, CSV/JSON, plots), per-trial artifacts, the study note
and optuna-dashboard, and the export TorchServe starts from."""

from autotune.results._artifacts import (
    HISTOGRAM_FILE,
    LATENCIES_FILE,
    frozen_trial,
    load_latencies,
    percentile,
    save_trial_artifacts,
    study_artifact_dir,
)
from autotune.results._dashboard import (
    DashboardServer,
    dashboard_argv,
    save_study_note,
    study_note,
)
from autotune.results._export import (
    ExportResult,
    best_feasible_trial,
    export_best,
    export_properties,
    trial_config_properties,
)
from autotune.results._pareto import pareto_front, pareto_trials
from autotune.results._report import (
    CDF_PNG,
    CSV_FILE,
    HISTORY_PNG,
    IMPORTANCE_PNG,
    JSON_FILE,
    SUMMARY_FILE,
    TRADEOFF_PNG,
    Report,
    SummaryRow,
    markdown_summary,
    param_importances,
    pareto_frame,
    summary_rows,
    trials_frame,
    write_report,
)
from autotune.results._summary import StudySummary, TrialLine, summarize
from autotune.results._table import confirmed_text, trials_table

__all__ = [
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
]
