"""Names of what a study stores, in one place: every layer reads and writes these keys.

A trial's user attrs are ``TRIAL_FIELDS`` below (key, type, unit, who writes it, what it
means): ``TrialResult.user_attrs`` writes the ``measured`` ones, the trial loop the others, and
``TrialRecord.from_frozen`` reads them all back; the report's columns, the trials table and the
dashboard note follow from that one list.

Trial system attr ``constraints``: ``[p99_ms - sla_ms]``, capped at ``10 * sla_ms`` (the cap
when the trial errored or failed), so that the GP's constraint model is not dominated by
outliers. Written in the legacy list form so that optuna-dashboard 0.21 shows feasibility;
Optuna 5 reads it too (as constraint key "0").

Study user attrs:
    sla_ms float, model str, space dict (the resolved search space), archive_dir str,
    hardware dict, input_path str, autotune_version str, artifact_dir str,
    handler_extra dict (model-specific handler settings, e.g. a checkpoint path),
    archive str (the archive tuned: the user's file, or the built-in model's built .mar),
    response_timeout_s int (only when --response-timeout-s overrode the archive's),
    reference_answer str (the model's answer to the sample input that trials are compared
    with; only when it is UTF-8 text of at most 64 KiB)
    winner dict       set by the confirmation step: {"trial": N (the search trial),
                      "confirmed_rps": float (the conservative figure), "replicates_rps": [...],
                      "spread": max/min, "rule": str}; absent when nothing was confirmed
"""

from __future__ import annotations

from dataclasses import dataclass
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
REPLICATES_RPS: Final = "replicates_rps"
SPREAD: Final = "spread"
STUDY_WINNER: Final = "winner"
IDLE_LATENCY_MS: Final = "idle_latency_ms"
STUDY_ARTIFACT_DIR: Final = "artifact_dir"
STUDY_HANDLER_EXTRA: Final = "handler_extra"
STUDY_ARCHIVE: Final = "archive"
STUDY_RESPONSE_TIMEOUT_S: Final = "response_timeout_s"
ANSWER_CHANGED: Final = "answer_changed"
STUDY_REFERENCE_ANSWER: Final = "reference_answer"
ARTIFACTS: Final = "artifacts"


@dataclass(frozen=True)
class Field:
    """One trial user attr: its key, the Python type stored, its unit, and what it means.

    ``measured``: written by ``TrialResult.user_attrs`` (a field of ``TrialResult`` of the same
    name, except ``sla_ms``, which the trial loop passes in); otherwise the trial loop writes it.
    """

    key: str
    kind: type
    unit: str
    description: str
    measured: bool = True


# In the order the report's columns take (config, a dict, is spread into config_* columns).
TRIAL_FIELDS: Final = (
    Field(CONFIG, dict, "", "TrialConfig.as_dict() of the trial"),
    Field(THROUGHPUT_RPS, float, "req/s", "the objective: goodput, requests/s served with "
          "P99 <= SLA and no errors"),
    Field(P50_MS, float, "ms", "median latency of the measured step"),
    Field(P90_MS, float, "ms", "P90 latency of the measured step"),
    Field(P99_MS, float, "ms", "P99 latency of the measured step"),
    Field(P999_MS, float, "ms", "P99.9 latency of the measured step"),
    Field(MEAN_MS, float, "ms", "mean latency of the measured step"),
    Field(MAX_MS, float, "ms", "highest latency of the measured step"),
    Field(IDLE_LATENCY_MS, float, "ms", "median latency of single requests on the idle server"),
    Field(OFFERED_RPS, float, "req/s", "the offered rate of the measured step"),
    Field(REQUESTS, int, "", "requests sent in the whole trial (all steps)"),
    Field(ERRORS, int, "", "errored requests in the measured step"),
    Field(ERRORS_TOTAL, int, "", "errored requests in the whole trial (every step and probe)"),
    Field(SLA_MS, float, "ms", "the SLA on P99 the trial was measured against"),
    Field(VERDICT, str, "", '"feasible" | "over_sla" | "failed"'),
    Field(FAILURE, str, "", "only when the deployment or the measurement failed: why"),
    Field(BASELINE, bool, "", "True on the TorchServe-default configuration", measured=False),
    Field(ANSWER_CHANGED, str, "", "only when the trial's answers to the sample input differed "
          "from the reference answer (tolerance in autotune.serving): the first difference",
          measured=False),
    Field(DEPLOY_S, float, "s", "wall time of the deployment"),
    Field(MEASURE_S, float, "s", "wall time of the measurement"),
    Field(RETRY_OF, int, "", "the trial number this trial re-runs (after a crash or Ctrl-C)",
          measured=False),
    Field(REUSED_FROM, int, "", "the trial whose measurement of the same configuration was "
          "reused", measured=False),
    Field(CONFIRMATION_OF, int, "", "on a confirmation trial: the search trial whose "
          "configuration it measures again (see autotune.study confirmation)", measured=False),
    Field(REPLICATES_RPS, list, "req/s", "on a confirmation trial: the goodputs of its "
          "configuration so far, the search trial's first", measured=False),
    Field(SPREAD, float, "", "on a confirmation trial: max/min of those goodputs",
          measured=False),
    Field(ARTIFACTS, dict, "", "{file name: Optuna artifact id} of the files attached to the "
          "trial (config.properties, raw latencies, histogram)", measured=False),
    Field(HOST, str, "", "the host that ran the trial", measured=False),
    Field(PID, int, "", "the process that ran it (a crashed owner's RUNNING trial is retried)",
          measured=False),
)  # fmt: skip
FIELDS_BY_KEY: Final = {f.key: f for f in TRIAL_FIELDS}


# The constraint is capped at this multiple of the SLA; failed or errored trials get the cap.
CONSTRAINT_CAP_X_SLA: Final = 10.0


def constraint_value(p99_ms: float, sla_ms: float, *, ok: bool) -> float:
    """The value stored as the SLA constraint: > 0 means violated."""
    cap = CONSTRAINT_CAP_X_SLA * sla_ms
    if not ok or p99_ms != p99_ms:  # failed, errored or NaN
        return cap
    return min(p99_ms - sla_ms, cap)
