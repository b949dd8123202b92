"""The report of a study: plain data first (a DataFrame of trials), renderers last.

``trials_frame`` turns the study into one row per trial (params, every user attr of the trial
schema ``autotune.study.schema.TRIAL_FIELDS``, the SLA constraint and the feasible flag);
``pareto_frame`` and ``param_importances`` compute on that data, ``summary_rows`` on the one
summary of the study (``_summary.summarize``: the best, the baseline, the speed-up); the
renderers (CSV/JSON, Markdown, matplotlib PNGs) only draw it; the trials table is ``_table``.
Figures are drawn on ``matplotlib.figure.Figure`` with the Agg canvas, never through pyplot, so
no global backend state is touched.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import numpy as np
import numpy.typing as npt
import optuna
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from optuna.importance import BaseImportanceEvaluator, PedAnovaImportanceEvaluator
from optuna.trial import FrozenTrial, TrialState

from autotune.results import _pareto
from autotune.results._artifacts import load_latencies, percentile, study_artifact_dir
from autotune.results._summary import StudySummary, TrialLine, summarize
from autotune.study import CONFIRMATION_RULE, TrialRecord, is_confirmation, is_feasible
from autotune.study import schema as A

# Trial user attrs that become columns, in the schema's order, whether a trial has them or not
# (dicts are left out: ``config`` is spread into ``config_*`` columns).
ATTR_COLUMNS: Final = tuple(f.key for f in A.TRIAL_FIELDS if f.kind is not dict)
_FLOAT_ATTRS: Final = tuple(f.key for f in A.TRIAL_FIELDS if f.kind is float)
_DICT_ATTRS: Final = frozenset(f.key for f in A.TRIAL_FIELDS if f.kind is dict)
MIN_TRIALS_FOR_IMPORTANCE: Final = 5

CSV_FILE: Final = "trials.csv"
JSON_FILE: Final = "trials.json"
SUMMARY_FILE: Final = "summary.md"
TRADEOFF_PNG: Final = "throughput_vs_p99.png"
HISTORY_PNG: Final = "best_over_trials.png"
IMPORTANCE_PNG: Final = "param_importances.png"
CDF_PNG: Final = "latency_cdf.png"

_FEASIBLE_COLOR: Final = "#2a9d4b"
_INFEASIBLE_COLOR: Final = "#c44e52"
_NEUTRAL_COLOR: Final = "#8c8c8c"


# -- plain data -----------------------------------------------------------------------------------
def trials_frame(study: optuna.Study) -> pd.DataFrame:
    """One row per trial: number, state, feasibility, value, params, attrs, config.

    ``feasible`` is True for COMPLETE trials whose SLA constraint (the legacy ``constraints``
    system attr, which ``FrozenTrial.constraints`` reads as key "0") is <= 0; ``constraint`` is
    that value (NaN when the trial has none).
    """
    rows = [_trial_row(t) for t in study.get_trials(deepcopy=False)]
    base = ["number", "state", "feasible", "constraint", "value", "device", "label"]
    df = pd.DataFrame(rows)
    for column in (*base, *ATTR_COLUMNS):
        if column not in df.columns:
            df[column] = pd.Series(dtype="object")
    rest = [c for c in df.columns if c not in base and c not in ATTR_COLUMNS]
    params = sorted(c for c in rest if c.startswith("params_"))
    configs = sorted(c for c in rest if c.startswith("config_"))
    others = [c for c in rest if c not in params and c not in configs]
    df = df[[*base, *params, *ATTR_COLUMNS, *configs, *others]]
    df[A.BASELINE] = df[A.BASELINE].map(lambda v: v is True).astype(bool)
    df["feasible"] = df["feasible"].astype(bool)
    for column in ("constraint", "value", *_FLOAT_ATTRS):
        df[column] = pd.to_numeric(df[column], errors="coerce").astype(float)
    return df.sort_values("number", kind="stable").reset_index(drop=True)


def _trial_row(trial: FrozenTrial) -> dict[str, Any]:
    record = TrialRecord.from_frozen(trial)
    config = record.config
    constraint = record.constraint
    row: dict[str, Any] = {
        "number": record.number,
        "state": record.state.name,
        "feasible": record.feasible,
        "constraint": math.nan if constraint is None else float(constraint),
        "value": record.value if record.value is not None else math.nan,
        "device": config.device if config is not None else trial.params.get("device", "cpu"),
        "label": record.label,
        "duration_s": trial.duration.total_seconds() if trial.duration is not None else math.nan,
    }
    row.update({f"params_{k}": v for k, v in trial.params.items()})
    for key, value in trial.user_attrs.items():
        if key in _DICT_ATTRS:
            continue
        row[key] = None if isinstance(value, dict | list) else value
    stored = trial.user_attrs.get(A.CONFIG)
    if isinstance(stored, Mapping):
        row.update({f"config_{k}": v for k, v in stored.items()})
    return row


def measured(df: pd.DataFrame) -> pd.DataFrame:
    """COMPLETE trials with a finite P99 and throughput (failed deployments have none)."""
    mask = (
        (df["state"] == TrialState.COMPLETE.name)
        & np.isfinite(df[A.P99_MS].astype(float))
        & np.isfinite(df[A.THROUGHPUT_RPS].astype(float))
    )
    return df[mask]


def pareto_frame(df: pd.DataFrame) -> pd.DataFrame:
    """Trials no other trial beats on both throughput (higher) and P99 (lower), by P99."""
    points = measured(df)
    rows = list(zip(points[A.THROUGHPUT_RPS], points[A.P99_MS], strict=True))
    return points.iloc[_pareto.pareto_front(rows)]


def best_so_far(df: pd.DataFrame) -> pd.Series:
    """The best feasible throughput after each trial (NaN until the first feasible one)."""
    values = df[A.THROUGHPUT_RPS].where(df["feasible"])
    return values.cummax().ffill()


@dataclass(frozen=True, kw_only=True)
class SummaryRow:
    """One line of the Markdown summary: a device's baseline or its best feasible trial."""

    device: str
    role: str  # "default" | "best" | "none"
    trial: int | None
    label: str
    p99_ms: float
    throughput_rps: float  # the confirmed figure of a confirmed trial
    speedup: float | None  # best throughput / baseline throughput; None when undefined


