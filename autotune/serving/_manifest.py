"""``MAR-INF/MANIFEST.json`` of a model archive, as torch-model-archiver writes it."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from autotune._errors import ConfigError

MANIFEST_PATH: Final = Path("MAR-INF") / "MANIFEST.json"
DEFAULT_CONFIG_FILE: Final = "model-config.yaml"


@dataclass(frozen=True, kw_only=True)
class Manifest:
    """What TorchServe reads from the manifest: the model's name, version, handler and files."""

    model_name: str
    model_version: str
    handler: str
    serialized_file: str | None = None
    model_file: str | None = None
    config_file: str | None = None
    runtime: str = "python"
    raw: Mapping[str, Any] = field(default_factory=dict, compare=False, repr=False)

    @property
    def torchscript_artifact(self) -> bool:
        """BaseHandler loads a ``.pt`` serialized file without a model file as TorchScript."""
        return not self.model_file and (self.serialized_file or "").endswith(".pt")

    def artifact_text(self) -> str:
        if self.model_file:
            return f"eager model ({self.model_file} + {self.serialized_file or 'no weights'})"
        if self.torchscript_artifact:
            return f"TorchScript model ({self.serialized_file})"
        if self.serialized_file:
            return f"serialized file {self.serialized_file}"
        return "no serialized file (the handler builds the model)"


def read_manifest(directory: Path, *, source: str) -> Manifest:
    """The manifest of an unpacked archive; ConfigError naming ``source`` when it is unusable."""
    path = directory / MANIFEST_PATH
    if not path.is_file():
        raise ConfigError(
            f"{source}: no {MANIFEST_PATH.as_posix()} inside; not a TorchServe model archive "
            "(make one with torch-model-archiver)"
        )
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise ConfigError(f"{source}: {MANIFEST_PATH.as_posix()} is not JSON: {exc}") from None
    model = data.get("model") if isinstance(data, Mapping) else None
    if not isinstance(model, Mapping):
        raise ConfigError(f"{source}: {MANIFEST_PATH.as_posix()} has no 'model' section")
    handler = model.get("handler")
    if not isinstance(handler, str) or not handler:
        raise ConfigError(f"{source}: {MANIFEST_PATH.as_posix()} names no handler")
    name = model.get("modelName")
    if not isinstance(name, str) or not name:
        raise ConfigError(f"{source}: {MANIFEST_PATH.as_posix()} names no modelName")

    def text(key: str) -> str | None:
        value = model.get(key)
        return value if isinstance(value, str) and value else None

    return Manifest(
        model_name=name,
        model_version=text("modelVersion") or text("version") or "1.0",
        handler=handler,
        serialized_file=text("serializedFile"),
        model_file=text("modelFile"),
        config_file=text("configFile"),
        runtime=str(data.get("runtime") or "python"),
        raw=data,
    )


def with_config_file(directory: Path, manifest: Manifest) -> Manifest:
    """Make the manifest of an unpacked copy name a model-config.yaml (TorchServe reads the YAML
    only through ``configFile``); returns the manifest as rewritten."""
    if manifest.config_file:
        return manifest
    data = json.loads(json.dumps(manifest.raw))
    data["model"]["configFile"] = DEFAULT_CONFIG_FILE
    (directory / MANIFEST_PATH).write_text(json.dumps(data, indent=2), encoding="utf-8")
    return read_manifest(directory, source=str(directory))
