"""How the run command's load flags become the settings of the run (no server started)."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

import autotune.cli._progress as progress
from autotune import RunSettings
from autotune.cli import app, main
from autotune.loadgen import GoodputSettings, slow_model_settings


def captured(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, *flags: str) -> RunSettings:
    seen: list[RunSettings] = []
    monkeypatch.setattr(progress, "run_with_progress", lambda s, console: seen.append(s))
    storage = f"sqlite:///{tmp_path / 'a.db'}"
    result = CliRunner().invoke(app, ["run", "--sla-ms", "100", "--storage", storage, *flags])
    assert result.exit_code == 0, result.output
    (settings,) = seen
    return settings


def test_the_default_load_fits_fast_models(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    load = captured(monkeypatch, tmp_path).load
    assert load == GoodputSettings(warmup_requests=2)
    assert load.capacity_concurrency == 32 and load.undecided_min_samples == 200


def test_a_new_server_is_warmed_for_30_s_unless_told(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    assert captured(monkeypatch, tmp_path).server_warmup_s == 30.0
    assert captured(monkeypatch, tmp_path, "--server-warmup-s", "0").server_warmup_s == 0.0


def test_slow_model_takes_the_slow_settings(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    load = captured(monkeypatch, tmp_path, "--slow-model").load
    assert load == slow_model_settings()
    assert load.capacity_concurrency == 8 and load.undecided_min_samples == 15
    assert load.drain_max_s == 60.0 and load.step_max_s == 30.0


def test_step_s_applies_to_the_slow_settings_too(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    load = captured(monkeypatch, tmp_path, "--slow-model", "--step-s", "40").load
    assert load.step_max_s == 40.0 and load.capacity_concurrency == 8


def test_a_step_longer_than_the_slow_cap_raises_the_cap(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    load = captured(monkeypatch, tmp_path, "--slow-model", "--step-s", "90").load
    assert load.step_max_s == 90.0 and load.step_long_s == 90.0


@pytest.mark.parametrize(
    ("flag", "value"), [("--step-s", "0"), ("--trial-budget-s", "-1")], ids=["step", "budget"]
)
def test_a_duration_that_is_not_positive_is_one_clear_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], flag: str, value: str
) -> None:
    storage = f"sqlite:///{tmp_path / 'a.db'}"
    assert main(["run", "--sla-ms", "100", "--storage", storage, flag, value]) == 1
    line = capsys.readouterr().err.strip()
    assert line == f"autotune: error: {flag} must be a positive number of seconds, got {value}"
    assert not (tmp_path / "a.db").exists()


def test_trial_budget_is_the_searchs_time_budget(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    assert captured(monkeypatch, tmp_path, "--trial-budget-s", "20").load.time_budget_s == 20.0
    slow = captured(monkeypatch, tmp_path, "--slow-model", "--trial-budget-s", "300").load
    assert slow.time_budget_s == 300.0 and slow.capacity_concurrency == 8