def summary_rows(summary: StudySummary) -> list[SummaryRow]:
    """Per device: the TorchServe-default trial and the best trial, with the speed-up.

    The study's best (``summary.best``) is its device's best; another device's best is the
    first line of that device, in the summary's ranking, that could be a best.
    """
    rows: list[SummaryRow] = []
    done = [line for line in summary.trials if line.complete]
    for device in sorted({line.device for line in done}):
        of_device = [line for line in done if line.device == device]
        own = next((line for line in of_device if line.baseline), None)
        baseline = own or summary.baseline
        base_rps = baseline.figure_rps if baseline is not None else math.nan
        if own is not None:
            rows.append(_summary_row(own, "default", base_rps))
        if summary.best is not None and summary.best.device == device:
            top: TrialLine | None = summary.best
        else:
            top = next((line for line in of_device if summary.qualifies(line)), None)
        if top is not None:
            rows.append(_summary_row(top, "best", base_rps))
        else:
            p99s = [line.p99_ms for line in of_device if math.isfinite(line.p99_ms)]
            rows.append(
                SummaryRow(
                    device=device,
                    role="none",
                    trial=None,
                    label="no trial met the SLA",
                    p99_ms=min(p99s) if p99s else math.nan,
                    throughput_rps=0.0,
                    speedup=None,
                )
            )
    return rows


def _summary_row(line: TrialLine, role: str, base_rps: float) -> SummaryRow:
    throughput = line.figure_rps
    ok = math.isfinite(base_rps) and base_rps > 0 and math.isfinite(throughput)
    return SummaryRow(
        device=line.device,
        role=role,
        trial=line.number,
        label=line.label,
        p99_ms=line.p99_ms,
        throughput_rps=throughput,
        speedup=throughput / base_rps if ok else None,
    )


def importance_evaluator() -> BaseImportanceEvaluator:
    """The evaluator of the report's parameter importances (Optuna's own default, explicitly)."""
    return PedAnovaImportanceEvaluator()


def evaluator_name(evaluator: BaseImportanceEvaluator) -> str:
    """``PedAnova`` for ``PedAnovaImportanceEvaluator``: the evaluator's class, without the
    common suffix."""
    return type(evaluator).__name__.removesuffix("ImportanceEvaluator") or type(evaluator).__name__


