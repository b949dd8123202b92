"""What optuna-dashboard shows beyond the trial table: per-trial artifacts and the study note.

Each trial carries three Optuna artifacts in a ``FileSystemArtifactStore`` (the folder is the
study user attr ``artifact_dir``): the ``config.properties`` it ran with, its raw latencies
(``latencies_ms.csv``, one value per line, readable by the dashboard's CSV viewer) and a latency
histogram (``latency_histogram.png``). ``DashboardServer`` runs ``optuna-dashboard`` as a child
process on our own port and always stops it.
"""

from __future__ import annotations

import contextlib
import math
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType
from typing import Any, Final

import numpy as np
import numpy.typing as npt
import optuna
from matplotlib.figure import Figure
from optuna.artifacts import FileSystemArtifactStore, get_all_artifact_meta, upload_artifact
from optuna.artifacts.exceptions import ArtifactNotFound
from optuna.trial import FrozenTrial, TrialState

from autotune import _attrs as A
from autotune._config import TrialConfig
from autotune._errors import ConfigError, StorageError
from autotune._exe import find_executable, stop_process_group
from autotune._study import best_feasible, is_feasible

CONFIG_PROPERTIES_FILE: Final = "config.properties"
LATENCIES_FILE: Final = "latencies_ms.csv"
HISTOGRAM_FILE: Final = "latency_histogram.png"
_LATENCIES_HEADER: Final = "latency_ms"

TrialRef = int | FrozenTrial | optuna.Trial


def frozen_trial(study: optuna.Study, trial: TrialRef) -> FrozenTrial:
    """The stored FrozenTrial of a trial number, a Trial or a FrozenTrial of ``study``."""
    number = trial if isinstance(trial, int) else trial.number
    for candidate in study.get_trials(deepcopy=False):
        if candidate.number == number:
            return candidate
    raise ConfigError(f"study {study.study_name!r} has no trial number {number}")


def study_artifact_dir(study: optuna.Study) -> Path | None:
    value = study.user_attrs.get(A.STUDY_ARTIFACT_DIR)
    return Path(value) if isinstance(value, str) and value else None


# -- per-trial artifacts --------------------------------------------------------------------------
def save_trial_artifacts(
    study: optuna.Study,
    trial: TrialRef,
    *,
    artifact_dir: Path,
    config_properties: str,
    latencies_ms: npt.NDArray[np.floating[Any]],
) -> None:
    """Upload the trial's config.properties, raw latencies and latency histogram.

    The trial must still be running (Optuna refuses to update finished trials).
    """
    frozen = frozen_trial(study, trial)
    if frozen.state.is_finished():
        raise ValueError(
            f"trial {frozen.number} is {frozen.state.name}: Optuna attaches artifacts only to "
            "running trials; call save_trial_artifacts from the objective, before it returns"
        )
    artifact_dir.mkdir(parents=True, exist_ok=True)
    store = FileSystemArtifactStore(str(artifact_dir))
    latencies = np.asarray(latencies_ms, dtype=np.float64).ravel()
    sla_ms = _float_or_none(frozen.user_attrs.get(A.SLA_MS)) or _float_or_none(
        study.user_attrs.get(A.STUDY_SLA_MS)
    )
    with tempfile.TemporaryDirectory(prefix="autotune-artifacts-") as tmp:
        folder = Path(tmp)
        files: list[tuple[Path, str]] = []
        config_path = folder / CONFIG_PROPERTIES_FILE
        config_path.write_text(config_properties)
        files.append((config_path, "text/plain"))
        latencies_path = folder / LATENCIES_FILE
        np.savetxt(latencies_path, latencies, fmt="%.4f", header=_LATENCIES_HEADER, comments="")
        files.append((latencies_path, "text/csv"))
        if latencies.size:
            histogram_path = folder / HISTOGRAM_FILE
            _plot_histogram(latencies, histogram_path, title=_trial_title(frozen), sla_ms=sla_ms)
            files.append((histogram_path, "image/png"))
        for path, mimetype in files:
            upload_artifact(
                artifact_store=store,
                file_path=str(path),
                study_or_trial=frozen,
                storage=study._storage,
                mimetype=mimetype,
            )


def load_latencies(
    study: optuna.Study, trial: TrialRef, artifact_dir: Path
) -> npt.NDArray[np.float64] | None:
    """The raw latencies (ms) saved with the trial, or None when it has none."""
    frozen = frozen_trial(study, trial)
    metas = [
        m
        for m in get_all_artifact_meta(frozen, storage=study._storage)
        if m.filename == LATENCIES_FILE
    ]
    if not metas:
        return None
    store = FileSystemArtifactStore(str(artifact_dir))
    try:
        with store.open_reader(metas[-1].artifact_id) as reader:
            text = reader.read().decode()
    except ArtifactNotFound:
        return None
    fields = text.split()
    if fields[:1] == [_LATENCIES_HEADER]:
        fields = fields[1:]
    return np.array(fields, dtype=np.float64)


def _label(trial: FrozenTrial) -> str:
    config = trial.user_attrs.get(A.CONFIG)
    if isinstance(config, dict):
        return TrialConfig.from_dict(config).label()
    return " ".join(f"{k}={v}" for k, v in trial.params.items())


def _trial_title(trial: FrozenTrial) -> str:
    return f"trial {trial.number}: {_label(trial)}"


def _plot_histogram(
    latencies: npt.NDArray[np.float64], path: Path, *, title: str, sla_ms: float | None
) -> None:
    """Histogram of the answered requests; errored or unanswered ones (+inf) are counted."""
    finite = latencies[np.isfinite(latencies)]
    failed = latencies.size - finite.size
    fig = Figure(figsize=(7, 4), dpi=100, layout="constrained")
    ax = fig.add_subplot()
    if finite.size:
        ax.hist(finite, bins=min(60, max(10, int(math.sqrt(finite.size)))), color="#4c72b0")
        ax.axvline(np.median(finite), color="#55a868", linestyle="--", label="P50")
    p99 = percentile(latencies, 99)
    if math.isfinite(p99):
        ax.axvline(p99, color="#dd8452", linestyle="--", label=f"P99 {p99:.1f} ms")
    if sla_ms is not None:
        ax.axvline(sla_ms, color="#c44e52", linewidth=2, label=f"SLA {sla_ms:g} ms")
    ax.set_xlabel("latency (ms)")
    ax.set_ylabel("requests")
    errors = f", {failed} errored or unanswered" if failed else ""
    ax.set_title(f"{title} ({latencies.size} requests{errors})", fontsize=10)
    ax.legend()
    fig.savefig(path)


def percentile(latencies_ms: npt.NDArray[np.float64], q: float) -> float:
    """The percentile of the answered requests, as the load generator computes it (numpy's
    linear interpolation over the finite entries; errored ones are +inf and left out)."""
    finite = latencies_ms[np.isfinite(latencies_ms)]
    return float(np.percentile(finite, q)) if finite.size else math.nan


def _float_or_none(value: Any) -> float | None:
    if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
        return float(value)
    return None


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
