"""One summary of a study: the best, the ranking, the baseline, the speed-up, the fastest P99,
and confirmation trials folded into the configuration they repeat. Every reader agrees."""

from __future__ import annotations

import io
import math
from pathlib import Path
from typing import Any

import optuna
import pytest
from optuna.distributions import BaseDistribution, IntDistribution
from optuna.trial import create_trial
from rich.console import Console

from autotune._errors import ConfigError
from autotune.cli._progress import verdict_text
from autotune.results import (
    best_feasible_trial,
    markdown_summary,
    study_note,
    summarize,
    summary_rows,
    trials_table,
)
from autotune.space import TrialConfig
from autotune.study import TrialRecord, TrialResult
from autotune.study import schema as A

SLA_MS = 100.0
DISTRIBUTIONS: dict[str, BaseDistribution] = {
    "workers": IntDistribution(1, 8),
    "batch_size": IntDistribution(1, 16),
}


def new_study(tmp_path: Path) -> optuna.Study:
    study = optuna.create_study(
        study_name="quick-p99-100ms",
        storage=f"sqlite:///{tmp_path / 'study.db'}",
        direction="maximize",
    )
    study.set_user_attr(A.STUDY_SLA_MS, SLA_MS)
    study.set_user_attr(A.STUDY_MODEL, "quick")
    return study


def add(
    study: optuna.Study,
    *,
    throughput: float,
    p99: float | None,
    workers: int,
    batch: int = 1,
    baseline: bool = False,
    confirmation_of: int | None = None,
    failure: str | None = None,
    answer_changed: str | None = None,
) -> int:
    """A trial stored as the tuner stores one (through TrialResult.user_attrs)."""
    config = TrialConfig(workers=workers, batch_size=batch)
    ok = failure is None and p99 is not None
    constraint = A.constraint_value(p99 if p99 is not None else math.nan, SLA_MS, ok=ok)
    verdict = "failed" if failure else ("feasible" if constraint <= 0 else "over_sla")
    result = TrialResult(
        config=config,
        verdict=verdict,  # type: ignore[arg-type]
        throughput_rps=throughput if constraint <= 0 else 0.0,
        p99_ms=p99 if p99 is not None else math.nan,
        failure=failure,
    )
    attrs: dict[str, Any] = result.user_attrs(SLA_MS)
    if baseline:
        attrs[A.BASELINE] = True
    if confirmation_of is not None:
        attrs[A.CONFIRMATION_OF] = confirmation_of
    if answer_changed is not None:
        attrs[A.ANSWER_CHANGED] = answer_changed
    study.add_trial(
        create_trial(
            params={"workers": workers, "batch_size": batch},
            distributions=DISTRIBUTIONS,
            value=result.throughput_rps,
            user_attrs=attrs,
            system_attrs={A.CONSTRAINTS_SYSTEM_ATTR: [constraint]},
        )
    )
    return len(study.trials) - 1


def table_rows(summary: Any) -> list[list[str]]:
    console = Console(file=io.StringIO(), width=200, color_system=None)
    console.print(trials_table(summary))
    text = console.file.getvalue()  # type: ignore[attr-defined]
    return [[c.strip() for c in line.split("│")[1:-1]] for line in text.splitlines() if "│" in line]


def test_a_stored_trial_reads_back_through_the_schema(tmp_path: Path) -> None:
    study = new_study(tmp_path)
    add(study, throughput=120.0, p99=80.0, workers=2, batch=4, baseline=True)
    record = TrialRecord.from_frozen(study.trials[0])
    assert record.result is not None and record.feasible and record.baseline
    assert record.result.config == TrialConfig(workers=2, batch_size=4)
    assert record.result.throughput_rps == 120.0 and record.result.p99_ms == 80.0
    assert math.isnan(record.result.p50_ms)  # left out when stored (NaN is not JSON)
    stored = {k: v for k, v in study.trials[0].user_attrs.items() if k != A.BASELINE}
    assert record.result.user_attrs(SLA_MS) == stored  # the inverse of user_attrs
    assert {f.key for f in A.TRIAL_FIELDS} >= set(study.trials[0].user_attrs)


