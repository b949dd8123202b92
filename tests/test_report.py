"""The report's data (DataFrame, Pareto front, summary, importances) and its renderers."""

from __future__ import annotations

import io
import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import optuna
import pandas as pd
import pytest
from matplotlib.image import imread
from optuna.distributions import CategoricalDistribution, IntDistribution
from optuna.trial import TrialState, create_trial
from optuna_dashboard import get_note
from rich.console import Console

from autotune.results import (
    CDF_PNG,
    CSV_FILE,
    HISTOGRAM_FILE,
    HISTORY_PNG,
    IMPORTANCE_PNG,
    JSON_FILE,
    LATENCIES_FILE,
    SUMMARY_FILE,
    TRADEOFF_PNG,
    load_latencies,
    markdown_summary,
    param_importances,
    pareto_frame,
    save_study_note,
    save_trial_artifacts,
    study_note,
    summarize,
    summary_rows,
    trials_frame,
    trials_table,
    write_report,
)
from autotune.serving import CONFIG_PROPERTIES_FILE
from autotune.space import TrialConfig
from autotune.study import schema as A
from autotune.study import set_sla_constraint

SLA_MS = 100.0
DISTRIBUTIONS = {
    "device": CategoricalDistribution(["cpu", "cuda"]),
    "workers": IntDistribution(1, 8),
    "batch_size": CategoricalDistribution([1, 2, 4, 8, 16]),
    "max_batch_delay_ms": IntDistribution(0, 50),
    "torchscript": CategoricalDistribution([False, True]),
}


def new_study(tmp_path: Path, name: str = "quick-p99-100ms") -> optuna.Study:
    study = optuna.create_study(
        study_name=name, storage=f"sqlite:///{tmp_path / 'study.db'}", direction="maximize"
    )
    study.set_user_attr(A.STUDY_SLA_MS, SLA_MS)
    study.set_user_attr(A.STUDY_MODEL, "quick")
    study.set_user_attr(A.STUDY_ARTIFACT_DIR, str(tmp_path / "artifacts"))
    return study


def add_trial(
    study: optuna.Study,
    *,
    throughput: float,
    p99: float | None,
    device: str = "cpu",
    workers: int = 1,
    batch_size: int = 1,
    delay: int = 10,
    torchscript: bool = False,
    baseline: bool = False,
    failure: str | None = None,
    latencies: np.ndarray[Any, Any] | None = None,
) -> int:
    config = TrialConfig(
        device=device,  # type: ignore[arg-type]
        workers=workers,
        batch_size=batch_size,
        max_batch_delay_ms=delay,
        torchscript=torchscript,
    )
    ok = failure is None and p99 is not None
    constraint = A.constraint_value(p99 if p99 is not None else math.nan, SLA_MS, ok=ok)
    feasible = constraint <= 0
    verdict = "failed" if failure else ("feasible" if feasible else "over_sla")
    user_attrs: dict[str, Any] = {
        A.CONFIG: config.as_dict(),
        A.THROUGHPUT_RPS: throughput if feasible else 0.0,
        A.P50_MS: None if p99 is None else p99 / 2,
        A.P99_MS: p99,
        A.REQUESTS: 1000,
        A.ERRORS: 0,
        A.SLA_MS: SLA_MS,
        A.VERDICT: verdict,
    }
    if baseline:
        user_attrs[A.BASELINE] = True
    if failure:
        user_attrs[A.FAILURE] = failure
    params = {
        "device": device,
        "workers": workers,
        "batch_size": batch_size,
        "max_batch_delay_ms": delay,
        "torchscript": torchscript,
    }
    # The tuner's flow: ask, set attrs and the legacy constraint, attach artifacts, tell.
    study.enqueue_trial(params)
    trial = study.ask(DISTRIBUTIONS)
    for key, value in user_attrs.items():
        trial.set_user_attr(key, value)
    set_sla_constraint(trial, constraint)
    if latencies is not None:
        save_trial_artifacts(
            study,
            trial,
            artifact_dir=Path(study.user_attrs[A.STUDY_ARTIFACT_DIR]),
            config_properties=f"# trial {trial.number}\nbatch_size={batch_size}\n",
            latencies_ms=latencies,
        )
    study.tell(trial, throughput if feasible else 0.0)
    return trial.number


