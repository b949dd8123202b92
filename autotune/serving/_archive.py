"""A TorchServe model archive in, an unpacked copy a study rewrites per trial, a tuned archive out.

Every model goes one way. ``open_archive`` takes a ``.mar`` (zip), a ``.tar.gz``/``.tgz`` or a
no-archive directory (``--archive-format no-archive``), never changes it, and unpacks it once
into the run's own model store as a no-archive directory, so that each trial rewrites its
``model-config.yaml`` in place and registers the directory again (TorchServe symlinks a
directory instead of unzipping it). The built-in models are built into such an archive first
(``build_archive``, cached by content; see ``autotune.serving._models``).

``model_config`` writes one configuration into the archive's own YAML: every key of the user's
YAML is kept except the ones the study controls (``CONTROLLED_KEYS``, and the handler keys of
the knobs the handler declares), which are overridden per trial. In TorchServe 0.12 the YAML
beats ``config.properties`` for workers, batch size, batch delay and timeouts, and beats the
register call's ``initial_workers``, so the study writes each of these where TorchServe reads
it: the trial's values go in the YAML and in the register call alike.
"""

from __future__ import annotations

import copy
import hashlib
import os
import re
import shutil
import subprocess
import tarfile
import tempfile
import zipfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import yaml

from autotune._errors import ConfigError, DeploymentError
from autotune.serving._knobs import HandlerInfo, Knobs, inspect_handler
from autotune.serving._manifest import (
    DEFAULT_CONFIG_FILE,
    MANIFEST_PATH,
    Manifest,
    read_manifest,
    with_config_file,
)
from autotune.serving._process import find_executable
from autotune.serving._properties import MIN_BATCH_DELAY_MS
from autotune.space import TrialConfig

MODEL_VERSION: Final = "1.0"
MODEL_CONFIG_FILE: Final = DEFAULT_CONFIG_FILE
# The server-side keys of model-config.yaml a study sets per trial.
CONTROLLED_KEYS: Final = (
    "minWorkers",
    "maxWorkers",
    "batchSize",
    "maxBatchDelay",
    "deviceType",
    "responseTimeout",
    "pt2",
)
# A torch.compile trial compiles on its first calls (per worker, about 30 s for a ResNet-18 on
# two cores): its workers get this long to answer them before TorchServe gives up on them.
COMPILE_RESPONSE_TIMEOUT_S: Final = 600
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]*$")
_SAFE = re.compile(r"[^A-Za-z0-9_-]+")


@dataclass(frozen=True, kw_only=True)
class ModelArchive:
    """An archive unpacked into a model store: what TorchServe will load, and what it holds."""

    source: Path  # the user's file or folder, never changed
    directory: Path  # the no-archive copy in the store; registered by its name
    manifest: Manifest
    user_config: Mapping[str, Any] = field(default_factory=dict)  # its own model-config.yaml
    handler: HandlerInfo

    @property
    def model_name(self) -> str:
        return self.manifest.model_name

    @property
    def url(self) -> str:
        """What the register call's ``url`` is: the directory's name in the model store."""
        return self.directory.name

    @property
    def config_path(self) -> Path:
        return self.directory / (self.manifest.config_file or MODEL_CONFIG_FILE)

    def response_timeout_s(self, default: int = 120) -> int:
        value = self.user_config.get("responseTimeout")
        return (
            value
            if isinstance(value, int) and not isinstance(value, bool) and value > 0
            else (default)
        )


def archive_kind(path: Path) -> str:
    """``dir``, ``mar`` (zip) or ``tgz``, by what the file is; ConfigError for anything else."""
    if path.is_dir():
        return "dir"
    if not path.is_file():
        raise ConfigError(
            f"--model {path}: no such file or directory; give a built-in model name or a "
            "TorchServe archive (.mar, .tar.gz or a no-archive folder)"
        )
    if zipfile.is_zipfile(path):
        return "mar"
    try:
        if tarfile.is_tarfile(path):
            return "tgz"
    except OSError:
        pass
    raise ConfigError(
        f"--model {path}: not a model archive (neither a zip .mar, a .tar.gz nor a folder); "
        "make one with torch-model-archiver"
    )


def open_archive(source: Path, store: Path, *, name: str | None = None) -> ModelArchive:
    """Unpack ``source`` into ``store`` as a no-archive directory and read it."""
    source = source.resolve()
    kind = archive_kind(source)
    store.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".unpack-", dir=store) as tmp:
        unpacked = Path(tmp) / "model"
        if kind == "dir":
            shutil.copytree(source, unpacked, symlinks=False)
        elif kind == "mar":
            _unzip(source, unpacked)
        else:
            _untar(source, unpacked)
        root = _archive_root(unpacked)
        manifest = read_manifest(root, source=str(source))
        target = store / _safe_name(name or manifest.model_name)
        if target.exists():
            shutil.rmtree(target)
        os.replace(root, target)
    manifest = with_config_file(target, manifest)
    config_path = target / (manifest.config_file or MODEL_CONFIG_FILE)
    user_config = _read_yaml(config_path, source=f"{source}: {config_path.name}")
    handler = inspect_handler(manifest, target, source=str(source))
    return ModelArchive(
        source=source,
        directory=target,
        manifest=manifest,
        user_config=user_config,
        handler=handler,
    )


