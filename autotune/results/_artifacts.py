"""What optuna-dashboard shows beyond the trial table: per-trial artifacts and the study note.

Each trial carries three Optuna artifacts in a ``FileSystemArtifactStore`` (the folder is the
study user attr ``artifact_dir``): the ``config.properties`` it ran with, its raw latencies
(``latencies_ms.csv``, one value per line, readable by the dashboard's CSV viewer) and a latency
histogram (``latency_histogram.png``). ``DashboardServer`` runs ``optuna-dashboard`` as a child
process on our own port and always stops it.
"""

from __future__ import annotations

import math
import tempfile
from pathlib import Path
from typing import Any, Final

import numpy as np
import numpy.typing as npt
import optuna
from matplotlib.figure import Figure
from optuna.artifacts import FileSystemArtifactStore, upload_artifact
from optuna.artifacts.exceptions import ArtifactNotFound
from optuna.trial import FrozenTrial

from autotune._errors import ConfigError
from autotune.serving import CONFIG_PROPERTIES_FILE
from autotune.study import TrialRecord
from autotune.study import schema as A

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

    ``trial`` is the running ``optuna.Trial`` the objective got (Optuna attaches artifacts only
    to running trials). The artifact ids are kept in the trial's user attr ``artifacts``
    ({file name: id}), as Optuna's artifact tutorial does, so that they are read back through
    ``trial.user_attrs``.
    """
    frozen = frozen_trial(study, trial)
    if frozen.state.is_finished():
        raise ValueError(
            f"trial {frozen.number} is {frozen.state.name}: Optuna attaches artifacts only to "
            "running trials; call save_trial_artifacts from the objective, before it returns"
        )
    if not isinstance(trial, optuna.Trial):
        raise ValueError(
            f"trial {frozen.number}: pass the optuna.Trial the objective got, not "
            f"{type(trial).__name__}; its artifacts are attached through it"
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
        ids = {
            path.name: upload_artifact(
                artifact_store=store, file_path=str(path), study_or_trial=trial, mimetype=mimetype
            )
            for path, mimetype in files
        }
    trial.set_user_attr(A.ARTIFACTS, ids)


def load_latencies(
    study: optuna.Study, trial: TrialRef, artifact_dir: Path
) -> npt.NDArray[np.float64] | None:
    """The raw latencies (ms) saved with the trial, or None when it has none."""
    frozen = frozen_trial(study, trial)
    ids = frozen.user_attrs.get(A.ARTIFACTS)
    artifact_id = ids.get(LATENCIES_FILE) if isinstance(ids, dict) else None
    if not isinstance(artifact_id, str):
        return None
    store = FileSystemArtifactStore(str(artifact_dir))
    try:
        with store.open_reader(artifact_id) as reader:
            text = reader.read().decode()
    except ArtifactNotFound:
        return None
    fields = text.split()
    if fields[:1] == [_LATENCIES_HEADER]:
        fields = fields[1:]
    return np.array(fields, dtype=np.float64)


def _label(trial: FrozenTrial) -> str:
    return TrialRecord.from_frozen(trial).label


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