def sample_study(tmp_path: Path, *, with_latencies: bool = False) -> optuna.Study:
    """#0 baseline 100 req/s @ 60 ms; #1 best 400 @ 80; #2 dominated 150 @ 90;
    #3 over the SLA; #4 failed; #5 a cuda trial over the SLA."""
    study = new_study(tmp_path)
    rng = np.random.default_rng(0)
    # the baseline had 5 errored requests (+inf in the raw latencies)
    base = np.append(rng.gamma(4.0, 10.0, 2000), [np.inf] * 5) if with_latencies else None
    best = rng.gamma(6.0, 8.0, 3000) if with_latencies else None
    add_trial(study, throughput=100.0, p99=60.0, workers=2, baseline=True, latencies=base)
    add_trial(
        study,
        throughput=400.0,
        p99=80.0,
        workers=2,
        batch_size=4,
        torchscript=True,
        latencies=best,
    )
    add_trial(study, throughput=150.0, p99=90.0, workers=1, batch_size=2)
    add_trial(study, throughput=0.0, p99=250.0, workers=4, batch_size=16, delay=50)
    add_trial(study, throughput=0.0, p99=None, workers=8, failure="worker process died")
    add_trial(study, throughput=0.0, p99=130.0, device="cuda", workers=1)
    return study


# -- data ------------------------------------------------------------------------------------------
def test_trials_frame_has_params_attrs_and_feasibility(tmp_path: Path) -> None:
    df = trials_frame(sample_study(tmp_path))
    assert list(df["number"]) == [0, 1, 2, 3, 4, 5]
    assert list(df["feasible"]) == [True, True, True, False, False, False]
    assert list(df[A.BASELINE]) == [True, False, False, False, False, False]
    assert df.loc[1, "constraint"] == pytest.approx(-20.0)
    assert df.loc[4, "constraint"] == pytest.approx(A.CONSTRAINT_CAP_X_SLA * SLA_MS)
    assert df.loc[4, A.FAILURE] == "worker process died"
    p99 = df.loc[4, A.P99_MS]
    assert isinstance(p99, float) and math.isnan(p99)
    for column in ("params_workers", "params_batch_size", "config_torchscript", "label"):
        assert column in df.columns
    for column in (A.P90_MS, A.P999_MS, A.IDLE_LATENCY_MS, A.REUSED_FROM):  # absent: still there
        assert column in df.columns
    assert (
        df.loc[1, "label"]
        == TrialConfig(workers=2, batch_size=4, max_batch_delay_ms=10, torchscript=True).label()
    )
    assert list(df["device"]) == ["cpu"] * 5 + ["cuda"]


def test_pareto_front_keeps_only_undominated_trials(tmp_path: Path) -> None:
    df = trials_frame(sample_study(tmp_path))
    # 150 @ 90 is beaten by 400 @ 80; the over-SLA ones by everything; the failed one has no P99.
    assert list(pareto_frame(df)["number"]) == [0, 1]


def test_pareto_front_on_known_points() -> None:
    df = pd.DataFrame(
        {
            "number": range(6),
            "state": ["COMPLETE"] * 5 + ["FAIL"],
            A.P99_MS: [10.0, 20.0, 20.0, 30.0, 5.0, 1.0],
            A.THROUGHPUT_RPS: [100.0, 300.0, 200.0, 300.0, 0.0, 999.0],
        }
    )
    # 3 ties with 1 on throughput but is slower; 2 is beaten by 1; 5 is not COMPLETE.
    assert list(pareto_frame(df)["number"]) == [4, 0, 1]


def test_summary_rows_per_device_with_speedup(tmp_path: Path) -> None:
    rows = summary_rows(summarize(sample_study(tmp_path)))
    assert [(r.device, r.role, r.trial) for r in rows] == [
        ("cpu", "default", 0),
        ("cpu", "best", 1),
        ("cuda", "none", None),
    ]
    assert rows[0].speedup == pytest.approx(1.0)
    assert rows[1].speedup == pytest.approx(4.0)
    assert rows[2].p99_ms == pytest.approx(130.0)


def test_markdown_summary_reads_like_the_article_table(tmp_path: Path) -> None:
    text = markdown_summary(summarize(sample_study(tmp_path)))
    assert "| device | configuration | trial | P99 (ms) | throughput (req/s) | speed-up |" in text
    assert "| cpu | best: `cpu/fp32/ts w2 b4 d10ms t0` | 1 | 80.0 | 400.0 | 4.00x |" in text
    assert "| cpu | TorchServe default: `cpu/fp32/eager w2 b1 d10ms t0` | 0 | 60.0 | 100.0" in text
    assert "| cuda | `no trial met the SLA` | - | 130.0 | - | - |" in text
    assert "3 within the SLA" in text


