"""``autotune run``: settings in, a finished (or resumed) study out. No rendering here."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import optuna

import autotune
from autotune._errors import ConfigError
from autotune.loadgen import GoodputSettings
from autotune.results import save_study_note, save_trial_artifacts, trial_config_properties
from autotune.serving import (
    ModelSpec,
    TorchServeEvaluator,
    detect_hardware,
    find_java_home,
    get_model,
)
from autotune.space import Hardware, SearchSpace, builtin_space, load_space
from autotune.study import (
    StopRule,
    TrialEnd,
    TrialResult,
    TrialStart,
    Tuner,
    create_or_resume,
    default_study_name,
    enqueue_seeds,
    make_sampler,
    open_storage,
    recover_interrupted,
)
from autotune.study import schema as A


@dataclass(frozen=True, kw_only=True)
class RunSettings:
    """Everything ``autotune run`` needs, validated once."""

    sla_ms: float
    model: str
    storage: str
    study_name: str | None = None
    space_path: Path | None = None
    n_trials: int | None = None
    timeout_s: float | None = None
    input_path: Path | None = None
    workdir: Path = Path(".autotune")
    sampler: str = "gp"
    n_startup_trials: int = 4
    seed: int | None = None
    checkpoint: Path | None = None
    response_timeout_s: int | None = None
    load: GoodputSettings = field(default_factory=GoodputSettings)

    def __post_init__(self) -> None:
        if not (isinstance(self.sla_ms, int | float) and math.isfinite(self.sla_ms)) or (
            self.sla_ms <= 0
        ):
            raise ConfigError(
                f"--sla-ms must be a positive number of milliseconds, got {self.sla_ms!r}"
            )
        if self.n_trials is not None and self.n_trials < 1:
            raise ConfigError(f"--trials must be at least 1, got {self.n_trials}")
        if self.timeout_s is not None and self.timeout_s <= 0:
            raise ConfigError(
                f"--timeout must be a positive number of seconds, got {self.timeout_s}"
            )


@dataclass(frozen=True, kw_only=True)
class Prepared:
    """The validated pieces of a run, before anything is started."""

    settings: RunSettings
    spec: ModelSpec
    space: SearchSpace
    hardware: Hardware
    payload: bytes
    input_path: Path
    study_name: str
    n_trials: int


def read_input(path: Path) -> bytes:
    """The request payload: an image file that decodes (both built-in models take images)."""
    if not path.is_file():
        raise ConfigError(f"--input {path}: no such file; give an image file (JPEG or PNG)")
    data = path.read_bytes()
    from PIL import Image, UnidentifiedImageError

    try:
        import io

        with Image.open(io.BytesIO(data)) as image:
            image.load()
    except (UnidentifiedImageError, OSError, SyntaxError) as exc:
        raise ConfigError(
            f"--input {path}: not a readable image ({exc}); give a JPEG or PNG file"
        ) from None
    return data


def prepare(settings: RunSettings) -> Prepared:
    spec = get_model(settings.model, response_timeout_s=settings.response_timeout_s)
    hardware = detect_hardware()
    space_path = settings.space_path or builtin_space(spec.space)
    space = load_space(space_path).filtered(hardware)
    input_path = settings.input_path or spec.sample_path
    if input_path is None:
        raise ConfigError(f"--model {settings.model} has no sample input; give one with --input")
    payload = read_input(input_path)
    if settings.checkpoint is not None and not settings.checkpoint.is_file():
        raise ConfigError(f"--checkpoint {settings.checkpoint}: no such file")
    find_java_home()  # fail with the fix before the storage is touched or anything starts
    return Prepared(
        settings=settings,
        spec=spec,
        space=space,
        hardware=hardware,
        payload=payload,
        input_path=input_path,
        study_name=settings.study_name or default_study_name(spec.name, settings.sla_ms),
        n_trials=settings.n_trials or spec.default_trials,
    )


def open_study(p: Prepared) -> tuple[optuna.Study, bool]:
    s = p.settings
    storage = open_storage(s.storage)
    sampler = make_sampler(s.sampler, seed=s.seed, n_startup_trials=s.n_startup_trials)
    handler_extra = _handler_extra(s)
    identity: dict[str, Any] = {
        A.STUDY_SLA_MS: s.sla_ms,
        A.STUDY_MODEL: s.model if s.model.endswith(".py") else p.spec.name,
        A.STUDY_SPACE: p.space.to_dict(),
    }
    attrs: dict[str, Any] = {
        A.STUDY_HARDWARE: {
            "cpu_cores": p.hardware.cpu_cores,
            "gpus": p.hardware.gpus,
            "gpu_names": list(p.hardware.gpu_names),
        },
        A.STUDY_INPUT_PATH: str(p.input_path.resolve()),
        A.STUDY_ARTIFACT_DIR: str((s.workdir / p.study_name / "artifacts").resolve()),
        A.STUDY_HANDLER_EXTRA: handler_extra,
        A.STUDY_VERSION: autotune.__version__,
    }
    study, resumed = create_or_resume(
        storage, name=p.study_name, sampler=sampler, identity=identity, attrs=attrs
    )
    if not resumed:
        study.set_metric_names([A.THROUGHPUT_RPS])
    return study, resumed


def _handler_extra(s: RunSettings) -> dict[str, Any]:
    return {"checkpoint": str(s.checkpoint.resolve())} if s.checkpoint else {}


def run_study(
    p: Prepared,
    study: optuna.Study,
    *,
    on_trial_start: TrialStart | None = None,
    on_trial_end: TrialEnd | None = None,
) -> Tuner:
    """Recover interrupted trials, seed the baseline, and optimise. Always stops TorchServe."""
    import os
    import socket

    s = p.settings
    recover_interrupted(study)
    enqueue_seeds(study, p.space, p.hardware)
    workdir = s.workdir / p.study_name / f"{socket.gethostname()}-{os.getpid()}"
    evaluator = TorchServeEvaluator(
        spec=p.spec,
        workdir=workdir.resolve(),
        hardware=p.hardware,
        payload=p.payload,
        sla_ms=s.sla_ms,
        load_settings=s.load,
        handler_extra=_handler_extra(s),
    )
    on_result = _artifact_saver(study)
    tuner = Tuner(
        study=study,
        space=p.space,
        evaluator=evaluator,
        sla_ms=s.sla_ms,
        on_trial_start=on_trial_start,
        on_trial_end=on_trial_end,
        on_result=on_result,
        stop_rule=StopRule(),
    )
    try:
        tuner.run(n_trials=p.n_trials, timeout_s=s.timeout_s)
    finally:
        evaluator.close()
    save_study_note(study)
    return tuner


def _artifact_saver(study: optuna.Study) -> Callable[[optuna.Trial, TrialResult], None]:
    """Each measured trial carries its config.properties and latencies as Optuna artifacts."""
    artifact_dir = Path(study.user_attrs[A.STUDY_ARTIFACT_DIR])

    def save(trial: optuna.Trial, result: TrialResult) -> None:
        if result.latencies_ms is None:
            return
        save_trial_artifacts(
            study,
            trial,
            artifact_dir=artifact_dir,
            config_properties=trial_config_properties(study, result.config),
            latencies_ms=result.latencies_ms,
        )

    return save
