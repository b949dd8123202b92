"""Faults injected into real runs: each trial is recorded with its reason, the study goes on,
and no TorchServe process is left behind."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import optuna
import psutil
import pytest
import sqlalchemy.exc
from optuna.trial import TrialState

from autotune.serving import TorchServe, _server
from autotune.study import schema as A
from tests.conftest import model_server_pids

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("no_orphans")]

HANDLER = Path(__file__).parent / "faults" / "fault_handler.py"
SAMPLE = Path(__file__).parents[1] / "autotune" / "assets" / "quick_sample.jpg"
SPACE = """
parameters:
  device: {choices: [cpu]}
  workers: {low: 1, high: 2}
  batch_size: {choices: [%s]}
  max_batch_delay_ms: {choices: [5]}
"""


def run_args(tmp_path: Path, *, trials: int, batch: str = "1, 2", study: str = "f") -> list[str]:
    space = tmp_path / "space.yaml"
    space.write_text(SPACE % batch)
    return [
        sys.executable, "-m", "autotune", "run", "--model", str(HANDLER), "--input", str(SAMPLE),
        "--sla-ms", "100", "--trials", str(trials), "--space", str(space),
        "--storage", f"sqlite:///{tmp_path / 'f.db'}", "--study", study, "--step-s", "2",
        "--trial-budget-s", "20", "--server-warmup-s", "2",
        "--sampler", "random", "--seed", "0", "--confirm", "0",
    ]  # fmt: skip


def env_with(fault: str, **extra: str) -> dict[str, str]:
    env = dict(os.environ, AUTOTUNE_TEST_FAULT=fault)
    env.update(extra)
    return env


def load(tmp_path: Path, study: str = "f") -> optuna.Study:
    return optuna.load_study(study_name=study, storage=f"sqlite:///{tmp_path / 'f.db'}")


def complete(study: optuna.Study) -> list[optuna.trial.FrozenTrial]:
    return study.get_trials(states=(TrialState.COMPLETE,))


def count(tmp_path: Path, state: TrialState) -> int:
    """Trials in ``state`` so far; 0 while the run has not created its study yet."""
    if not (tmp_path / "f.db").exists():
        return 0
    try:
        return len(load(tmp_path).get_trials(states=(state,)))
    except (KeyError, sqlalchemy.exc.OperationalError, sqlalchemy.exc.IntegrityError):
        return 0  # the run is creating its tables (both sides may write alembic_version)


def test_out_of_memory_at_load_is_a_failed_trial(tmp_path: Path) -> None:
    proc = subprocess.run(
        run_args(tmp_path, trials=2, batch="8"), cwd=tmp_path, env=env_with("oom_batch_ge_4"),
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    trials = complete(load(tmp_path))
    assert len(trials) == 2
    for trial in trials:
        assert trial.value == 0
        assert trial.user_attrs[A.VERDICT] == "failed"
        assert "out of memory" in trial.user_attrs[A.FAILURE]
        assert max(trial.constraints.values()) > 0
    assert "No configuration meets" in proc.stdout


def test_worker_crash_mid_trial_is_recorded_and_the_study_goes_on(tmp_path: Path) -> None:
    proc = subprocess.run(
        run_args(tmp_path, trials=2), cwd=tmp_path, env=env_with("crash_after_30"),
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    trials = complete(load(tmp_path))
    assert len(trials) == 2
    # The worker dies on every 30th request: the requests it held fail (TorchServe restarts
    # it), and the trial records them; a rate can still pass between two crashes.
    for trial in trials:
        assert trial.user_attrs[A.ERRORS_TOTAL] > 0
        assert trial.user_attrs[A.VERDICT] != "failed"


def test_worker_hang_past_the_response_timeout(tmp_path: Path) -> None:
    args = [*run_args(tmp_path, trials=1), "--response-timeout-s", "2"]
    proc = subprocess.run(
        args, cwd=tmp_path, env=env_with("hang_after_10"),
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    (trial,) = complete(load(tmp_path))
    assert trial.value == 0
    assert trial.user_attrs[A.VERDICT] in ("over_sla", "failed")
    assert max(trial.constraints.values()) > 0


def _wait_for(predicate: object, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():  # type: ignore[operator]
            return
        time.sleep(0.2)
    raise AssertionError("condition not reached in time")


def test_torchserve_killed_mid_trial(tmp_path: Path) -> None:
    mine = str(tmp_path)
    proc = subprocess.Popen(
        run_args(tmp_path, trials=3), cwd=tmp_path, env=env_with(""),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        _wait_for(lambda: count(tmp_path, TrialState.COMPLETE) >= 1, 300)
        _wait_for(lambda: bool(model_server_pids(mine)), 120)
        time.sleep(1.0)  # into the next trial's deployment or measurement
        for pid in model_server_pids(mine):
            os.kill(pid, signal.SIGKILL)
        out, err = proc.communicate(timeout=600)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err[-2000:]
    trials = complete(load(tmp_path))
    assert len(trials) == 3
    failures = [t.user_attrs.get(A.FAILURE) for t in trials if t.user_attrs.get(A.FAILURE)]
    assert failures, out
    assert any(t.value and t.value > 0 for t in trials[1:]), "the server was not restarted"


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_interrupt_keeps_finished_trials_and_resumes(tmp_path: Path, signum: int) -> None:
    args = run_args(tmp_path, trials=2)
    proc = subprocess.Popen(
        args, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    _wait_for(lambda: count(tmp_path, TrialState.COMPLETE) >= 1, 300)
    _wait_for(lambda: count(tmp_path, TrialState.RUNNING) >= 1, 120)
    time.sleep(2.0)
    proc.send_signal(signum)
    _out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert "resume" in err
    study = load(tmp_path)
    assert not study.get_trials(states=(TrialState.RUNNING,))
    interrupted = study.get_trials(states=(TrialState.FAIL,))
    assert len(interrupted) == 1
    finished = len(complete(study))
    assert finished >= 1
    assert not model_server_pids(str(tmp_path)), "TorchServe left running after the signal"
    workers = [
        p for p in psutil.process_iter(["cmdline"]) if str(tmp_path) in str(p.info["cmdline"])
    ]
    assert not workers, workers

    again = subprocess.run(args, cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr[-2000:]
    study = load(tmp_path)
    done = complete(study)
    assert len(done) == 2
    assert any(t.user_attrs.get(A.RETRY_OF) == interrupted[0].number for t in done)


def test_port_taken_by_another_process(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The first ports TorchServe is given are taken: it retries on fresh ones."""
    blocker = socket.socket()
    blocker.bind(("127.0.0.1", 0))
    blocker.listen()
    taken = blocker.getsockname()[1]
    real_free_port = _server.free_port
    calls = {"n": 0}

    def first_port_taken(host: str = "127.0.0.1") -> int:
        calls["n"] += 1
        return taken if calls["n"] == 1 else real_free_port(host)

    monkeypatch.setattr(_server, "free_port", first_port_taken)
    store = tmp_path / "store"
    store.mkdir()
    try:
        with TorchServe(workdir=tmp_path / "srv", model_store=store) as server:
            assert server.ping()
            assert server.inference_url != f"http://127.0.0.1:{taken}"
            assert server.starts == 2
    finally:
        blocker.close()