def test_param_importances_need_enough_feasible_trials(tmp_path: Path) -> None:
    study = sample_study(tmp_path)
    importances, reason = param_importances(study)
    assert importances == {}
    assert reason is not None and "at least 5 feasible trials" in reason and "has 3" in reason


def test_param_importances_on_feasible_trials(tmp_path: Path) -> None:
    study = new_study(tmp_path)
    for i in range(12):
        workers = 1 + i % 4
        add_trial(
            study,
            throughput=50.0 * workers + i % 3,
            p99=50.0,
            workers=workers,
            batch_size=[1, 2, 4][i % 3],
            delay=i,
        )
    add_trial(study, throughput=0.0, p99=500.0, workers=8)  # infeasible: left out
    importances, reason = param_importances(study)
    assert reason is None
    assert set(importances) >= {"workers", "batch_size"}
    assert max(importances, key=lambda k: importances[k]) == "workers"


# -- renderers -------------------------------------------------------------------------------------
def test_trials_table_marks_feasible_and_sorts_by_throughput(tmp_path: Path) -> None:
    console = Console(file=io.StringIO(), width=160, color_system=None)
    console.print(trials_table(summarize(sample_study(tmp_path))))
    lines = [line for line in console.file.getvalue().splitlines() if "│" in line]  # type: ignore[attr-defined]
    rows = [[c.strip() for c in line.split("│")[1:-1]] for line in lines]
    assert [r[0] for r in rows] == ["1", "2", "0", "5", "3", "4"]
    assert [r[1] for r in rows] == ["✓", "✓", "✓", "✗", "✗", "failed"]
    assert rows[0][3] == "400.0" and rows[0][4] == "80.0" and rows[0][6] == "best"
    assert rows[2][6] == "TorchServe default"
    assert rows[5][4] == "-" and "worker process died" in rows[5][6]
    assert "SLA P99 <= 100 ms" in console.file.getvalue()  # type: ignore[attr-defined]


def test_write_report_writes_every_file(tmp_path: Path) -> None:
    study = sample_study(tmp_path, with_latencies=True)
    out = tmp_path / "report"
    report = write_report(study, out)

    names = sorted(p.name for p in report.files)
    assert names == sorted([CSV_FILE, JSON_FILE, SUMMARY_FILE, TRADEOFF_PNG, HISTORY_PNG, CDF_PNG])
    assert set(report.skipped) == {IMPORTANCE_PNG}
    for png in (TRADEOFF_PNG, HISTORY_PNG, CDF_PNG):
        image = imread(out / png)
        assert image.shape[0] > 300 and image.shape[1] > 500
    csv = pd.read_csv(out / CSV_FILE)
    assert list(csv["number"]) == list(range(6))
    assert list(csv["feasible"]) == [True, True, True, False, False, False]
    records = json.loads((out / JSON_FILE).read_text())
    assert records[1][A.THROUGHPUT_RPS] == 400.0 and records[4][A.P99_MS] is None
    assert "4.00x" in (out / SUMMARY_FILE).read_text()


def test_write_report_without_latencies_skips_the_cdf(tmp_path: Path) -> None:
    report = write_report(sample_study(tmp_path), tmp_path / "report")
    assert "no raw latencies" in report.skipped[CDF_PNG]


def test_write_report_on_a_study_without_measurements(tmp_path: Path) -> None:
    study = new_study(tmp_path)
    add_trial(study, throughput=0.0, p99=None, failure="model load failed")
    report = write_report(study, tmp_path / "report")
    assert {TRADEOFF_PNG, HISTORY_PNG, IMPORTANCE_PNG, CDF_PNG} <= set(report.skipped)
    assert (tmp_path / "report" / CSV_FILE).exists()


def test_report_of_an_empty_study(tmp_path: Path) -> None:
    study = new_study(tmp_path)
    report = write_report(study, tmp_path / "report")
    assert report.frame.empty and "Trials: 0 complete, 0 within the SLA" in report.summary
    assert "No trial met the SLA" in study_note(study)


