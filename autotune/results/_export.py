"""Export the best feasible trial as a deployment TorchServe starts from as is.

``export_best`` writes into one folder:

* ``model-store/<model>.mar``: the study's archive (the user's own, or the built-in model's)
  with the best trial's settings in its own ``model-config.yaml``, so that nothing inside the
  archive overrides them (in TorchServe 0.12 that YAML beats config.properties and the register
  call); every other key and file of the archive is kept as it was.
* ``config.properties``: secure defaults (token authorisation stays on: the file never disables
  it; the model-management API is off, ``enable_model_api=false``: no register/unregister over
  HTTP, describe and scale still work; addresses are loopback unless ``host`` says otherwise),
  the model loaded at start (``load_models``) and the same workers, batch size and delay in
  the ``models=`` JSON, keyed by the archive's version, with a delay of at least 1 ms
  (TorchServe reads <= 0 as unset and falls back to 100 ms).
* ``torchserve.env``, only when the best trial set threads per worker through the environment
  (a handler that does not set them itself): ``OMP_NUM_THREADS``/``MKL_NUM_THREADS``, which the
  workers inherit from the server; TorchServe has no config.properties key for them. Start it
  with ``env $(cat torchserve.env) torchserve --start ...`` (or docker ``--env-file``, systemd
  ``EnvironmentFile=``). The CPU launcher (``cpu_launcher_args --ncores-per-instance``) would
  pin cores as well, but it is not what the trials measured.
* ``model-config.yaml``: a copy of the archive's, to read.

``autotune.serving.ExportedServer`` starts TorchServe from such a folder exactly as a user
would (``torchserve --start --ncs --ts-config <dir>/config.properties``, with the env file).
"""

from __future__ import annotations

import math
import tempfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import optuna
from optuna.trial import FrozenTrial

from autotune._errors import ConfigError
from autotune.results._artifacts import frozen_trial
from autotune.results._summary import summarize
from autotune.serving import (
    BUILTIN_MODELS,
    CONFIG_PROPERTIES_FILE,
    ENV_FILE,
    MODEL_CONFIG_FILE,
    MODEL_STORE_DIR,
    Addresses,
    Knobs,
    ModelArchive,
    ModelEntry,
    find_knobs,
    model_config,
    model_source,
    open_archive,
    pack_mar,
    render_env,
    render_properties,
    server_properties,
    thread_env,
    write_yaml_atomic,
)
from autotune.space import Hardware, TrialConfig
from autotune.study import CONFIRMATION_RULE, Replicates, confirmed_winner
from autotune.study import schema as A

# Handler settings that only make sense inside the tuning run (a cache under its work folder).
_RUN_ONLY_HANDLER_KEYS: Final = frozenset({"torchscript_cache_dir"})


@dataclass(frozen=True, kw_only=True)
class ExportResult:
    """What ``export_best`` wrote, and which trial it came from."""

    directory: Path
    config_properties: Path
    model_config: Path
    archive: Path | None  # None when exported with ``archive=False``
    env_file: Path | None  # None when the workers need no environment
    env: Mapping[str, str]
    model_name: str
    trial_number: int
    config: TrialConfig
    throughput_rps: float
    p99_ms: float | None

    def start_command(self) -> list[str]:
        prefix = ["env", *(f"{k}={v}" for k, v in self.env.items())] if self.env else []
        return [
            *prefix,
            "torchserve", "--start", "--ncs", "--ts-config", str(self.config_properties),
        ]  # fmt: skip