def param_importances(
    study: optuna.Study,
    *,
    min_trials: int = MIN_TRIALS_FOR_IMPORTANCE,
    evaluator: BaseImportanceEvaluator | None = None,
) -> tuple[dict[str, float], str | None]:
    """Importances of the params for throughput over the feasible search trials, by
    ``evaluator`` (``importance_evaluator()`` when None).

    Returns ``(importances, None)``, or ``({}, reason)`` when there are too few feasible trials
    or too little variation to say anything. Confirmation trials repeat a search trial's
    configuration: they are left out.
    """
    feasible = [
        t
        for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
        if t.params and is_feasible(t) and not is_confirmation(t)
    ]
    if len(feasible) < min_trials:
        return {}, (
            f"parameter importances need at least {min_trials} feasible trials, "
            f"the study has {len(feasible)}"
        )
    # Only params that took more than one value among the feasible trials can matter.
    names = sorted(set.intersection(*(set(t.params) for t in feasible)))
    varied = [n for n in names if len({repr(t.params.get(n)) for t in feasible}) > 1]
    if not varied:
        return {}, "no parameter varied among the feasible trials"
    view = optuna.create_study(direction="maximize")
    view.add_trials(feasible)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            importances = optuna.importance.get_param_importances(
                view, evaluator=evaluator or importance_evaluator(), params=varied
            )
        except (ValueError, RuntimeError) as exc:
            return {}, f"parameter importances could not be computed: {exc}"
    if not importances or caught:
        reason = str(caught[0].message) if caught else "no parameter varied"
        return {}, f"parameter importances could not be computed: {reason}"
    return dict(importances), None


# -- renderers: text ------------------------------------------------------------------------------
def _num(value: Any, digits: int) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "-"
    try:
        return f"{float(value):,.{digits}f}"
    except (TypeError, ValueError):
        return "-"