def test_report_command_prints_the_table_and_writes_files(tmp_path: Path) -> None:
    import typer
    from typer.testing import CliRunner

    from autotune.cli._results import report

    sample_study(tmp_path)
    app = typer.Typer()
    app.command("report")(report)
    app.command("noop")(lambda: None)
    out = tmp_path / "cli-report"
    storage = f"sqlite:///{tmp_path / 'study.db'}"
    result = CliRunner().invoke(app, ["report", "--storage", storage, "-o", str(out)])
    assert result.exit_code == 0, result.output
    assert "Trials (SLA P99 <= 100 ms)" in result.output and "4.00x" in result.output
    assert f"skipped {IMPORTANCE_PNG}: parameter importances need at least 5" in result.output
    assert (out / CSV_FILE).is_file() and (out / TRADEOFF_PNG).is_file()


# -- artifacts and the study note ------------------------------------------------------------------
def test_trial_artifacts_round_trip(tmp_path: Path) -> None:
    study = new_study(tmp_path)
    latencies = np.array([12.5, 14.25, 99.125, 30.0])
    number = add_trial(study, throughput=100.0, p99=99.0, latencies=latencies)
    add_trial(study, throughput=100.0, p99=99.0)
    artifact_dir = tmp_path / "artifacts"
    metas = optuna.artifacts.get_all_artifact_meta(study.trials[number], storage=study._storage)
    by_name = {m.filename: m for m in metas}
    assert set(by_name) == {CONFIG_PROPERTIES_FILE, LATENCIES_FILE, HISTOGRAM_FILE}
    assert by_name[HISTOGRAM_FILE].mimetype == "image/png"
    assert by_name[LATENCIES_FILE].mimetype == "text/csv"
    assert by_name[CONFIG_PROPERTIES_FILE].mimetype == "text/plain"
    loaded = load_latencies(study, number, artifact_dir)
    assert loaded is not None
    np.testing.assert_allclose(loaded, latencies)
    assert load_latencies(study, number + 1, artifact_dir) is None


def test_trial_artifacts_keep_errored_requests_as_inf(tmp_path: Path) -> None:
    study = new_study(tmp_path)
    latencies = np.array([20.0, np.inf, 35.5, np.inf])
    number = add_trial(study, throughput=0.0, p99=300.0, latencies=latencies)
    loaded = load_latencies(study, number, tmp_path / "artifacts")
    assert loaded is not None
    np.testing.assert_array_equal(loaded, latencies)
    only_errors = add_trial(study, throughput=0.0, p99=300.0, latencies=np.full(3, np.inf))
    metas = optuna.artifacts.get_all_artifact_meta(
        study.trials[only_errors], storage=study._storage
    )
    assert HISTOGRAM_FILE in {m.filename for m in metas}


def test_trial_artifacts_without_latencies_skip_the_histogram(tmp_path: Path) -> None:
    study = new_study(tmp_path)
    number = add_trial(study, throughput=0.0, p99=300.0, latencies=np.array([]))
    metas = optuna.artifacts.get_all_artifact_meta(study.trials[number], storage=study._storage)
    assert {m.filename for m in metas} == {CONFIG_PROPERTIES_FILE, LATENCIES_FILE}
    loaded = load_latencies(study, number, tmp_path / "artifacts")
    assert loaded is not None and loaded.size == 0


def test_trial_artifacts_need_a_running_trial(tmp_path: Path) -> None:
    study = sample_study(tmp_path)
    with pytest.raises(ValueError, match=r"trial 1 is COMPLETE: .*only to running trials"):
        save_trial_artifacts(
            study, 1, artifact_dir=tmp_path / "a", config_properties="", latencies_ms=np.ones(3)
        )


def test_study_note_summarises_the_best_trial(tmp_path: Path) -> None:
    study = sample_study(tmp_path)
    save_study_note(study)
    note = get_note(study)
    assert note == study_note(study)
    assert "SLA: P99 <= 100 ms" in note
    assert "Best: trial 1" in note
    assert "**400.0 req/s** at P99 **80.0 ms**" in note
    assert "**4.00x**" in note
    assert "| batch_size | 4 |" in note


def test_study_note_without_a_feasible_trial(tmp_path: Path) -> None:
    study = new_study(tmp_path)
    add_trial(study, throughput=0.0, p99=180.0, baseline=True)
    add_trial(study, throughput=0.0, p99=150.0)
    note = study_note(study)
    assert "No trial met the SLA" in note and "150.0 ms" in note


def test_running_trials_are_listed_but_never_feasible(tmp_path: Path) -> None:
    study = sample_study(tmp_path)
    study.add_trial(create_trial(state=TrialState.RUNNING))
    df = trials_frame(study)
    assert df.loc[6, "state"] == "RUNNING" and not df.loc[6, "feasible"]