def export_best(
    study: optuna.Study,
    out_dir: Path,
    *,
    host: str = "127.0.0.1",
    inference_port: int = 8080,
    management_port: int = 8081,
    metrics_port: int = 8082,
    archive: bool = True,
) -> ExportResult:
    """Write the best feasible trial of ``study`` as a TorchServe deployment in ``out_dir``."""
    ports = {
        "inference_port": inference_port,
        "management_port": management_port,
        "metrics_port": metrics_port,
    }
    for name, port in ports.items():
        if not 1 <= port <= 65535:
            raise ConfigError(f"--{name.replace('_', '-')} must be in 1..65535, got {port}")
    if len(set(ports.values())) != len(ports):
        raise ConfigError(f"the three ports must differ, got {ports}")
    if not host or any(c in host for c in "/ \t"):
        raise ConfigError(f"--host must be an address or host name, got {host!r}")

    best = best_feasible_trial(study)
    config = _config_of(best)
    with study_archive(study) as (opened, knobs):
        yaml_content = _tuned_yaml(study, opened, knobs, config)
        out_dir = out_dir.resolve()
        out_dir.mkdir(parents=True, exist_ok=True)
        store = out_dir / MODEL_STORE_DIR
        store.mkdir(exist_ok=True)
        mar: Path | None = None
        entry = _model_entry(opened, config, yaml_content)
        if archive:
            mar = pack_mar(opened, yaml_content, store / entry.archive)
        env = thread_env(config, knobs)
    yaml_path = out_dir / MODEL_CONFIG_FILE
    write_yaml_atomic(yaml_path, yaml_content)
    env_path: Path | None = out_dir / ENV_FILE
    assert env_path is not None
    if env:
        env_path.write_text(
            "# the environment TorchServe starts with: its workers inherit it\n" + render_env(env)
        )
    else:
        env_path.unlink(missing_ok=True)
        env_path = None

    throughput = _finite(best.user_attrs.get(A.THROUGHPUT_RPS)) or float(best.value or 0.0)
    p99 = _finite(best.user_attrs.get(A.P99_MS))
    winner = confirmed_winner(study.get_trials(deepcopy=False))
    replicated = winner if winner is not None and winner.trial == best.number else None
    if replicated is not None:  # the conservative figure, not the first (lucky) measurement
        throughput = replicated.confirmed_rps
    props = export_properties(
        entry,
        model_store=store,
        addresses=Addresses(
            host=host,
            inference_port=inference_port,
            management_port=management_port,
            metrics_port=metrics_port,
        ),
        number_of_gpu=_gpus_for(study, config),
    )
    header = _header(
        study, best, config, throughput=throughput, p99_ms=p99, env=env, replicates=replicated
    )
    properties_path = out_dir / CONFIG_PROPERTIES_FILE
    properties_path.write_text(header + render_properties(props))
    return ExportResult(
        directory=out_dir,
        config_properties=properties_path,
        model_config=yaml_path,
        archive=mar,
        env_file=env_path,
        env=env,
        model_name=entry.name,
        trial_number=best.number,
        config=config,
        throughput_rps=throughput,
        p99_ms=p99,
    )


def export_properties(
    model: ModelEntry, *, model_store: Path, addresses: Addresses, number_of_gpu: int
) -> dict[str, Any]:
    """The config.properties keys of an export, in the order they are written."""
    return server_properties(
        addresses=addresses,
        model_store=model_store,
        number_of_gpu=number_of_gpu,
        default_response_timeout_s=model.response_timeout_s,
        enable_model_api=False,
        model=model,
    )


@contextmanager
def study_archive(study: optuna.Study) -> Iterator[tuple[ModelArchive, Knobs]]:
    """The study's archive unpacked into a temporary store, and the knobs it takes on the
    study's hardware. A built-in model is built again when its cached archive is gone."""
    label = study.user_attrs.get(A.STUDY_MODEL)
    if not isinstance(label, str):
        raise ConfigError(
            f"study {study.study_name!r} does not say which model it tuned "
            f"(no {A.STUDY_MODEL!r} user attr); was it created by `autotune run`?"
        )
    stored = study.user_attrs.get(A.STUDY_ARCHIVE)
    with tempfile.TemporaryDirectory(prefix="autotune-export-") as tmp:
        if isinstance(stored, str) and Path(stored).exists():
            source = Path(stored)
        elif label in BUILTIN_MODELS or label.endswith(".py"):
            source = model_source(label, cache_dir=Path(tmp) / "archives").archive
        else:
            raise ConfigError(
                f"study {study.study_name!r} tuned the archive {stored or label}, which is no "
                "longer there; put it back to export"
            )
        opened = open_archive(source, Path(tmp) / "store")
        yield opened, find_knobs(opened.manifest, opened.handler, _hardware_of(study))


def _hardware_of(study: optuna.Study) -> Hardware:
    data = study.user_attrs.get(A.STUDY_HARDWARE)
    data = data if isinstance(data, Mapping) else {}
    cores, gpus = data.get("cpu_cores"), data.get("gpus")
    return Hardware(
        cpu_cores=cores if isinstance(cores, int) and cores > 0 else 1,
        gpus=gpus if isinstance(gpus, int) and gpus > 0 else 0,
    )


def _tuned_yaml(
    study: optuna.Study, archive: ModelArchive, knobs: Knobs, config: TrialConfig
) -> dict[str, Any]:
    extra = {
        k: v
        for k, v in dict(study.user_attrs.get(A.STUDY_HANDLER_EXTRA) or {}).items()
        if k not in _RUN_ONLY_HANDLER_KEYS
    }
    timeout = study.user_attrs.get(A.STUDY_RESPONSE_TIMEOUT_S)
    return model_config(
        archive,
        knobs,
        config,
        handler_extra=extra,
        response_timeout_s=timeout if isinstance(timeout, int) else None,
    )


def _model_entry(
    archive: ModelArchive, config: TrialConfig, yaml_content: Mapping[str, Any]
) -> ModelEntry:
    timeout = yaml_content.get("responseTimeout")
    return ModelEntry(
        name=archive.model_name,
        version=archive.manifest.model_version,
        archive=f"{archive.directory.name}.mar",
        workers=config.workers,
        batch_size=config.batch_size,
        max_batch_delay_ms=config.max_batch_delay_ms,
        response_timeout_s=timeout if isinstance(timeout, int) else archive.response_timeout_s(),
    )