def test_ties_are_broken_once_and_every_reader_names_the_same_best(tmp_path: Path) -> None:
    study = new_study(tmp_path)
    add(study, throughput=100.0, p99=60.0, workers=1, baseline=True)
    add(study, throughput=400.0, p99=80.0, workers=2)
    add(study, throughput=400.0, p99=70.0, workers=3)  # same goodput, lower P99
    add(study, throughput=0.0, p99=150.0, workers=8)
    summary = summarize(study)
    best = study.best_trial.number  # Optuna's answer on the tie stands
    assert summary.best is not None and summary.best.number == best
    assert best_feasible_trial(study).number == best
    assert [r.trial for r in summary_rows(summary) if r.role == "best"] == [best]
    assert f"Best: trial {best}" in study_note(study)
    assert f"(trial {best})" in verdict_text(summary)
    rows = table_rows(summary)
    assert rows[0][0] == str(best) and rows[0][-1] == "best"
    other = 3 - best  # the other of trials 1 and 2
    assert [r[0] for r in rows] == [str(best), str(other), "0", "3"]
    assert summary.speedup == pytest.approx(4.0)


def test_without_a_feasible_trial_the_fastest_p99_and_a_reachable_sla(tmp_path: Path) -> None:
    study = new_study(tmp_path)
    add(study, throughput=0.0, p99=180.0, workers=1, baseline=True)
    add(study, throughput=0.0, p99=135.5, workers=2)
    add(study, throughput=0.0, p99=None, workers=8, failure="worker process died")
    summary = summarize(study)
    assert summary.best is None and summary.speedup is None
    assert summary.fastest is not None and summary.fastest.number == 1
    assert summary.reachable_sla_ms == 150.0  # 135.5 ms + 5 %, rounded up to 10 ms
    assert "Fastest P99: 136 ms" in verdict_text(summary) and "about 150 ms" in verdict_text(
        summary
    )
    assert "The fastest P99 was 135.5 ms" in study_note(study)
    with pytest.raises(
        ConfigError, match=r"met the SLA .*the fastest P99 was 135.5 ms \(trial 1\)"
    ):
        best_feasible_trial(study)


def confirmed_study(tmp_path: Path) -> optuna.Study:
    """#1 measured best (400), but its repeats fall to 300; #2 (380) repeats at 370 and 375."""
    study = new_study(tmp_path)
    add(study, throughput=100.0, p99=60.0, workers=1, baseline=True)
    add(study, throughput=400.0, p99=80.0, workers=2)
    add(study, throughput=380.0, p99=70.0, workers=3)
    add(study, throughput=300.0, p99=85.0, workers=2, confirmation_of=1)
    add(study, throughput=390.0, p99=82.0, workers=2, confirmation_of=1)
    add(study, throughput=370.0, p99=72.0, workers=3, confirmation_of=2)
    add(study, throughput=375.0, p99=71.0, workers=3, confirmation_of=2)
    return study


def test_confirmation_trials_fold_into_their_configuration(tmp_path: Path) -> None:
    study = confirmed_study(tmp_path)
    assert study.best_trial.number == 1  # Optuna's single-measurement best
    summary = summarize(study)
    assert summary.confirmed and summary.confirmation_trials == 4
    assert [line.number for line in summary.trials] == [2, 1, 0]  # no line per confirmation
    assert summary.complete == 3 and summary.feasible == 3
    assert summary.best is not None and summary.best.number == 2
    reps = summary.best.replicates
    assert reps is not None and reps.throughput_rps == (380.0, 370.0, 375.0)
    assert reps.confirmations == (5, 6) and reps.confirmed_rps == 370.0
    assert reps.spread == pytest.approx(380.0 / 370.0)
    assert summary.trials[1].confirmed_rps == 300.0
    assert summary.speedup == pytest.approx(3.7)  # the confirmed figure over the baseline
    assert best_feasible_trial(study).number == 2