def markdown_summary(summary: StudySummary) -> str:
    """The article-style table: per device the default and the best configuration."""
    sla_ms = summary.sla_ms
    sla = f"P99 <= {sla_ms:g} ms" if sla_ms is not None else "unknown SLA"
    confirmations = (
        f" (and {summary.confirmation_trials} confirmation trials)"
        if summary.confirmation_trials
        else ""
    )
    lines = [
        f"# autotune report: {summary.study_name}",
        "",
        f"Model: {summary.model or 'unknown'}. SLA: {sla}. Trials: {summary.complete} complete, "
        f"{summary.feasible} within the SLA{confirmations}.",
        "",
        "| device | configuration | trial | P99 (ms) | throughput (req/s) | speed-up |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for row in summary_rows(summary):
        what = {"default": "TorchServe default: ", "best": "best: "}.get(row.role, "")
        trial = "-" if row.trial is None else str(row.trial)
        speedup = "-" if row.speedup is None else f"{row.speedup:.2f}x"
        throughput = "-" if row.role == "none" else _num(row.throughput_rps, 1)
        lines.append(
            f"| {row.device} | {what}`{row.label}` | {trial} | {_num(row.p99_ms, 1)} "
            f"| {throughput} | {speedup} |"
        )
    lines += [
        "",
        "Throughput is goodput: the highest request rate served with P99 within the SLA and no "
        "errors. Speed-up = best throughput / throughput of the TorchServe default.",
    ]
    if summary.confirmed:
        lines += [
            "",
            "Confirmed configurations were measured again after the search; their throughput "
            f"is the confirmed figure, {CONFIRMATION_RULE}:",
            "",
            "| trial | configuration | measurements (req/s) | spread | confirmed (req/s) |",
            "|---:|---|---|---:|---:|",
        ]
        for line in summary.trials:
            reps = line.replicates
            if reps is None:
                continue
            figures = ", ".join(f"{v:.1f}" for v in reps.throughput_rps)
            spread = f"{reps.spread:.2f}x" if math.isfinite(reps.spread) else "-"
            lines.append(
                f"| {line.number} | `{line.label}` | {figures} | {spread} "
                f"| {reps.confirmed_rps:.1f} |"
            )
    return "\n".join(lines) + "\n"


def write_csv(df: pd.DataFrame, path: Path) -> None:
    df.to_csv(path, index=False)


def write_json(df: pd.DataFrame, path: Path) -> None:
    df.to_json(path, orient="records", indent=2)


# -- renderers: figures ---------------------------------------------------------------------------
def _figure() -> tuple[Figure, Axes]:
    fig = Figure(figsize=(8, 5), dpi=110, layout="constrained")
    return fig, fig.add_subplot()


def plot_tradeoff(
    df: pd.DataFrame, path: Path, *, sla_ms: float | None, best: int | None = None
) -> None:
    """Throughput against P99: feasible and infeasible trials, the SLA line, the Pareto front,
    and the study's best (trial number ``best``, from the summary) annotated."""
    fig, ax = _figure()
    points = measured(df)
    feasible = points[points["feasible"]]
    infeasible = points[~points["feasible"]]
    ax.scatter(
        infeasible[A.P99_MS],
        infeasible[A.THROUGHPUT_RPS],
        marker="x",
        color=_INFEASIBLE_COLOR,
        label="over the SLA",
    )
    ax.scatter(
        feasible[A.P99_MS],
        feasible[A.THROUGHPUT_RPS],
        marker="o",
        color=_FEASIBLE_COLOR,
        label="within the SLA",
    )
    front = pareto_frame(df)
    if len(front):
        ax.step(
            front[A.P99_MS],
            front[A.THROUGHPUT_RPS],
            where="post",
            color="#4c72b0",
            alpha=0.8,
            label="Pareto front",
        )
    baseline = points[points[A.BASELINE]]
    if len(baseline):
        ax.scatter(
            baseline[A.P99_MS],
            baseline[A.THROUGHPUT_RPS],
            marker="*",
            s=220,
            facecolors="none",
            edgecolors="black",
            label="TorchServe default",
        )
    if best is not None and (df["number"] == best).any():
        row = df[df["number"] == best].iloc[0]
        ax.annotate(
            f"best #{best}\n{row['label']}",
            (row[A.P99_MS], row[A.THROUGHPUT_RPS]),
            textcoords="offset points",
            xytext=(8, -24),
            fontsize=8,
        )
    if sla_ms is not None:
        ax.axvline(sla_ms, color=_INFEASIBLE_COLOR, linestyle="--", label=f"SLA {sla_ms:g} ms")
    p99 = points[A.P99_MS]
    if len(p99) and p99.min() > 0 and p99.max() / p99.min() > 10:
        ax.set_xscale("log")
    ax.set_xlabel("P99 latency (ms)")
    ax.set_ylabel("throughput within the SLA (req/s)")
    ax.set_title("Throughput against P99 latency")
    ax.grid(alpha=0.3)
    ax.legend(loc="best", fontsize=8)
    fig.savefig(path)


def plot_history(df: pd.DataFrame, path: Path) -> None:
    """Each trial's throughput and the best feasible throughput so far."""
    fig, ax = _figure()
    done = df[df["state"] == TrialState.COMPLETE.name]
    ok = done[done["feasible"]]
    bad = done[~done["feasible"]]
    ax.scatter(
        bad["number"],
        bad[A.THROUGHPUT_RPS].fillna(0.0),
        color=_NEUTRAL_COLOR,
        marker="x",
        label="over the SLA / failed",
    )
    ax.scatter(ok["number"], ok[A.THROUGHPUT_RPS], color=_FEASIBLE_COLOR, label="within the SLA")
    best = best_so_far(df)
    ax.step(df["number"], best, where="post", color="#4c72b0", label="best within the SLA")
    ax.set_xlabel("trial")
    ax.set_ylabel("throughput within the SLA (req/s)")
    ax.set_title("Best value over trials")
    ax.grid(alpha=0.3)
    ax.legend(loc="best", fontsize=8)
    fig.savefig(path)


def plot_importances(
    importances: Mapping[str, float], path: Path, *, evaluator: BaseImportanceEvaluator
) -> None:
    """Bars of the importances, the axis naming the evaluator that computed them."""
    fig, ax = _figure()
    names = list(importances)[::-1]
    ax.barh(names, [importances[n] for n in names], color="#4c72b0")
    ax.set_xlabel(f"importance for throughput (feasible trials, {evaluator_name(evaluator)})")
    ax.set_title("Parameter importances")
    ax.grid(alpha=0.3, axis="x")
    fig.savefig(path)


def plot_latency_cdf(
    curves: Mapping[str, npt.NDArray[np.float64]], path: Path, *, sla_ms: float | None
) -> None:
    """Empirical CDFs of raw latencies (e.g. the best trial and the baseline)."""
    fig, ax = _figure()
    for label, latencies in curves.items():
        values = np.sort(np.asarray(latencies, dtype=np.float64))
        if not values.size:
            continue
        # Errored or unanswered requests (+inf) keep the curve below 1: the fraction is of all.
        fraction = np.arange(1, values.size + 1) / values.size
        finite = np.isfinite(values)
        p99 = percentile(values, 99)
        text = f"P99 {p99:.1f} ms" if math.isfinite(p99) else "none answered"
        if not finite.all():
            text += f", {int((~finite).sum())} errored"
        ax.step(
            values[finite],
            fraction[finite],
            where="post",
            marker="." if finite.sum() < 50 else None,
            label=f"{label} ({text})",
        )
    ax.axhline(0.99, color=_NEUTRAL_COLOR, linestyle=":", label="P99")
    if sla_ms is not None:
        ax.axvline(sla_ms, color=_INFEASIBLE_COLOR, linestyle="--", label=f"SLA {sla_ms:g} ms")
    ax.set_xlabel("latency (ms)")
    ax.set_ylabel("fraction of requests")
    ax.set_ylim(0, 1.01)
    ax.set_title("Latency CDF")
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    fig.savefig(path)


# -- the whole report -----------------------------------------------------------------------------
@dataclass(frozen=True, kw_only=True)
class Report:
    """What ``write_report`` produced: the data, the files and what it skipped (and why)."""

    frame: pd.DataFrame
    summary: str  # the Markdown of summary.md
    study_summary: StudySummary
    files: list[Path] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)


