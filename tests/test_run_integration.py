"""`autotune run` end to end on the quick model: a real TorchServe, real requests, real storage.

One study (module-scoped): three search trials, then the best two feasible configurations
measured once more each (confirmation); the assertions below read it, resume it, export it, and
start TorchServe from the export: the export is the confirmed winner.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import optuna
import pytest
from optuna.trial import FrozenTrial, TrialState

from autotune.serving import ExportedServer, free_port
from autotune.space import TrialConfig
from autotune.study import confirmed_winner, is_confirmation
from autotune.study import schema as A

pytestmark = [pytest.mark.integration, pytest.mark.measures, pytest.mark.usefixtures("no_orphans")]

TRIALS = 3
STUDY = "it"


def autotune(*args: str, cwd: Path, timeout: float = 900) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "autotune", *args],
        cwd=cwd, capture_output=True, text=True, timeout=timeout,
        env={**os.environ, "AUTOTUNE_HOST_DIR": str(cwd / "host")},
    )  # fmt: skip


@dataclass(frozen=True)
class QuickRun:
    cwd: Path
    storage: str
    args: tuple[str, ...]
    proc: subprocess.CompletedProcess[str]

    def trials(self) -> list[FrozenTrial]:
        study = optuna.load_study(study_name=STUDY, storage=self.storage)
        return study.get_trials(states=(TrialState.COMPLETE,))


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory: pytest.TempPathFactory) -> QuickRun:
    """One real study, shared by the assertions below. The goodput search keeps its default
    time budget (45 s): on a slow host the quick model is near the 100 ms SLA, and 20 s found
    no passing rate in three trials."""
    cwd = tmp_path_factory.mktemp("run")
    storage = f"sqlite:///{cwd / 'x.db'}"
    args = (
        "run", "--model", "quick", "--sla-ms", "100", "--trials", str(TRIALS),
        "--storage", storage, "--study", STUDY, "--seed", "1", "--step-s", "2",
        "--confirm", "2", "--repeats", "1", "--server-warmup-s", "5",
    )  # fmt: skip
    proc = autotune(*args, cwd=cwd)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return QuickRun(cwd, storage, args, proc)


def test_trials_are_stored_with_their_measurements(quick_run: QuickRun) -> None:
    study = optuna.load_study(study_name=STUDY, storage=quick_run.storage)
    done = quick_run.trials()
    assert len([t for t in done if not is_confirmation(t)]) == TRIALS
    assert not study.get_trials(states=(TrialState.RUNNING,))
    assert done[0].user_attrs[A.BASELINE] is True
    for trial in done:
        attrs = trial.user_attrs
        seen = f"trial {trial.number}: value {trial.value}, attrs {attrs}"  # what CI shows
        assert set(attrs) >= {A.CONFIG, A.P50_MS, A.P90_MS, A.P99_MS, A.REQUESTS, A.VERDICT}, seen
        assert list(trial.system_attrs[A.CONSTRAINTS_SYSTEM_ATTR])  # legacy form: dashboard
        if attrs[A.VERDICT] == "feasible":
            assert 0 < attrs[A.P50_MS] <= attrs[A.P99_MS] <= 100, seen
            assert trial.value is not None and trial.value > 0, seen
            assert trial.value == pytest.approx(attrs[A.THROUGHPUT_RPS]), seen
            # a P99 verdict needs real samples: probes and steps of several seconds each
            assert attrs[A.REQUESTS] >= 50, seen
    assert study.user_attrs[A.STUDY_SLA_MS] == 100
    best = study.best_trial
    seen = f"best trial {best.number}: value {best.value}, attrs {best.user_attrs}"
    assert best.user_attrs[A.P99_MS] <= 100, seen
    assert best.constraints and max(best.constraints.values()) <= 0, seen
    assert best.value is not None and best.value > 0, seen


def test_the_top_configurations_are_measured_again_and_the_winner_stored(
    quick_run: QuickRun,
) -> None:
    trials = quick_run.trials()
    search = [t for t in trials if not is_confirmation(t)]
    confirmations = [t for t in trials if is_confirmation(t)]
    feasible = sorted(
        (t for t in search if t.user_attrs.get(A.VERDICT) == "feasible"),
        key=lambda t: -(t.value or 0),
    )
    assert feasible, quick_run.proc.stdout[-3000:]
    assert sorted(t.user_attrs[A.CONFIRMATION_OF] for t in confirmations) == sorted(
        t.number for t in feasible[:2]
    )
    for trial in confirmations:
        origin = next(t for t in search if t.number == trial.user_attrs[A.CONFIRMATION_OF])
        assert trial.user_attrs[A.CONFIG] == origin.user_attrs[A.CONFIG]
        assert A.REUSED_FROM not in trial.user_attrs  # measured again, not reused
        assert trial.user_attrs[A.REQUESTS] >= 50
        assert len(trial.user_attrs[A.REPLICATES_RPS]) == 2
    winner = confirmed_winner(trials)
    assert winner is not None
    study = optuna.load_study(study_name=STUDY, storage=quick_run.storage)
    assert study.user_attrs[A.STUDY_WINNER]["trial"] == winner.trial
    assert "Best configuration" in quick_run.proc.stdout


def test_running_again_resumes_and_measures_nothing(quick_run: QuickRun) -> None:
    before = len(optuna.load_study(study_name=STUDY, storage=quick_run.storage).get_trials())
    again = autotune(*quick_run.args, cwd=quick_run.cwd, timeout=300)
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    assert "Best configuration" in again.stdout
    after = optuna.load_study(study_name=STUDY, storage=quick_run.storage).get_trials()
    assert len(after) == before


def test_torchserve_serves_the_export_of_the_confirmed_winner(quick_run: QuickRun) -> None:
    """`autotune export` of the real study is its confirmed winner; TorchServe starts from it as
    is and reports the winner's batch size, delay and workers through the Management API."""
    cwd = quick_run.cwd
    ports = [str(free_port()) for _ in range(3)]
    proc = autotune(
        "export", "--storage", quick_run.storage, "--study", STUDY, "-o", "deploy",
        "--inference-port", ports[0], "--management-port", ports[1], "--metrics-port", ports[2],
        cwd=cwd, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    trials = quick_run.trials()
    winner = confirmed_winner(trials)
    assert winner is not None
    match = re.search(r"Exported trial (\d+)", proc.stdout)
    assert match is not None, proc.stdout
    assert int(match.group(1)) == winner.trial
    header = (cwd / "deploy" / "config.properties").read_text()
    assert f"measured: {winner.confirmed_rps:.1f} req/s confirmed (" in header, header[:600]
    chosen = next(t for t in trials if t.number == winner.trial)
    config = TrialConfig.from_dict(chosen.user_attrs[A.CONFIG])
    with ExportedServer(cwd / "deploy", workdir=cwd / "serve") as server:
        described = server.wait_model_ready("quick")
        assert described["batchSize"] == config.batch_size
        assert described["maxBatchDelay"] == max(1, config.max_batch_delay_ms)
        assert described["minWorkers"] == described["maxWorkers"] == config.workers
        assert len(described["workers"]) == config.workers
