"""``autotune run``: settings in, a finished (or resumed) study out. No rendering here."""

from __future__ import annotations

import contextlib
import dataclasses
import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import optuna

import autotune
from autotune._errors import ConfigError
from autotune.loadgen import GoodputSettings
from autotune.results import save_study_note, save_trial_artifacts, trial_config_properties
from autotune.serving import (
    TOLERANCE_TEXT,
    ChildRecord,
    Holder,
    HostLock,
    HostLocked,
    Knobs,
    ModelArchive,
    ModelSource,
    TorchServeEvaluator,
    archive_kind,
    describe_knobs,
    detect_hardware,
    find_java_home,
    find_knobs,
    model_source,
    open_archive,
    overridden_keys,
    restrict_space,
)
from autotune.space import Hardware, SearchSpace, TrialConfig, builtin_space, load_space
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
    run_confirmation,
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
    confirm_top_k: int = 3
    confirm_repeats: int = 2
    wait_for_host: bool = True
    server_warmup_s: float = 30.0  # load before the first trial on a newly started server

    def __post_init__(self) -> None:
        if self.confirm_top_k < 0:
            raise ConfigError(f"--confirm must be 0 (off) or more, got {self.confirm_top_k}")
        if self.confirm_repeats < 1:
            raise ConfigError(f"--repeats must be at least 1, got {self.confirm_repeats}")
        if not (isinstance(self.sla_ms, int | float) and math.isfinite(self.sla_ms)) or (
            self.sla_ms <= 0
        ):
            raise ConfigError(
                f"--sla-ms must be a positive number of milliseconds, got {self.sla_ms!r}"
            )
        if not (isinstance(self.server_warmup_s, int | float) and self.server_warmup_s >= 0) or (
            not math.isfinite(self.server_warmup_s)
        ):
            raise ConfigError(
                "--server-warmup-s must be 0 (off) or a positive number of seconds, "
                f"got {self.server_warmup_s!r}"
            )
        if self.n_trials is not None and self.n_trials < 1:
            raise ConfigError(f"--trials must be at least 1, got {self.n_trials}")
        if self.timeout_s is not None and self.timeout_s <= 0:
            raise ConfigError(
                f"--timeout must be a positive number of seconds, got {self.timeout_s}"
            )


@dataclass(frozen=True, kw_only=True)
class Prepared:
    """The validated pieces of a run: the archive unpacked, its knobs found, the space cut to
    them, and the model checked to load and answer on a started server (``evaluator``)."""

    settings: RunSettings
    source: ModelSource
    archive: ModelArchive
    knobs: Knobs
    space: SearchSpace
    hardware: Hardware
    payload: bytes
    input_path: Path
    study_name: str
    n_trials: int
    run_dir: Path
    handler_extra: Mapping[str, Any]
    notes: tuple[str, ...] = ()
    evaluator: TorchServeEvaluator = field(compare=False, repr=False)

    @property
    def model_name(self) -> str:
        return self.archive.model_name


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


def read_payload(path: Path) -> bytes:
    """The request body for a user's archive: the file's bytes as they are (any format)."""
    if not path.is_file():
        raise ConfigError(f"--input {path}: no such file; give the body of one request")
    data = path.read_bytes()
    if not data:
        raise ConfigError(f"--input {path}: the file is empty; give the body of one request")
    return data


def _study_stem(source: ModelSource) -> str:
    if source.spec is not None:
        return source.spec.name
    name = Path(source.label).name
    for suffix in (".tar.gz", ".tgz", ".mar"):
        name = name.removesuffix(suffix)
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("_") or "model"


