"""Export the best feasible trial as a deployment TorchServe starts from as is.

``export_best`` writes ``config.properties``, ``model-config.yaml`` and
``model-store/<model>.mar`` into one folder. Secure defaults: token authorisation stays on (the
file never disables it), the model-management API is off (``enable_model_api=false``: no
register/unregister over HTTP; describe and scale still work), addresses are loopback unless
``host`` says otherwise. The tuned values are written consistently in both places TorchServe
reads them (the ``models=`` JSON, keyed by the archive's version, and the archive's
model-config.yaml, which wins), with a batch delay of at least 1 ms: TorchServe reads <= 0 as
unset and falls back to 100 ms.

``autotune.serving.ExportedServer`` starts TorchServe from such a folder exactly as a user
would (``torchserve --start --ncs --ts-config <dir>/config.properties``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import optuna
from optuna.trial import FrozenTrial, TrialState

from autotune._errors import ConfigError
from autotune.serving import (
    CONFIG_PROPERTIES_FILE,
    MODEL_CONFIG_FILE,
    MODEL_STORE_DIR,
    MODEL_VERSION,
    ModelSpec,
    ServerSettings,
    build_archive,
    get_model,
    model_config,
    render_properties,
    write_yaml_atomic,
)
from autotune.space import TrialConfig
from autotune.study import is_feasible
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
    model_name: str
    trial_number: int
    config: TrialConfig
    throughput_rps: float
    p99_ms: float | None

    def start_command(self) -> list[str]:
        return ["torchserve", "--start", "--ncs", "--ts-config", str(self.config_properties)]


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
    spec = _model_of(study)
    config = _config_of(best)
    extra = {
        k: v
        for k, v in dict(study.user_attrs.get(A.STUDY_HANDLER_EXTRA) or {}).items()
        if k not in _RUN_ONLY_HANDLER_KEYS
    }
    yaml_content = model_config(spec, config, extra_handler=extra, workers=True)

    out_dir = out_dir.resolve()
    out_dir.mkdir(parents=True, exist_ok=True)
    store = out_dir / MODEL_STORE_DIR
    store.mkdir(exist_ok=True)
    mar: Path | None = None
    if archive:
        mar = build_archive(
            spec, store, model_name=spec.name, initial_config=yaml_content, archive_format="default"
        )
    yaml_path = out_dir / MODEL_CONFIG_FILE
    write_yaml_atomic(yaml_path, yaml_content)

    throughput = _finite(best.user_attrs.get(A.THROUGHPUT_RPS)) or float(best.value or 0.0)
    p99 = _finite(best.user_attrs.get(A.P99_MS))
    props = export_properties(
        spec,
        config,
        model_store=store,
        host=host,
        inference_port=inference_port,
        management_port=management_port,
        metrics_port=metrics_port,
        number_of_gpu=_gpus_for(study, config),
    )
    header = _header(study, best, config, throughput=throughput, p99_ms=p99)
    properties_path = out_dir / CONFIG_PROPERTIES_FILE
    properties_path.write_text(header + render_properties(props))
    return ExportResult(
        directory=out_dir,
        config_properties=properties_path,
        model_config=yaml_path,
        archive=mar,
        model_name=spec.name,
        trial_number=best.number,
        config=config,
        throughput_rps=throughput,
        p99_ms=p99,
    )


def export_properties(
    spec: ModelSpec,
    config: TrialConfig,
    *,
    model_store: Path,
    host: str,
    inference_port: int,
    management_port: int,
    metrics_port: int,
    number_of_gpu: int,
) -> dict[str, Any]:
    """The config.properties keys of an export, in the order they are written."""
    address = f"[{host}]" if ":" in host else host
    server = ServerSettings(default_response_timeout_s=spec.response_timeout_s)
    model = {
        "minWorkers": config.workers,
        "maxWorkers": config.workers,
        "batchSize": config.batch_size,
        # TorchServe reads a delay <= 0 as unset (then 100 ms): 1 ms is the shortest it honours.
        "maxBatchDelay": max(1, config.max_batch_delay_ms),
        "responseTimeout": spec.response_timeout_s,
    }
    return {
        "inference_address": f"http://{address}:{inference_port}",
        "management_address": f"http://{address}:{management_port}",
        "metrics_address": f"http://{address}:{metrics_port}",
        "model_store": str(model_store),
        "load_models": f"{spec.name}.mar",
        "models": {spec.name: {MODEL_VERSION: model}},
        "default_workers_per_model": config.workers,
        "number_of_gpu": number_of_gpu,
        "enable_model_api": False,
        "job_queue_size": server.job_queue_size,
        "default_response_timeout": server.default_response_timeout_s,
        "metrics_mode": "prometheus",
        "disable_system_metrics": True,
        "install_py_dep_per_model": False,
    }


def best_feasible_trial(study: optuna.Study) -> FrozenTrial:
    """Optuna's ``study.best_trial`` (feasible trials only); ConfigError when there is none."""
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    if not complete:
        raise ConfigError(
            f"study {study.study_name!r} has no completed trial yet; run `autotune run` first"
        )
    try:
        best = study.best_trial
    except ValueError:
        best = None
    if best is not None and is_feasible(best):
        return best
    p99s = [(p, t.number) for t in complete if (p := _finite(t.user_attrs.get(A.P99_MS)))]
    sla = _finite(study.user_attrs.get(A.STUDY_SLA_MS))
    sla_text = f" (P99 <= {sla:g} ms)" if sla is not None else ""
    fastest = (
        "the fastest P99 was {:.1f} ms (trial {})".format(*min(p99s))
        if p99s
        else "no trial measured a P99"
    )
    raise ConfigError(
        f"no trial of study {study.study_name!r} met the SLA{sla_text}: {fastest}; "
        "relax --sla-ms, widen the search space or run on faster hardware"
    )