def test_confirmed_configurations_rank_by_the_winners_rule(tmp_path: Path) -> None:
    """The table orders confirmed configurations as the winner is chosen (geometric mean), not
    by the confirmed figure shown: #1's mean (361) is above #3's (340), its lowest (300) below."""
    study = confirmed_study(tmp_path)
    add(study, throughput=340.0, p99=60.0, workers=4)  # trial 7
    add(study, throughput=340.0, p99=60.0, workers=4, confirmation_of=7)
    add(study, throughput=340.0, p99=60.0, workers=4, confirmation_of=7)
    summary = summarize(study)
    assert [line.number for line in summary.trials] == [2, 1, 7, 0]
    assert summary.trials[1].confirmed_rps == 300.0 and summary.trials[2].confirmed_rps == 340.0


def test_readers_show_the_confirmed_figure_and_spread(tmp_path: Path) -> None:
    study = confirmed_study(tmp_path)
    summary = summarize(study)
    rows = table_rows(summary)
    assert [r[0] for r in rows] == ["2", "1", "0"]
    assert rows[0][6] == "370.0 (3x, spread 1.03)" and rows[1][6] == "300.0 (3x, spread 1.33)"
    assert rows[0][7] == "best, confirmed by #5, #6" and rows[2][6] == ""
    note = study_note(study)
    assert "Best: trial 2" in note and "confirmed: **370.0 req/s**" in note
    assert "380.0, 370.0, 375.0; spread 1.03x" in note and "**3.70x**" in note
    assert "3 complete, 3 within the SLA (and 4 confirmation trials)" in note
    text = markdown_summary(summary)
    assert "| cpu | best: `cpu/fp32/eager w3 b1 d100ms t0` | 2 | 70.0 | 370.0 | 3.70x |" in text
    assert "| 2 | `cpu/fp32/eager w3 b1 d100ms t0` | 380.0, 370.0, 375.0 | 1.03x | 370.0 |" in text
    assert "confirmed 370.0 (3x, spread 1.03)" in verdict_text(summary)


def test_when_every_confirmation_fails_there_is_no_best(tmp_path: Path) -> None:
    study = new_study(tmp_path)
    add(study, throughput=100.0, p99=60.0, workers=1, baseline=True)
    add(study, throughput=400.0, p99=80.0, workers=2)
    add(study, throughput=0.0, p99=140.0, workers=2, confirmation_of=1)  # missed the SLA
    summary = summarize(study)
    assert summary.confirmed and summary.best is None
    assert [line.number for line in summary.trials] == [0, 1]  # #1 is judged by its 0 repeat
    assert "held P99 <= 100 ms in every confirmation" in verdict_text(summary)
    with pytest.raises(ConfigError, match="held the SLA in every confirmation"):
        best_feasible_trial(study)
    assert [r.role for r in summary_rows(summary)] == ["default", "none"]


def test_a_best_whose_answers_changed_is_flagged_in_the_verdict_and_the_table(
    tmp_path: Path,
) -> None:
    study = new_study(tmp_path)
    add(study, throughput=50.0, p99=60.0, workers=1, baseline=True)
    add(study, throughput=90.0, p99=70.0, workers=2, answer_changed="scores[0] 0.9 != 0.1")
    summary = summarize(study)
    assert summary.best is not None and summary.best.number == 1
    assert summary.best.answer_changed == "scores[0] 0.9 != 0.1"
    text = verdict_text(summary)
    assert "Warning" in text and "scores[0] 0.9 != 0.1" in text
    notes = {row[0]: row[-1] for row in table_rows(summary) if row and row[0].isdigit()}
    assert "answers changed" in notes["1"] and "answers changed" not in notes["0"]
    (tmp_path / "b").mkdir()
    unflagged = new_study(tmp_path / "b")
    add(unflagged, throughput=90.0, p99=70.0, workers=2)
    assert "Warning" not in verdict_text(summarize(unflagged))