def _safe_name(name: str) -> str:
    return _SAFE.sub("_", name).strip("_") or "model"


def _unzip(path: Path, dest: Path) -> None:
    dest.mkdir(parents=True)
    try:
        with zipfile.ZipFile(path) as zf:
            for member in zf.namelist():
                target = (dest / member).resolve()
                if not target.is_relative_to(dest.resolve()):
                    raise ConfigError(f"--model {path}: member {member!r} points outside it")
            zf.extractall(dest)
    except (zipfile.BadZipFile, OSError) as exc:
        raise ConfigError(f"--model {path}: cannot unpack the archive: {exc}") from None


def _untar(path: Path, dest: Path) -> None:
    dest.mkdir(parents=True)
    try:
        with tarfile.open(path) as tf:
            tf.extractall(dest, filter="data")
    except (tarfile.TarError, OSError) as exc:
        raise ConfigError(f"--model {path}: cannot unpack the archive: {exc}") from None


def _archive_root(unpacked: Path) -> Path:
    """The folder holding MAR-INF: the top, or its only sub-folder (a tgz made of a folder)."""
    if (unpacked / MANIFEST_PATH).exists():
        return unpacked
    children = [p for p in unpacked.iterdir() if not p.name.startswith(".")]
    if len(children) == 1 and children[0].is_dir():
        return children[0]
    return unpacked


def _read_yaml(path: Path, *, source: str) -> dict[str, Any]:
    if not path.is_file():
        return {}
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise ConfigError(f"{source}: not valid YAML: {' '.join(str(exc).split())}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: must be a mapping, got {type(data).__name__}")
    return data


# -- one configuration in the archive's YAML --------------------------------------------------


def model_config(
    archive: ModelArchive,
    knobs: Knobs,
    config: TrialConfig,
    *,
    handler_extra: Mapping[str, Any] | None = None,
    response_timeout_s: int | None = None,
) -> dict[str, Any]:
    """The archive's model-config.yaml with ``config`` written into the keys the study controls.

    ``response_timeout_s`` overrides the archive's ``responseTimeout`` (``--response-timeout-s``);
    a compile configuration gets at least ``COMPILE_RESPONSE_TIMEOUT_S`` (its first calls
    compile).
    """
    content: dict[str, Any] = copy.deepcopy(dict(archive.user_config))
    content.update(
        minWorkers=config.workers,
        maxWorkers=config.workers,
        batchSize=config.batch_size,
        maxBatchDelay=max(MIN_BATCH_DELAY_MS, config.max_batch_delay_ms),
        deviceType="gpu" if config.device == "cuda" else "cpu",
    )
    timeout = response_timeout_s or archive.response_timeout_s()
    if config.compile:
        timeout = max(timeout, COMPILE_RESPONSE_TIMEOUT_S)
    if timeout != archive.user_config.get("responseTimeout"):
        content["responseTimeout"] = timeout
    if knobs.compile_via == "pt2":
        user_pt2 = content.pop("pt2", None)
        if config.compile:
            # One graph for every batch size above 1 (a batch of 1 is specialised anyway);
            # without it inductor compiles again for each new batch size, under load.
            options: dict[str, Any] = {"backend": "inductor"}
            if config.batch_size > 1:
                options["dynamic"] = True
            if isinstance(user_pt2, Mapping) and isinstance(user_pt2.get("compile"), Mapping):
                options.update(user_pt2["compile"])
            options["enable"] = True
            content["pt2"] = {"compile": options}
    handler_keys = knobs.handler_keys()
    extra = dict(handler_extra or {})
    if handler_keys or extra:
        section = content.get("handler")
        handler: dict[str, Any] = dict(section) if isinstance(section, Mapping) else {}
        handler.update(extra)
        if handler_keys:
            handler["device"] = config.device
            settings = config.handler_settings()
            handler.update({k: settings[k] for k in handler_keys})
        content["handler"] = handler
    return content


