"""The built-in models: which handler serves each, its sample input and its default space."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from types import MappingProxyType
from typing import Any

from autotune._errors import ConfigError


@dataclass(frozen=True, kw_only=True)
class ModelSpec:
    """A model the tuner can archive and deploy."""

    name: str
    description: str
    handler_file: str  # a file of the ``handlers`` package
    sample_file: str  # a file of ``autotune/assets``
    space: str  # a built-in search space (``search_spaces/<space>.yaml``)
    handler_defaults: Mapping[str, Any] = field(default_factory=dict)
    response_timeout_s: int = 120
    default_trials: int = 20

    @property
    def handler_path(self) -> Path:
        return Path(str(resources.files("handlers").joinpath(self.handler_file)))

    @property
    def sample_path(self) -> Path:
        return Path(str(resources.files("autotune").joinpath("assets", self.sample_file)))


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
                handler_file="maskrcnn_detector.py",
                sample_file="drawing.jpg",
                space="animated_drawings",
                handler_defaults={"min_size": 800, "max_size": 1333, "detections_per_img": 100},
                response_timeout_s=300,
            ),
            ModelSpec(
                name="quick",
                description="quick image classifier: ResNet-18 at 224 px, random weights",
                handler_file="image_classifier.py",
                sample_file="quick_sample.jpg",
                space="quick",
                handler_defaults={"image_size": 224},
                response_timeout_s=60,
                default_trials=10,
            ),
        )
    }
)

DEFAULT_MODEL = "animated_drawings"


def get_model(name: str) -> ModelSpec:
    try:
        return BUILTIN_MODELS[name]
    except KeyError:
        known = ", ".join(sorted(BUILTIN_MODELS))
        raise ConfigError(f"unknown model {name!r}; use --model with one of: {known}") from None
