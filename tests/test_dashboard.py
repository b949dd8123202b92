"""optuna-dashboard on an autotune study: trials, attrs, feasibility, artifacts and the note."""

from __future__ import annotations

import contextlib
import json
import math
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import numpy as np
import optuna
import pytest
from optuna.distributions import CategoricalDistribution, IntDistribution

from autotune.results import (
    HISTOGRAM_FILE,
    LATENCIES_FILE,
    DashboardServer,
    save_study_note,
    save_trial_artifacts,
)
from autotune.serving import CONFIG_PROPERTIES_FILE, free_port
from autotune.space import TrialConfig
from autotune.study import schema as A
from autotune.study import set_sla_constraint
from scripts.dashboard_screenshot import dashboard_study_id

SLA_MS = 100.0
DISTRIBUTIONS = {
    "workers": IntDistribution(1, 4),
    "batch_size": CategoricalDistribution([1, 2, 4, 8]),
}
# (workers, batch, throughput, p99 or None for a failed deployment)
TRIALS = [(1, 1, 50.0, 60.0), (2, 4, 180.0, 90.0), (4, 8, 0.0, 240.0), (4, 1, 0.0, None)]


def make_study(tmp_path: Path) -> tuple[str, optuna.Study]:
    """A study recorded the way the tuner records one: ask, attrs, constraint, artifacts, tell."""
    storage = f"sqlite:///{tmp_path / 'study.db'}"
    study = optuna.create_study(study_name="quick-p99-100ms", storage=storage, direction="maximize")
    artifact_dir = tmp_path / "artifacts"
    study.set_user_attr(A.STUDY_SLA_MS, SLA_MS)
    study.set_user_attr(A.STUDY_MODEL, "quick")
    study.set_user_attr(A.STUDY_ARTIFACT_DIR, str(artifact_dir))
    rng = np.random.default_rng(0)
    for workers, batch, throughput, p99 in TRIALS:
        study.enqueue_trial({"workers": workers, "batch_size": batch})
        trial = study.ask(DISTRIBUTIONS)
        config = TrialConfig(workers=workers, batch_size=batch)
        ok = p99 is not None
        constraint = A.constraint_value(math.nan if p99 is None else p99, SLA_MS, ok=ok)
        attrs: dict[str, Any] = {
            A.CONFIG: config.as_dict(),
            A.THROUGHPUT_RPS: throughput,
            A.P99_MS: p99,
            A.SLA_MS: SLA_MS,
            A.VERDICT: "failed" if not ok else ("feasible" if constraint <= 0 else "over_sla"),
        }
        if trial.number == 0:
            attrs[A.BASELINE] = True
        if not ok:
            attrs[A.FAILURE] = "worker process died"
        for key, value in attrs.items():
            trial.set_user_attr(key, value)
        set_sla_constraint(trial, constraint)
        if ok:
            save_trial_artifacts(
                study,
                trial,
                artifact_dir=artifact_dir,
                config_properties=f"# trial {trial.number}\nbatch_size={batch}\n",
                latencies_ms=rng.gamma(4.0, (p99 or 1.0) / 10.0, 500),
            )
        study.tell(trial, throughput if constraint <= 0 else 0.0)
    save_study_note(study)
    return storage, study


def get_json(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=30) as response:
        return json.loads(response.read())


def get_bytes(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=30) as response:
        return bytes(response.read())


def port_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(1)
        return s.connect_ex(("127.0.0.1", port)) == 0


