"""The models the tuner can deploy: the built-in ones, or a user's own handler file."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from types import MappingProxyType
from typing import Any

from autotune._errors import ConfigError


def _handler(file: str) -> Path:
    return Path(str(resources.files("autotune.handlers").joinpath(file)))


def _asset(file: str) -> Path:
    return Path(str(resources.files("autotune").joinpath("assets", file)))


@dataclass(frozen=True, kw_only=True)
class ModelSpec:
    """A model the tuner can archive and deploy."""

    name: str
    description: str
    handler_path: Path
    sample_path: Path | None  # None: the user must give --input
    space: str  # a built-in search space (``search_spaces/<space>.yaml``)
    handler_defaults: Mapping[str, Any] = field(default_factory=dict)
    response_timeout_s: int = 120
    default_trials: int = 20


BUILTIN_MODELS: Mapping[str, ModelSpec] = MappingProxyType(
    {
        spec.name: spec
        for spec in (
            ModelSpec(
                name="animated_drawings",
                description=(
                    "Animated Drawings figure detector: Mask R-CNN R50-FPN (torchvision), "
                    "random weights unless a checkpoint is given"
                ),
                handler_path=_handler("maskrcnn_detector.py"),
                sample_path=_asset("drawing.jpg"),
                space="animated_drawings",
                handler_defaults={"min_size": 800, "max_size": 1333, "detections_per_img": 100},
                response_timeout_s=300,
                default_trials=30,
            ),
            ModelSpec(
                name="quick",
                description="quick image classifier: MobileNetV3-Small at 224 px, random weights",
                handler_path=_handler("image_classifier.py"),
                sample_path=_asset("quick_sample.jpg"),
                space="quick",
                handler_defaults={"image_size": 224},
                response_timeout_s=60,
                default_trials=10,
            ),
        )
    }
)

DEFAULT_MODEL = "animated_drawings"
_SAFE = re.compile(r"[^A-Za-z0-9_-]+")


def get_model(name: str, *, response_timeout_s: int | None = None) -> ModelSpec:
    """A built-in model by name, or a handler file of the user's (``--model my_handler.py``)."""
    if name in BUILTIN_MODELS:
        spec = BUILTIN_MODELS[name]
    elif name.endswith(".py"):
        path = Path(name)
        if not path.is_file():
            raise ConfigError(f"--model {name}: no such handler file")
        spec = ModelSpec(
            name=_SAFE.sub("_", path.stem).strip("_") or "model",
            description=f"custom handler {path.name}",
            handler_path=path.resolve(),
            sample_path=None,
            space="quick",
        )
    else:
        known = ", ".join(sorted(BUILTIN_MODELS))
        raise ConfigError(
            f"unknown model {name!r}; use --model with one of: {known}, or a handler file (.py)"
        )
    if response_timeout_s is not None:
        from dataclasses import replace

        spec = replace(spec, response_timeout_s=response_timeout_s)
    return spec
