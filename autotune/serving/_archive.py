"""Package a model once per study with torch-model-archiver and write its model-config.yaml.

The archive is TorchServe's *no-archive* directory format (``<store>/<name>/`` with
``MAR-INF/MANIFEST.json``), so each trial rewrites ``model-config.yaml`` in place and registers
the directory again: no unzip per trial. ``minWorkers``/``maxWorkers``/``batchSize`` are left out
of the YAML on purpose: in TorchServe 0.12 YAML workers override the REST ``initial_workers``.
"""

from __future__ import annotations

import os
import re
import subprocess
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from autotune._errors import ConfigError, DeploymentError
from autotune.serving._models import ModelSpec
from autotune.serving._process import find_executable
from autotune.space import TrialConfig

MODEL_VERSION = "1.0"
MODEL_CONFIG_FILE = "model-config.yaml"
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]*$")


def _archiver() -> str:
    found = find_executable("torch-model-archiver")
    if found is None:
        raise DeploymentError(
            "torch-model-archiver not found; install it with `pip install torch-model-archiver`"
        )
    return found


def model_config(
    spec: ModelSpec,
    config: TrialConfig,
    *,
    extra_handler: Mapping[str, Any] | None = None,
    workers: bool = False,
) -> dict[str, Any]:
    """The model-config.yaml content for one configuration.

    ``workers=True`` (export only) pins ``minWorkers``/``maxWorkers``/``batchSize``/
    ``maxBatchDelay`` in the YAML, where TorchServe reads them when it loads the model at start.
    """
    handler: dict[str, Any] = dict(spec.handler_defaults)
    handler.update(extra_handler or {})
    handler.update(config.handler_settings())
    content: dict[str, Any] = {
        "deviceType": "gpu" if config.device == "cuda" else "cpu",
        "responseTimeout": spec.response_timeout_s,
        "handler": handler,
    }
    if workers:
        content.update(
            minWorkers=config.workers,
            maxWorkers=config.workers,
            batchSize=config.batch_size,
            # TorchServe reads a delay <= 0 as "unset" (and falls back to 100 ms).
            maxBatchDelay=max(1, config.max_batch_delay_ms),
        )
    return content


def write_yaml_atomic(path: Path, content: Mapping[str, Any]) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".", suffix=".yaml")
    with os.fdopen(fd, "w") as f:
        yaml.safe_dump(dict(content), f, sort_keys=False)
    os.replace(tmp, path)


def build_archive(
    spec: ModelSpec,
    store: Path,
    *,
    model_name: str,
    initial_config: Mapping[str, Any],
    archive_format: str = "no-archive",
) -> Path:
    """Run torch-model-archiver; returns the archive (a directory for no-archive, else a file)."""
    if not _NAME_RE.match(model_name):
        raise ConfigError(
            f"model name {model_name!r} must be letters, digits, '-' or '_' (no paths)"
        )
    store.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="autotune-archive-") as tmp:
        config_path = Path(tmp) / MODEL_CONFIG_FILE
        write_yaml_atomic(config_path, initial_config)
        cmd = [
            _archiver(),
            "--model-name",
            model_name,
            "--version",
            MODEL_VERSION,
            "--handler",
            str(spec.handler_path),
            "--config-file",
            str(config_path),
            "--export-path",
            str(store),
            "--archive-format",
            archive_format,
            "--force",
        ]
        proc = subprocess.run(cmd, capture_output=True, text=True, check=False, timeout=600)
    if proc.returncode != 0:
        last = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["no output"]
        raise DeploymentError(f"torch-model-archiver failed for {model_name}: {last[0]}")
    suffix = {"no-archive": "", "tgz": ".tar.gz"}.get(archive_format, ".mar")
    return store / f"{model_name}{suffix}"


def rewrite_model_config(archive_dir: Path, content: Mapping[str, Any]) -> None:
    """Replace the model-config.yaml of a no-archive directory (before a register)."""
    target = archive_dir / MODEL_CONFIG_FILE
    if not target.parent.is_dir():
        raise DeploymentError(f"model archive {archive_dir} is missing; run the study again")
    write_yaml_atomic(target, content)
