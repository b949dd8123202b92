"""The models the tuner can deploy: a TorchServe archive of the user's, or a built-in model (or a
self-contained handler file), which is built into such an archive first and from then on is
handled exactly as a user's archive (``ModelSource``)."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from types import MappingProxyType
from typing import Any

from autotune._errors import ConfigError
from autotune.serving._archive import build_archive


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
    extra_files: tuple[Path, ...] = ()  # shipped beside the handler (--extra-files)

    def archive_config(self) -> dict[str, Any]:
        """The model-config.yaml the built archive carries: the model's own settings."""
        return {"responseTimeout": self.response_timeout_s, "handler": dict(self.handler_defaults)}

    def build(self, cache_dir: Path) -> Path:
        """The model as a ``.mar``, built once per content into ``cache_dir``."""
        return build_archive(
            model_name=self.name,
            handler=self.handler_path,
            extra_files=self.extra_files,
            config=self.archive_config(),
            cache_dir=cache_dir,
        )


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
                extra_files=(_handler("autotune_handler_utils.py"),),
            ),
            ModelSpec(
                name="animated_drawings_d2",
                description=(
                    "Animated Drawings figure detector as the article serves it: Detectron2's "
                    "Mask R-CNN R50-FPN (mask_rcnn_R_50_FPN_3x), random weights unless a "
                    "checkpoint is given; needs Detectron2 installed"
                ),
                handler_path=_handler("maskrcnn_detector.py"),
                sample_path=_asset("drawing.jpg"),
                space="animated_drawings",
                handler_defaults={
                    "backend": "detectron2",
                    "min_size": 800,
                    "max_size": 1333,
                    "detections_per_img": 100,
                },
                response_timeout_s=300,
                default_trials=30,
                extra_files=(_handler("autotune_handler_utils.py"),),
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
                extra_files=(_handler("autotune_handler_utils.py"),),
            ),
        )
    }
)

DEFAULT_MODEL = "animated_drawings"
_SAFE = re.compile(r"[^A-Za-z0-9_-]+")


ARCHIVE_SPACE = "archive"  # the search space of a user's archive (search_spaces/archive.yaml)
ARCHIVE_TRIALS = 10
_ARCHIVE_SUFFIXES = (".mar", ".tar.gz", ".tgz")


def get_model(name: str) -> ModelSpec:
    """A built-in model by name, or a handler file of the user's (``--model my_handler.py``)."""
    if name in BUILTIN_MODELS:
        return BUILTIN_MODELS[name]
    if name.endswith(".py"):
        path = Path(name)
        if not path.is_file():
            raise ConfigError(f"--model {name}: no such handler file")
        return ModelSpec(
            name=_SAFE.sub("_", path.stem).strip("_") or "model",
            description=f"custom handler {path.name}",
            handler_path=path.resolve(),
            sample_path=None,
            space="quick",
        )
    known = ", ".join(sorted(BUILTIN_MODELS))
    raise ConfigError(
        f"unknown model {name!r}; use --model with one of: {known}, a TorchServe archive "
        "(.mar, .tar.gz, a no-archive folder) or a handler file (.py)"
    )


@dataclass(frozen=True, kw_only=True)
class ModelSource:
    """Where a run's archive comes from: a user's archive, or a built-in model built into one."""

    label: str  # what the study records as its model: a built-in name or the archive's path
    archive: Path
    spec: ModelSpec | None = None  # a built-in model (or handler file): sample, space, trials

    @property
    def sample_path(self) -> Path | None:
        return self.spec.sample_path if self.spec is not None else None

    @property
    def space(self) -> str:
        return self.spec.space if self.spec is not None else ARCHIVE_SPACE

    @property
    def default_trials(self) -> int:
        return self.spec.default_trials if self.spec is not None else ARCHIVE_TRIALS


def is_archive_path(model: str) -> bool:
    path = Path(model)
    return (
        model.endswith(_ARCHIVE_SUFFIXES)
        or path.is_dir()
        or (path.exists() and not model.endswith(".py"))
    )


def model_source(model: str, *, cache_dir: Path) -> ModelSource:
    """``--model``: a built-in name, a handler file (.py), or a path to an archive."""
    if model in BUILTIN_MODELS or model.endswith(".py"):
        spec = get_model(model)
        return ModelSource(
            label=model if model in BUILTIN_MODELS else str(spec.handler_path),
            archive=spec.build(cache_dir),
            spec=spec,
        )
    if is_archive_path(model):
        return ModelSource(label=str(Path(model).resolve()), archive=Path(model).resolve())
    get_model(model)  # raises: names the built-in models and the archive forms
    raise AssertionError("unreachable")