def prepare(settings: RunSettings) -> Prepared:
    """Validate everything, unpack the archive, find its knobs, and check that the model loads
    and answers the sample input; nothing is stored in the study yet. A bad archive, input or
    space raises a one-line error here."""
    import os
    import socket

    hardware = detect_hardware()
    source = model_source(settings.model, cache_dir=(settings.workdir / "archives").resolve())
    input_path = settings.input_path or source.sample_path
    if input_path is None:
        raise ConfigError(
            f"--model {settings.model} is an archive of yours: give the body of one request "
            "with --input FILE (any bytes the handler accepts, e.g. an image)"
        )
    payload = read_input(input_path) if source.spec is not None else read_payload(input_path)
    if settings.checkpoint is not None:
        if source.spec is None:
            raise ConfigError(
                "--checkpoint is for the built-in models; an archive carries its own weights"
            )
        if not settings.checkpoint.is_file():
            raise ConfigError(f"--checkpoint {settings.checkpoint}: no such file")
    study_name = settings.study_name or default_study_name(_study_stem(source), settings.sla_ms)
    run_dir = (settings.workdir / study_name / f"{socket.gethostname()}-{os.getpid()}").resolve()
    archive = open_archive(source.archive, run_dir / "model-store")
    knobs = find_knobs(archive.manifest, archive.handler, hardware)
    space_path = settings.space_path or builtin_space(source.space)
    space = restrict_space(
        load_space(space_path).filtered(hardware), knobs, strict=settings.space_path is not None
    )
    find_java_home()  # fail with the fix before the storage is touched or anything starts
    # Bad flags fail before the model check starts TorchServe (nothing is stored by these).
    make_sampler(settings.sampler, seed=settings.seed, n_startup_trials=settings.n_startup_trials)
    open_storage(settings.storage)
    handler_extra: dict[str, Any] = {}
    if settings.checkpoint is not None:
        handler_extra["checkpoint"] = str(settings.checkpoint.resolve())
    if knobs.torchscript:  # autotune's own handlers keep a compiled module for later workers
        handler_extra["torchscript_cache_dir"] = str(run_dir / "torchscript-cache")
    notes = _notes(source, archive, knobs, space, handler_extra, input_path)
    evaluator = TorchServeEvaluator(
        archive=archive,
        knobs=knobs,
        workdir=run_dir,
        hardware=hardware,
        payload=payload,
        sla_ms=settings.sla_ms,
        load_settings=settings.load,
        handler_extra=handler_extra,
        response_timeout_s=settings.response_timeout_s,
        server_warmup_s=settings.server_warmup_s,
    )
    try:
        # The model check starts TorchServe and sends requests: a measurement of the host's
        # cores like any other, so it waits for (or, with --no-wait, refuses) another run's.
        with _host_lock(study_name, wait=settings.wait_for_host):
            evaluator.check_model(_reference_config(space, hardware))
    except BaseException:
        evaluator.close()
        raise
    return Prepared(
        settings=settings,
        source=source,
        archive=archive,
        knobs=knobs,
        space=space,
        hardware=hardware,
        payload=payload,
        input_path=input_path,
        study_name=study_name,
        n_trials=settings.n_trials or source.default_trials,
        run_dir=run_dir,
        handler_extra=handler_extra,
        notes=notes,
        evaluator=evaluator,
    )


def _reference_config(space: SearchSpace, hardware: Hardware) -> TrialConfig:
    """The configuration whose answer every trial's is compared with: the baseline's device,
    fp32, eager, one worker, batch 1 (the archive as it would serve one request)."""
    baseline = space.baseline(hardware)
    return dataclasses.replace(
        baseline, fp16=False, torchscript=False, compile=False, workers=1, batch_size=1
    )


def _notes(
    source: ModelSource,
    archive: ModelArchive,
    knobs: Knobs,
    space: SearchSpace,
    handler_extra: Mapping[str, Any],
    input_path: Path,
) -> tuple[str, ...]:
    """What the run prints before its first trial: the archive, its knobs, the YAML keys."""
    m = archive.manifest
    kind = archive_kind(archive.source)
    built = f" (built-in model {source.spec.name}, built into a {kind})" if source.spec else ""
    overridden, added = overridden_keys(archive, knobs, handler_extra=handler_extra)
    controlled = set(overridden) | set(added)
    kept = [k for k in archive.user_config if k not in controlled]
    section = archive.user_config.get("handler")
    if isinstance(section, Mapping):
        kept = [k for k in kept if k != "handler"]
        kept += [f"handler.{k}" for k in section if f"handler.{k}" not in controlled]
    lines = [
        f"archive: {archive.source}{built or f' ({kind})'}: model "
        f"{m.model_name} {m.model_version}, {m.artifact_text()}",
        f"handler: {archive.handler.text()}",
        f"search space ({space.source}), {space.size()} configurations; knobs found:",
        *(f"  {line}" for line in describe_knobs(space, knobs)),
        "model-config.yaml per trial: overrides "
        + (", ".join(overridden) or "none of the archive's keys")
        + "; adds "
        + (", ".join(added) or "nothing")
        + "; keeps "
        + (", ".join(kept) or "nothing else (the archive has no other keys)"),
        f"answers: each trial's answers to {input_path.name} are compared with the model's "
        f"answer at one worker, batch 1, eager ({TOLERANCE_TEXT})",
    ]
    return tuple(lines)