@pytest.mark.integration
def test_dashboard_shows_trials_attrs_feasibility_artifacts_and_note(tmp_path: Path) -> None:
    storage, study = make_study(tmp_path)
    port = free_port()
    server = DashboardServer(
        storage,
        port=port,
        artifact_dir=tmp_path / "artifacts",
        log_path=tmp_path / "dashboard.log",
    )
    with server:
        summaries = get_json(f"{server.url}/api/studies")["study_summaries"]
        assert [s["study_name"] for s in summaries] == ["quick-p99-100ms"]
        study_attrs = {a["key"]: a["value"] for a in summaries[0]["user_attrs"]}
        assert study_attrs[A.STUDY_SLA_MS] == "100.0"
        study_id = summaries[0]["study_id"]
        assert dashboard_study_id(server.url, "quick-p99-100ms") == study_id  # the screenshot's

        detail = get_json(f"{server.url}/api/studies/{study_id}")
        trials = sorted(detail["trials"], key=lambda t: t["number"])
        assert [t["state"] for t in trials] == ["Complete"] * 4
        constraints = [t["constraints"] for t in trials]
        assert constraints == [[-40.0], [-10.0], [140.0], [A.CONSTRAINT_CAP_X_SLA * SLA_MS]]
        feasible = [all(c <= 0 for c in t["constraints"]) for t in trials]
        assert feasible == [True, True, False, False]  # what the UI's Feasible split computes

        attrs = [{a["key"]: a["value"] for a in t["user_attrs"]} for t in trials]
        assert attrs[1][A.THROUGHPUT_RPS] == "180.0" and attrs[1][A.P99_MS] == "90.0"
        assert attrs[0][A.BASELINE] == "True"
        assert attrs[3][A.FAILURE] == "worker process died"
        assert json.loads(attrs[1][A.CONFIG])["batch_size"] == 4
        union = {a["key"]: a["sortable"] for a in detail["union_user_attrs"]}
        assert {A.THROUGHPUT_RPS, A.P99_MS, A.VERDICT, A.CONFIG} <= set(union)
        assert union[A.THROUGHPUT_RPS]  # numeric everywhere: selectable as a plot target

        artifacts = {a["filename"]: a for a in trials[1]["artifacts"]}
        assert set(artifacts) == {CONFIG_PROPERTIES_FILE, LATENCIES_FILE, HISTOGRAM_FILE}
        assert trials[3]["artifacts"] == []  # the failed trial measured nothing
        base = f"{server.url}/artifacts/{study_id}/{trials[1]['trial_id']}"
        config = get_bytes(f"{base}/{artifacts[CONFIG_PROPERTIES_FILE]['artifact_id']}")
        assert config == b"# trial 1\nbatch_size=4\n"
        png = get_bytes(f"{base}/{artifacts[HISTOGRAM_FILE]['artifact_id']}")
        assert png[:8] == b"\x89PNG\r\n\x1a\n"

        note = detail["note"]["body"]
        assert "Best: trial 1" in note and "**3.60x**" in note
        assert study.best_trial.number == 1  # Optuna agrees; the dashboard card may not
    assert not port_open(port)


@pytest.mark.integration
def test_dashboard_command_runs_until_ctrl_c(tmp_path: Path) -> None:
    storage, _ = make_study(tmp_path)
    port = free_port()
    log = (tmp_path / "cli.log").open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "autotune", "dashboard", "--storage", storage, "--port", str(port)],
        cwd=tmp_path,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1", "PYTHONFAULTHANDLER": "1"},
    )
    try:
        deadline = time.monotonic() + 60
        while "Ctrl-C to stop" not in (tmp_path / "cli.log").read_text():
            assert proc.poll() is None, (tmp_path / "cli.log").read_text()
            assert time.monotonic() < deadline, "the dashboard did not come up in 60 s"
            time.sleep(0.2)
        meta = get_json(f"http://127.0.0.1:{port}/api/meta")
        assert meta["artifact_is_available"] is True  # the study's artifact_dir was passed
        proc.send_signal(signal.SIGINT)  # Ctrl-C
        try:
            code = proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.send_signal(signal.SIGABRT)  # faulthandler writes where every thread stands
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=10)
            pytest.fail("no exit 30 s after Ctrl-C:\n" + (tmp_path / "cli.log").read_text())
        assert code == 0, (tmp_path / "cli.log").read_text()
        assert not port_open(port)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        log.close()
    output = (tmp_path / "cli.log").read_text()
    assert f"optuna-dashboard on http://127.0.0.1:{port}/dashboard" in output
    assert "optuna-dashboard stopped" in output