def _model_of(study: optuna.Study) -> ModelSpec:
    name = study.user_attrs.get(A.STUDY_MODEL)
    if not isinstance(name, str):
        raise ConfigError(
            f"study {study.study_name!r} does not say which model it tuned "
            f"(no {A.STUDY_MODEL!r} user attr); was it created by `autotune run`?"
        )
    return get_model(name)


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
) -> str:
    sla = _finite(study.user_attrs.get(A.STUDY_SLA_MS))
    measured = f"{throughput:.1f} req/s at P99 " + (f"{p99_ms:.1f} ms" if p99_ms else "n/a")
    if sla is not None:
        measured += f" (SLA {sla:g} ms)"
    lines = [
        f"autotune export of study {study.study_name!r}, trial {trial.number}: {config.label()}",
        f"measured: {measured}",
        "start: torchserve --start --ncs --ts-config <this file>",
        "token authorisation is on: the keys are in key_file.json in the folder it starts in",
        "model-config.yaml in the archive holds the same workers/batch values (it wins)",
    ]
    if config.max_batch_delay_ms <= 0:
        lines.append("max batch delay 0 ms is written as 1 ms: TorchServe reads <= 0 as unset")
    return "".join(f"# {line}\n" for line in lines)


def trial_config_properties(study: optuna.Study, config: TrialConfig) -> str:
    """The config.properties ``autotune export`` would write for ``config`` (a trial artifact).

    Default ports, and the model store relative to the folder TorchServe starts in.
    """
    spec = _model_of(study)
    props = export_properties(
        spec,
        config,
        model_store=Path(MODEL_STORE_DIR),
        host="127.0.0.1",
        inference_port=8080,
        management_port=8081,
        metrics_port=8082,
        number_of_gpu=_gpus_for(study, config),
    )
    header = f"# what `autotune export` writes for {config.label()} (default ports)\n"
    return header + render_properties(props)
