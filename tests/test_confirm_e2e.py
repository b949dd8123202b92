"""`autotune run` with confirmation on the quick model, end to end: a real TorchServe, real
load, real storage; the export is the confirmed winner."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from autotune.study import confirmed_winner, is_confirmation
from autotune.study import schema as A

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("no_orphans")]


def autotune(*args: str, cwd: Path, timeout: float = 900) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "autotune", *args],
        cwd=cwd, capture_output=True, text=True, timeout=timeout,
        env={**os.environ, "AUTOTUNE_HOST_DIR": str(cwd / "host")},
    )  # fmt: skip


def test_a_run_confirms_its_top_configurations_and_exports_the_confirmed_winner(
    tmp_path: Path,
) -> None:
    storage = f"sqlite:///{tmp_path / 'x.db'}"
    common = ("--model", "quick", "--sla-ms", "100", "--trials", "3", "--storage", storage,
              "--study", "c", "--seed", "1", "--step-s", "2")  # fmt: skip
    proc = autotune("run", *common, "--confirm", "2", "--repeats", "1", cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    study = optuna.load_study(study_name="c", storage=storage)
    trials = study.get_trials(states=(TrialState.COMPLETE,))
    search = [t for t in trials if not is_confirmation(t)]
    confirmations = [t for t in trials if is_confirmation(t)]
    assert len(search) == 3
    feasible = sorted(
        (t for t in search if t.user_attrs.get(A.VERDICT) == "feasible"),
        key=lambda t: -(t.value or 0),
    )
    assert feasible, proc.stdout[-3000:]
    expected = feasible[:2]
    assert sorted(t.user_attrs[A.CONFIRMATION_OF] for t in confirmations) == sorted(
        t.number for t in expected
    )
    for trial in confirmations:
        origin = next(t for t in search if t.number == trial.user_attrs[A.CONFIRMATION_OF])
        assert trial.user_attrs[A.CONFIG] == origin.user_attrs[A.CONFIG]
        assert A.REUSED_FROM not in trial.user_attrs  # measured again, not reused
        assert trial.user_attrs[A.REQUESTS] >= 50
        assert len(trial.user_attrs[A.REPLICATES_RPS]) == 2
    winner = confirmed_winner(trials)
    assert winner is not None
    assert study.user_attrs[A.STUDY_WINNER]["trial"] == winner.trial

    # Resumed: nothing is measured again (the confirmations are stored).
    again = autotune("run", *common, "--confirm", "2", "--repeats", "1", cwd=tmp_path)
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    assert len(optuna.load_study(study_name="c", storage=storage).get_trials()) == len(trials)

    exported = autotune(
        "export", "--storage", storage, "--study", "c", "-o", str(tmp_path / "deploy"),
        "--no-archive", cwd=tmp_path, timeout=300,
    )  # fmt: skip
    assert exported.returncode == 0, exported.stdout[-3000:] + exported.stderr[-3000:]
    match = re.search(r"Exported trial (\d+)", exported.stdout)
    assert match is not None, exported.stdout
    assert int(match.group(1)) == winner.trial
    header = (tmp_path / "deploy" / "config.properties").read_text()
    assert f"measured: {winner.confirmed_rps:.1f} req/s confirmed (" in header, header[:600]
