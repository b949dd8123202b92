"""`autotune run` end to end on the quick model: a real TorchServe, real requests, real storage."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from autotune.serving import ExportedServer, free_port
from autotune.space import TrialConfig
from autotune.study import schema as A

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("no_orphans")]

TRIALS = 4


def autotune(*args: str, cwd: Path, timeout: float = 900) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "autotune", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """One real study of TRIALS trials, shared by the assertions below."""
    cwd = tmp_path_factory.mktemp("run")
    storage = f"sqlite:///{cwd / 'x.db'}"
    proc = autotune(
        "run", "--model", "quick", "--sla-ms", "100", "--trials", str(TRIALS),
        "--storage", storage, "--study", "it", "--seed", "1", "--confirm", "0",
        cwd=cwd,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return cwd, storage


def test_trials_are_stored_with_their_measurements(quick_run: tuple[Path, str]) -> None:
    _, storage = quick_run
    study = optuna.load_study(study_name="it", storage=storage)
    done = study.get_trials(states=(TrialState.COMPLETE,))
    assert len(done) == TRIALS
    assert not study.get_trials(states=(TrialState.RUNNING,))
    assert done[0].user_attrs[A.BASELINE] is True
    for trial in done:
        attrs = trial.user_attrs
        assert set(attrs) >= {A.CONFIG, A.P50_MS, A.P90_MS, A.P99_MS, A.REQUESTS, A.VERDICT}
        assert list(trial.system_attrs[A.CONSTRAINTS_SYSTEM_ATTR])  # legacy form: dashboard
        if attrs[A.VERDICT] == "feasible":
            assert 0 < attrs[A.P50_MS] <= attrs[A.P99_MS] <= 100
            assert trial.value is not None and trial.value > 0
            assert trial.value == pytest.approx(attrs[A.THROUGHPUT_RPS])
            # a P99 verdict needs real samples: probes and steps of several seconds each
            assert attrs[A.REQUESTS] >= 50
    assert study.user_attrs[A.STUDY_SLA_MS] == 100


def test_a_feasible_best_trial_exists(quick_run: tuple[Path, str]) -> None:
    _, storage = quick_run
    study = optuna.load_study(study_name="it", storage=storage)
    best = study.best_trial
    assert best.user_attrs[A.P99_MS] <= 100
    assert best.constraints and max(best.constraints.values()) <= 0
    assert best.value is not None and best.value > 0


def test_run_prints_best_configuration(quick_run: tuple[Path, str]) -> None:
    cwd, storage = quick_run
    # Running again resumes: the study holds TRIALS complete trials already, nothing is added.
    proc = autotune(
        "run", "--model", "quick", "--sla-ms", "100", "--trials", str(TRIALS),
        "--storage", storage, "--study", "it", "--confirm", "0", cwd=cwd, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert "Best configuration" in proc.stdout
    study = optuna.load_study(study_name="it", storage=storage)
    assert len(study.get_trials(states=(TrialState.COMPLETE,))) == TRIALS


def test_torchserve_serves_the_export_of_the_best_trial(quick_run: tuple[Path, str]) -> None:
    """`autotune export` of the real study; TorchServe starts from it as is and reports the
    best trial's batch size, delay and workers through the Management API."""
    cwd, storage = quick_run
    ports = [str(free_port()) for _ in range(3)]
    proc = autotune(
        "export", "--storage", storage, "--study", "it", "-o", "deploy",
        "--inference-port", ports[0], "--management-port", ports[1], "--metrics-port", ports[2],
        cwd=cwd, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    best = optuna.load_study(study_name="it", storage=storage).best_trial
    config = TrialConfig.from_dict(best.user_attrs[A.CONFIG])
    with ExportedServer(cwd / "deploy", workdir=cwd / "serve") as server:
        described = server.wait_model_ready("quick")
        assert described["batchSize"] == config.batch_size
        assert described["maxBatchDelay"] == max(1, config.max_batch_delay_ms)
        assert described["minWorkers"] == described["maxWorkers"] == config.workers
        assert len(described["workers"]) == config.workers