def overridden_keys(
    archive: ModelArchive, knobs: Knobs, *, handler_extra: Mapping[str, Any] | None = None
) -> tuple[list[str], list[str]]:
    """(keys of the archive's own YAML the study overrides, keys it adds), for the run's notes."""
    # responseTimeout is overridden only by --response-timeout-s or a compile trial
    controlled = [
        k
        for k in CONTROLLED_KEYS
        if k != "responseTimeout" and (k != "pt2" or knobs.compile_via == "pt2")
    ]
    handler_keys = [f"handler.{k}" for k in knobs.handler_keys()]
    if handler_keys:
        handler_keys.insert(0, "handler.device")
    handler_keys += [f"handler.{k}" for k in (handler_extra or {})]
    section = archive.user_config.get("handler")
    present = set(archive.user_config) | {
        f"handler.{k}" for k in (section if isinstance(section, Mapping) else {})
    }
    every = controlled + handler_keys
    return [k for k in every if k in present], [
        k for k in every if k not in present and k not in ("responseTimeout", "pt2")
    ]


def write_yaml_atomic(path: Path, content: Mapping[str, Any]) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".", suffix=".yaml")
    with os.fdopen(fd, "w") as f:
        yaml.safe_dump(dict(content), f, sort_keys=False)
    os.replace(tmp, path)


def rewrite_model_config(archive: ModelArchive, content: Mapping[str, Any]) -> None:
    """Replace the model-config.yaml of the unpacked archive (before a register)."""
    if not archive.directory.is_dir():
        raise DeploymentError(f"model archive {archive.directory} is missing; run the study again")
    write_yaml_atomic(archive.config_path, content)


def pack_mar(archive: ModelArchive, content: Mapping[str, Any], out: Path) -> Path:
    """A ``.mar`` (zip) of the unpacked archive with ``content`` as its model-config.yaml."""
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=out.parent, prefix=".", suffix=".mar")
    os.close(fd)
    config_name = archive.config_path.relative_to(archive.directory).as_posix()
    with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for path in sorted(archive.directory.rglob("*")):
            rel = path.relative_to(archive.directory).as_posix()
            if path.is_file() and rel != config_name:
                zf.write(path, rel)
        zf.writestr(config_name, yaml.safe_dump(dict(content), sort_keys=False))
    os.replace(tmp, out)
    return out


# -- building an archive (the built-in models, a handler file) ---------------------------------


def _archiver() -> str:
    found = find_executable("torch-model-archiver")
    if found is None:
        raise DeploymentError(
            "torch-model-archiver not found; install it with `pip install torch-model-archiver`"
        )
    return found


def content_key(parts: Sequence[bytes]) -> str:
    digest = hashlib.sha256()
    for part in parts:
        digest.update(hashlib.sha256(part).digest())
    return digest.hexdigest()[:16]


def build_archive(
    *,
    model_name: str,
    handler: Path,
    extra_files: Sequence[Path] = (),
    config: Mapping[str, Any],
    cache_dir: Path,
) -> Path:
    """A ``.mar`` built by torch-model-archiver from a handler file, cached by its content.

    The cache key covers the handler, the extra files and the model-config.yaml: a changed
    handler builds a new archive, an unchanged one is reused.
    """
    if not _NAME_RE.match(model_name):
        raise ConfigError(
            f"model name {model_name!r} must be letters, digits, '-' or '_' (no paths)"
        )
    config_text = yaml.safe_dump(dict(config), sort_keys=True)
    key = content_key(
        [handler.read_bytes(), config_text.encode()]
        + [p.name.encode() + b"\0" + p.read_bytes() for p in extra_files]
    )
    target = cache_dir / f"{model_name}-{key}.mar"
    if target.is_file():
        return target
    cache_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".build-", dir=cache_dir) as tmp:
        config_path = Path(tmp) / MODEL_CONFIG_FILE
        config_path.write_text(yaml.safe_dump(dict(config), sort_keys=False))
        cmd = [
            _archiver(),
            "--model-name", model_name,
            "--version", MODEL_VERSION,
            "--handler", str(handler),
            "--config-file", str(config_path),
            "--export-path", tmp,
            "--archive-format", "default",
            "--force",
        ]  # fmt: skip
        if extra_files:
            cmd += ["--extra-files", ",".join(str(p) for p in extra_files)]
        # torch-model-archiver stages the files in $TMPDIR/<model name> and deletes that folder
        # first, so two builds of one model at once (two tuners sharing a study) would delete
        # each other's files: each build stages in its own folder.
        staging = Path(tmp) / "staging"
        staging.mkdir()
        env = {**os.environ, "TMPDIR": str(staging)}
        proc = subprocess.run(
            cmd, capture_output=True, text=True, check=False, timeout=600, env=env
        )
        if proc.returncode != 0:
            last = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["no output"]
            raise DeploymentError(f"torch-model-archiver failed for {model_name}: {last[0]}")
        os.replace(Path(tmp) / f"{model_name}.mar", target)
    return target
