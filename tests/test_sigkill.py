"""SIGKILL of a real `autotune run` mid-trial leaves nothing: TorchServe's wrapper, its Java
frontend and the Python workers all die with it (the parent-death signal of the guard)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from tests.conftest import model_server_pids

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("no_orphans")]


def _alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def _workers(java: int) -> list[int]:
    try:
        return [p.pid for p in psutil.Process(java).children(recursive=True)]
    except psutil.NoSuchProcess:
        return []


def test_sigkill_of_a_run_mid_trial_leaves_no_server_or_worker(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AUTOTUNE_HOST_DIR", str(tmp_path / "host"))
    stderr = (tmp_path / "run.err").open("wb")  # why, if the run ends on its own
    run = subprocess.Popen(
        [sys.executable, "-m", "autotune", "run", "--model", "quick", "--sla-ms", "100",
         "--trials", "3", "--storage", f"sqlite:///{tmp_path / 'x.db'}", "--study", "k",
         "--step-s", "2", "--server-warmup-s", "2", "--workdir", str(tmp_path / "work")],
        cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=stderr, env=dict(os.environ),
    )  # fmt: skip
    try:
        # Mid-trial: the server is up and a trial's model has its workers.
        deadline = time.monotonic() + 300
        family: list[int] = []
        while time.monotonic() < deadline and run.poll() is None:
            for java in model_server_pids(str(tmp_path)):
                family = [java, *_workers(java)]
            if len(family) >= 2:
                break
            time.sleep(0.5)
        if run.poll() is not None:
            said = (tmp_path / "run.err").read_text(errors="replace").strip()[-2000:]
            pytest.fail(f"the run ended (exit {run.returncode}) before a trial started: {said}")
        assert len(family) >= 2, "no TorchServe worker appeared"
        wrapper = [p.pid for p in psutil.Process(family[0]).parents()][:2]  # wrapper, guard
        os.kill(run.pid, signal.SIGKILL)
        run.wait(timeout=10)
        deadline = time.monotonic() + 20
        while (left := [p for p in family + wrapper if _alive(p)]) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not left, f"survived the run's SIGKILL: {left}"
        assert not model_server_pids(str(tmp_path))
    finally:
        if run.poll() is None:
            run.kill()
            run.wait(timeout=10)
        stderr.close()
