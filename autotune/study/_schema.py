"""Names of what a study stores, in one place: every layer reads and writes these keys.

Trial user attrs (numbers in the unit their name says):
    config            dict   TrialConfig.as_dict() of the trial
    throughput_rps    float  the objective: goodput, requests/s served with P99 <= SLA, no errors
    p50_ms p90_ms p99_ms p999_ms mean_ms max_ms   float   latency of the measured step
    offered_rps       float  the offered rate of the measured step
    requests          int    requests sent in the whole trial (all steps)
    errors            int    errored requests in the measured step
    errors_total      int    errored requests in the whole trial (every step and probe)
    sla_ms            float
    failure           str    only when the deployment or the measurement failed: why
    baseline          bool   True on the TorchServe-default configuration
    verdict           str    "feasible" | "over_sla" | "failed"
    deploy_s measure_s  float  wall time of the deployment and of the measurement
    idle_latency_ms   float  median latency of single requests on the idle server
    host pid          str/int  who ran the trial (a crashed owner's RUNNING trial is retried)
    retry_of          int    the trial number this trial re-runs (after a crash or Ctrl-C)
    reused_from       int    the trial whose measurement of the same configuration was reused
    confirmation_of   int    on a confirmation trial: the search trial whose configuration it
                             measures again (after the search; see autotune.study confirmation)

Trial system attr ``constraints``: ``[p99_ms - sla_ms]``, capped at ``10 * sla_ms`` (the cap
when the trial errored or failed), so that the GP's constraint model is not dominated by
outliers. Written in the legacy list form so that optuna-dashboard 0.21 shows feasibility;
Optuna 5 reads it too (as constraint key "0").

Study user attrs:
    sla_ms float, model str, space dict (the resolved search space), archive_dir str,
    hardware dict, input_path str, autotune_version str, artifact_dir str,
    handler_extra dict (model-specific handler settings, e.g. a checkpoint path)
    winner dict       set by the confirmation step: {"trial": N (the search trial),
                      "confirmed_rps": float (the conservative figure), "replicates_rps": [...],
                      "spread": max/min, "rule": str}; absent when nothing was confirmed
"""

from __future__ import annotations

from typing import Final

CONFIG: Final = "config"
THROUGHPUT_RPS: Final = "throughput_rps"
P50_MS: Final = "p50_ms"
P90_MS: Final = "p90_ms"
P99_MS: Final = "p99_ms"
P999_MS: Final = "p999_ms"
MEAN_MS: Final = "mean_ms"
MAX_MS: Final = "max_ms"
OFFERED_RPS: Final = "offered_rps"
REQUESTS: Final = "requests"
ERRORS: Final = "errors"
ERRORS_TOTAL: Final = "errors_total"
SLA_MS: Final = "sla_ms"
FAILURE: Final = "failure"
BASELINE: Final = "baseline"
VERDICT: Final = "verdict"
DEPLOY_S: Final = "deploy_s"
MEASURE_S: Final = "measure_s"

CONSTRAINTS_SYSTEM_ATTR: Final = "constraints"

STUDY_SLA_MS: Final = "sla_ms"
STUDY_MODEL: Final = "model"
STUDY_SPACE: Final = "space"
STUDY_ARCHIVE_DIR: Final = "archive_dir"
STUDY_HARDWARE: Final = "hardware"
STUDY_INPUT_PATH: Final = "input_path"
STUDY_VERSION: Final = "autotune_version"

HOST: Final = "host"
PID: Final = "pid"
RETRY_OF: Final = "retry_of"
REUSED_FROM: Final = "reused_from"
CONFIRMATION_OF: Final = "confirmation_of"
STUDY_WINNER: Final = "winner"
IDLE_LATENCY_MS: Final = "idle_latency_ms"
STUDY_ARTIFACT_DIR: Final = "artifact_dir"
STUDY_HANDLER_EXTRA: Final = "handler_extra"

# The constraint is capped at this multiple of the SLA; failed or errored trials get the cap.
CONSTRAINT_CAP_X_SLA: Final = 10.0


def constraint_value(p99_ms: float, sla_ms: float, *, ok: bool) -> float:
    """The value stored as the SLA constraint: > 0 means violated."""
    cap = CONSTRAINT_CAP_X_SLA * sla_ms
    if not ok or p99_ms != p99_ms:  # failed, errored or NaN
        return cap
    return min(p99_ms - sla_ms, cap)