def best_feasible_trial(study: optuna.Study) -> FrozenTrial:
    """The study's best (``summarize(study).best``: Optuna's ``study.best_trial``, feasible
    trials only, or the confirmed winner); ConfigError when there is none."""
    summary = summarize(study)
    if not summary.complete:
        raise ConfigError(
            f"study {study.study_name!r} has no completed trial yet; run `autotune run` first"
        )
    if summary.best is not None:
        return frozen_trial(study, summary.best.number)
    sla_text = f" (P99 <= {summary.sla_ms:g} ms)" if summary.sla_ms is not None else ""
    fastest = (
        f"the fastest P99 was {summary.fastest.p99_ms:.1f} ms (trial {summary.fastest.number})"
        if summary.fastest is not None
        else "no trial measured a P99"
    )
    what = "held the SLA in every confirmation" if summary.confirmed else "met the SLA"
    raise ConfigError(
        f"no trial of study {study.study_name!r} {what}{sla_text}: {fastest}; "
        "relax --sla-ms, widen the search space or run on faster hardware"
    )


def _config_of(trial: FrozenTrial) -> TrialConfig:
    data = trial.user_attrs.get(A.CONFIG)
    source = dict(data) if isinstance(data, Mapping) else dict(trial.params)
    try:
        return TrialConfig.from_dict(source)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"trial {trial.number} holds no valid configuration: {exc}") from exc


def _gpus_for(study: optuna.Study, config: TrialConfig) -> int:
    if config.device != "cuda":
        return 0  # 0 forces every model onto the CPU, as measured
    hardware = study.user_attrs.get(A.STUDY_HARDWARE)
    gpus = hardware.get("gpus") if isinstance(hardware, Mapping) else None
    return int(gpus) if isinstance(gpus, int) and gpus > 0 else 1


def _finite(value: Any) -> float | None:
    if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
        return float(value)
    return None


def _header(
    study: optuna.Study,
    trial: FrozenTrial,
    config: TrialConfig,
    *,
    throughput: float,
    p99_ms: float | None,
    env: Mapping[str, str],
    replicates: Replicates | None = None,
) -> str:
    sla = _finite(study.user_attrs.get(A.STUDY_SLA_MS))
    measured = f"{throughput:.1f} req/s at P99 " + (f"{p99_ms:.1f} ms" if p99_ms else "n/a")
    if sla is not None:
        measured += f" (SLA {sla:g} ms)"
    if replicates is not None:
        runs = ", ".join(f"{v:.1f}" for v in replicates.throughput_rps)
        measured = (
            f"{throughput:.1f} req/s confirmed ({CONFIRMATION_RULE}: {runs}); first at P99 "
            + (f"{p99_ms:.1f} ms" if p99_ms else "n/a")
            + (f" (SLA {sla:g} ms)" if sla is not None else "")
        )
    lines = [
        f"autotune export of study {study.study_name!r}, trial {trial.number}: {config.label()}",
        f"measured: {measured}",
        "start: "
        + ("env $(grep -v '^#' torchserve.env) " if env else "")
        + "torchserve --start --ncs --ts-config <this file>",
        "token authorisation is on: the keys are in key_file.json in the folder it starts in",
        f"measure it: autotune loadtest --goodput --sla-ms {f'{sla:g}' if sla else 'SLA'} "
        "--warmup 30 --key-file key_file.json --input INPUT "
        "<inference_address>/predictions/<model>",
        "model-config.yaml in the archive holds the same workers/batch values (it wins)",
    ]
    if config.max_batch_delay_ms <= 0:
        lines.append("max batch delay 0 ms is written as 1 ms: TorchServe reads <= 0 as unset")
    return "".join(f"# {line}\n" for line in lines)


def trial_config_properties(
    study: optuna.Study,
    config: TrialConfig,
    *,
    archive: ModelArchive | None = None,
    knobs: Knobs | None = None,
) -> str:
    """The config.properties ``autotune export`` would write for ``config`` (a trial artifact).

    Default ports, and the model store relative to the folder TorchServe starts in. The run
    passes its unpacked ``archive`` and ``knobs``; without them the study's archive is opened.
    """
    if archive is None or knobs is None:
        with study_archive(study) as (opened, found):
            return trial_config_properties(study, config, archive=opened, knobs=found)
    entry = _model_entry(archive, config, _tuned_yaml(study, archive, knobs, config))
    props = export_properties(
        entry,
        model_store=Path(MODEL_STORE_DIR),
        addresses=Addresses(),
        number_of_gpu=_gpus_for(study, config),
    )
    env = thread_env(config, knobs)
    header = f"# what `autotune export` writes for {config.label()} (default ports)\n"
    if env:
        header += "# with torchserve.env: " + " ".join(f"{k}={v}" for k, v in env.items()) + "\n"
    return header + render_properties(props)