def write_report(study: optuna.Study, out_dir: Path, *, artifact_dir: Path | None = None) -> Report:
    """Write trials.csv/json, summary.md and the PNG plots of ``study`` into ``out_dir``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    df = trials_frame(study)
    study_summary = summarize(study)
    sla_ms = study_summary.sla_ms
    best = study_summary.best.number if study_summary.best is not None else None
    summary = markdown_summary(study_summary)
    files: list[Path] = []
    skipped: dict[str, str] = {}

    def target(name: str) -> Path:
        files.append(out_dir / name)
        return out_dir / name

    write_csv(df, target(CSV_FILE))
    write_json(df, target(JSON_FILE))
    target(SUMMARY_FILE).write_text(summary)
    if len(measured(df)):
        plot_tradeoff(df, target(TRADEOFF_PNG), sla_ms=sla_ms, best=best)
        plot_history(df, target(HISTORY_PNG))
    else:
        skipped[TRADEOFF_PNG] = skipped[HISTORY_PNG] = "no trial was measured"
    evaluator = importance_evaluator()
    importances, reason = param_importances(study, evaluator=evaluator)
    if importances:
        plot_importances(importances, target(IMPORTANCE_PNG), evaluator=evaluator)
    else:
        skipped[IMPORTANCE_PNG] = reason or "no importances"
    curves, reason = _cdf_curves(study, study_summary, artifact_dir or study_artifact_dir(study))
    if curves:
        plot_latency_cdf(curves, target(CDF_PNG), sla_ms=sla_ms)
    else:
        skipped[CDF_PNG] = reason
    return Report(
        frame=df, summary=summary, study_summary=study_summary, files=files, skipped=skipped
    )


def _cdf_curves(
    study: optuna.Study, summary: StudySummary, artifact_dir: Path | None
) -> tuple[dict[str, npt.NDArray[np.float64]], str]:
    if artifact_dir is None:
        return {}, "the study has no artifact_dir (raw latencies are stored there)"
    picks: list[tuple[str, int]] = []
    best = summary.best.number if summary.best is not None else None
    if best is not None:
        picks.append((f"best #{best}", best))
    baseline = summary.baseline
    if baseline is not None and baseline.number != best:
        picks.append((f"TorchServe default #{baseline.number}", baseline.number))
    curves = _load_curves(study, picks, artifact_dir)
    if not curves:
        return {}, "no raw latencies stored for the best trial or the baseline"
    return curves, ""


def _load_curves(
    study: optuna.Study, picks: Sequence[tuple[str, int]], artifact_dir: Path
) -> dict[str, npt.NDArray[np.float64]]:
    curves: dict[str, npt.NDArray[np.float64]] = {}
    for label, number in picks:
        latencies = load_latencies(study, number, artifact_dir)
        if latencies is not None and latencies.size:
            curves[label] = latencies
    return curves