def open_study(p: Prepared) -> tuple[optuna.Study, bool]:
    s = p.settings
    storage = open_storage(s.storage)
    sampler = make_sampler(
        s.sampler, seed=s.seed, n_startup_trials=s.n_startup_trials, space=p.space
    )
    identity: dict[str, Any] = {
        A.STUDY_SLA_MS: s.sla_ms,
        A.STUDY_MODEL: p.source.label,
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
        A.STUDY_HANDLER_EXTRA: dict(p.handler_extra),
        A.STUDY_ARCHIVE: str(p.source.archive),
        A.STUDY_VERSION: autotune.__version__,
    }
    if s.response_timeout_s is not None:
        attrs[A.STUDY_RESPONSE_TIMEOUT_S] = s.response_timeout_s
    reference = p.evaluator.reference
    if reference is not None and len(reference) <= 64 * 1024:
        with contextlib.suppress(UnicodeDecodeError):
            attrs[A.STUDY_REFERENCE_ANSWER] = reference.decode("utf-8")
    study, resumed = create_or_resume(
        storage, name=p.study_name, sampler=sampler, identity=identity, attrs=attrs
    )
    if not resumed:
        study.set_metric_names([A.THROUGHPUT_RPS])
    return study, resumed


def run_study(
    p: Prepared,
    study: optuna.Study,
    *,
    on_trial_start: TrialStart | None = None,
    on_trial_end: TrialEnd | None = None,
) -> Tuner:
    """Recover interrupted trials, seed the baseline, and optimise. Always stops TorchServe."""
    s = p.settings
    recover_interrupted(study)
    enqueue_seeds(study, p.space, p.hardware)
    evaluator = p.evaluator
    on_result = _artifact_saver(study, evaluator)
    # One measurement per host at a time; --no-wait refuses here, before anything is measured.
    _host_lock(p.study_name, wait=s.wait_for_host).acquire_once()
    locked = HostLocked(evaluator, _host_lock(p.study_name, wait=True))
    tuner = Tuner(
        study=study,
        space=p.space,
        evaluator=locked,
        sla_ms=s.sla_ms,
        on_trial_start=on_trial_start,
        on_trial_end=on_trial_end,
        on_result=on_result,
        stop_rule=StopRule(),
    )
    try:
        tuner.run(n_trials=p.n_trials, timeout_s=s.timeout_s)
        if s.confirm_top_k > 0 and not tuner.stopped_early:
            run_confirmation(
                study, locked, p.space, sla_ms=s.sla_ms, top_k=s.confirm_top_k,
                repeats=s.confirm_repeats, on_trial_start=on_trial_start,
                on_trial_end=on_trial_end, on_result=on_result, fallback=tuner.objective,
            )  # fmt: skip
    finally:
        evaluator.close()
    save_study_note(study)
    return tuner


def _host_lock(study_name: str, *, wait: bool) -> HostLock:
    """The host's measurement lock; says on stderr whom it waits for and what it cleaned up."""
    import sys

    def on_wait(holder: Holder | None) -> None:
        who = holder.describe() if holder is not None else "another autotune run"
        print(f"autotune: waiting for the host: {who}", file=sys.stderr, flush=True)

    def on_reaped(records: list[ChildRecord]) -> None:
        for r in records:
            print(
                f"autotune: stopped {r.name} (pid {r.pgid}) left by a dead run (pid {r.owner_pid})",
                file=sys.stderr,
                flush=True,
            )

    return HostLock(study=study_name, wait=wait, on_wait=on_wait, on_reaped=on_reaped)


def _artifact_saver(
    study: optuna.Study, evaluator: TorchServeEvaluator
) -> Callable[[optuna.Trial, TrialResult], None]:
    """Each measured trial carries its config.properties and latencies as Optuna artifacts, and
    a flag when its answers to the sample input were not the reference's."""
    artifact_dir = Path(study.user_attrs[A.STUDY_ARTIFACT_DIR])

    def save(trial: optuna.Trial, result: TrialResult) -> None:
        change = evaluator.answer_change(result.config)
        if change:
            trial.set_user_attr(A.ANSWER_CHANGED, change)
        if result.latencies_ms is None:
            return
        save_trial_artifacts(
            study,
            trial,
            artifact_dir=artifact_dir,
            config_properties=trial_config_properties(
                study, result.config, archive=evaluator.archive, knobs=evaluator.knobs
            ),
            latencies_ms=result.latencies_ms,
        )

    return save
