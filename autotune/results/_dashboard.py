"""optuna-dashboard on a study: the study note it shows, and the dashboard as a child process.

``DashboardServer`` runs ``optuna-dashboard`` on our own port and always stops it.
"""

from __future__ import annotations

import contextlib
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType

import optuna
from optuna.trial import FrozenTrial, TrialState

from autotune._errors import ConfigError, StorageError
from autotune.results._artifacts import _float_or_none, _label
from autotune.serving import find_executable, stop_process_group
from autotune.study import best_feasible, is_feasible
from autotune.study import schema as A


# -- the study note -------------------------------------------------------------------------------
def study_note(study: optuna.Study) -> str:
    """The Markdown summary of a study: SLA, best configuration, P99, throughput, speed-up."""
    trials = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    sla_ms = _float_or_none(study.user_attrs.get(A.STUDY_SLA_MS))
    sla = f"{sla_ms:g} ms" if sla_ms is not None else "unknown"
    feasible = [t for t in trials if is_feasible(t)]
    lines = [
        f"## autotune: {study.study_name}",
        "",
        f"- SLA: P99 <= {sla}",
        f"- model: {study.user_attrs.get(A.STUDY_MODEL, 'unknown')}",
        f"- trials: {len(trials)} complete, {len(feasible)} within the SLA",
    ]
    best = best_feasible(study)
    if best is None:
        p99s = [p for t in trials if (p := _float_or_none(t.user_attrs.get(A.P99_MS))) is not None]
        fastest = f"{min(p99s):.1f} ms" if p99s else "not measured"
        lines += ["", f"**No trial met the SLA.** The fastest P99 was {fastest}."]
        return "\n".join(lines) + "\n"
    throughput = _float_or_none(best.user_attrs.get(A.THROUGHPUT_RPS)) or float(best.value or 0)
    p99 = _float_or_none(best.user_attrs.get(A.P99_MS))
    baseline = next((t for t in trials if t.user_attrs.get(A.BASELINE) is True), None)
    lines += [
        "",
        f"### Best: trial {best.number}",
        "",
        f"- configuration: `{_label(best)}`",
        f"- throughput: **{throughput:.1f} req/s** at P99 "
        + (f"**{p99:.1f} ms**" if p99 is not None else "n/a"),
        f"- speed-up over the TorchServe default: {_speedup_text(throughput, baseline)}",
        "",
        "Deploy it with `autotune export`; Optuna's `study.best_trial` only counts trials that "
        "met the SLA (the dashboard's *Best Trial* card does not look at constraints).",
    ]
    config = best.user_attrs.get(A.CONFIG)
    if isinstance(config, Mapping):
        lines += ["", "| setting | value |", "|---|---|"]
        lines += [f"| {key} | {value} |" for key, value in config.items()]
    return "\n".join(lines) + "\n"


def save_study_note(study: optuna.Study) -> None:
    """Write ``study_note(study)`` as the study's optuna-dashboard note."""
    from optuna_dashboard import save_note

    save_note(study, study_note(study))


def _speedup_text(throughput: float, baseline: FrozenTrial | None) -> str:
    if baseline is None:
        return "n/a (no baseline trial)"
    base = _float_or_none(baseline.user_attrs.get(A.THROUGHPUT_RPS)) or 0.0
    if base <= 0:
        return f"n/a (the default configuration, trial {baseline.number}, missed the SLA)"
    return f"**{throughput / base:.2f}x** ({base:.1f} req/s in trial {baseline.number})"


# -- optuna-dashboard as a child process ----------------------------------------------------------
def dashboard_executable() -> str:
    found = find_executable("optuna-dashboard")
    if found is None:
        raise ConfigError(
            "optuna-dashboard not found; install it with `pip install optuna-dashboard`"
        )
    return found


def dashboard_argv(
    storage: str, *, host: str, port: int, artifact_dir: Path | None = None
) -> list[str]:
    argv = [dashboard_executable(), storage, "--host", host, "--port", str(port)]
    if artifact_dir is not None:
        argv += ["--artifact-dir", str(artifact_dir)]
    return argv


class DashboardServer:
    """``optuna-dashboard`` on ``host:port`` as our child: a context manager, always stopped."""

    def __init__(
        self,
        storage: str,
        *,
        host: str = "127.0.0.1",
        port: int = 8080,
        artifact_dir: Path | None = None,
        log_path: Path | None = None,
        startup_timeout_s: float = 60.0,
    ) -> None:
        self.argv = dashboard_argv(storage, host=host, port=port, artifact_dir=artifact_dir)
        self.host = host
        self.port = port
        self.log_path = log_path
        self.startup_timeout_s = startup_timeout_s
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    def start(self) -> None:
        # Without a log file the dashboard's own messages go to our terminal.
        log = self.log_path.open("ab") if self.log_path is not None else None
        try:
            self._proc = subprocess.Popen(
                self.argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        finally:
            if log is not None:
                log.close()
        try:
            self._wait_ready()
        except BaseException:
            self.stop()
            raise

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + self.startup_timeout_s
        delay = 0.1
        while time.monotonic() < deadline:
            if self._proc is None or self._proc.poll() is not None:
                where = f"; see {self.log_path}" if self.log_path is not None else ""
                raise StorageError(f"optuna-dashboard exited during start-up{where}")
            with (
                contextlib.suppress(urllib.error.URLError, OSError),
                urllib.request.urlopen(f"{self.url}/api/meta", timeout=5) as response,
            ):
                if response.status == 200:
                    return
            time.sleep(delay)
            delay = min(delay * 1.5, 1.0)
        raise StorageError(
            f"optuna-dashboard did not answer on {self.url} within {self.startup_timeout_s:.0f} s"
        )

    def wait(self) -> int:
        """Block until the dashboard exits; returns its exit status."""
        assert self._proc is not None
        return self._proc.wait()

    def stop(self, timeout_s: float = 10.0) -> None:
        proc = self._proc
        if proc is None:
            return
        stop_process_group(proc, timeout_s)
        self._proc = None

    def __enter__(self) -> DashboardServer:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
