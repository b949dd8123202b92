"""What autotune's own TorchServe handlers share: typed settings, threads, graphs, requests.

Shipped once, beside the handler file, with ``torch-model-archiver --extra-files``: TorchServe
puts the model folder on ``sys.path``, so a handler imports this file as the top-level module
``autotune_handler_utils``; installed, it is ``autotune.handlers.autotune_handler_utils``.

The settings of each handler are one frozen dataclass (``ClassifierSettings``,
``DetectorSettings``), built from the ``handler:`` section of model-config.yaml by
``read_settings``: a key the handler does not read is refused with a line naming it, so a typo
(``fp_16: true``) fails the worker's load instead of silently measuring fp32. The classes live
here and not in the handler files because TorchServe loads a handler file only when it defines
exactly one class.

Knobs every autotune handler implements (declared in each file as ``AUTOTUNE_KNOBS``):

    device                "cpu" (default) or "cuda"; on cuda the worker's ``gpu_id`` is used
    fp16                  false; true runs in half precision (cuda only)
    torchscript           false; true runs a TorchScript graph (torch >= 2.10 marks TorchScript
                          deprecated; it stays a lever because it still pays on small CPUs)
    compile               false; true runs torch.compile (inductor) on the model, compiled in
                          ``initialize`` by one warm-up call; at most one of torchscript, compile
    torchscript_cache_dir unset; a folder where a TorchScript module is saved once per settings
                          key and loaded by later workers instead of compiling again (compiled
                          graphs use inductor's own on-disk cache)
    threads_per_worker    0 = torch's default; n > 0 sets intra- and inter-op threads to n
    channels_last         default true: NHWC convolutions
    checkpoint            unset; a state dict path, relative to the model dir or absolute
"""

from __future__ import annotations

import contextlib
import dataclasses
import gc
import hashlib
import io
import json
import logging
import os
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import torch
from PIL import Image, ImageOps, UnidentifiedImageError

logger = logging.getLogger(__name__)

SEED = 0
BAD_IMAGE_ERRORS = (OSError, ValueError, SyntaxError, EOFError, Image.DecompressionBombError)
CLASSIFIER_ARCHITECTURES = ("mobilenet_v3_small", "resnet18")
DETECTOR_BACKENDS = ("torchvision", "detectron2")


# --- settings -------------------------------------------------------------------------------


def _need_bool(name: str, value: Any) -> None:
    if not isinstance(value, bool):
        raise ValueError(f"`{name}` must be true or false, but got {value!r}.")


def _need_int(name: str, value: Any, low: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ValueError(f"`{name}` must be an integer >= {low}, but got {value!r}.")


def _need_fraction(name: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= 1:
        raise ValueError(f"`{name}` must be a number in [0, 1], but got {value!r}.")


def _need_path(name: str, value: Any) -> None:
    if value is not None and not (isinstance(value, str) and value):
        raise ValueError(f"`{name}` must be a file path, but got {value!r}.")


@dataclass(frozen=True, kw_only=True)
class HandlerSettings:
    """The knobs every autotune handler implements (see the module docstring)."""

    device: str = "cpu"
    fp16: bool = False
    torchscript: bool = False
    compile: bool = False
    torchscript_cache_dir: str | None = None
    threads_per_worker: int = 0
    channels_last: bool = True
    checkpoint: str | None = None

    def __post_init__(self) -> None:
        for name in ("fp16", "torchscript", "compile", "channels_last"):
            _need_bool(name, getattr(self, name))
        _need_int("threads_per_worker", self.threads_per_worker, 0)
        _need_path("checkpoint", self.checkpoint)
        _need_path("torchscript_cache_dir", self.torchscript_cache_dir)
        if self.device not in ("cpu", "cuda"):
            raise ValueError(f"`device` must be 'cpu' or 'cuda', but got {self.device!r}.")
        if self.device == "cuda" and not torch.cuda.is_available():
            raise ValueError("`device` is 'cuda', but torch.cuda.is_available() is False here.")
        if self.fp16 and self.device != "cuda":
            raise ValueError("`fp16` needs device 'cuda', but got device 'cpu'.")
        if self.torchscript and self.compile:
            raise ValueError("`torchscript` and `compile` are exclusive: set at most one to true.")


@dataclass(frozen=True, kw_only=True)
class ClassifierSettings(HandlerSettings):
    """``image_classifier``: ``architecture`` (mobilenet_v3_small or resnet18), ``image_size``."""

    architecture: str = "mobilenet_v3_small"
    image_size: int = 224

    def __post_init__(self) -> None:
        super().__post_init__()
        _need_int("image_size", self.image_size, 1)
        if self.architecture not in CLASSIFIER_ARCHITECTURES:
            raise ValueError(
                f"`architecture` must be one of {sorted(CLASSIFIER_ARCHITECTURES)}, "
                f"but got {self.architecture!r}."
            )


@dataclass(frozen=True, kw_only=True)
class DetectorSettings(HandlerSettings):
    """``maskrcnn_detector``: the Mask R-CNN's sizes, thresholds and backend."""

    min_size: int = 800
    max_size: int = 1333
    detections_per_img: int = 100
    score_thresh: float | None = None  # None: 0.0 with random weights, 0.05 with a checkpoint
    num_classes: int | None = None  # None: 91 (torchvision); Detectron2 reads its config's
    mask_threshold: float = 0.5
    backend: str = "torchvision"
    detectron2_config: str | None = None  # None: the article's config, from Detectron2 itself

    def __post_init__(self) -> None:
        super().__post_init__()
        for name in ("min_size", "max_size", "detections_per_img"):
            _need_int(name, getattr(self, name), 1)
        if self.num_classes is not None:
            _need_int("num_classes", self.num_classes, 2)
        if self.score_thresh is not None:
            _need_fraction("score_thresh", self.score_thresh)
        _need_fraction("mask_threshold", self.mask_threshold)
        _need_path("detectron2_config", self.detectron2_config)
        if self.backend not in DETECTOR_BACKENDS:
            raise ValueError(
                f"`backend` must be 'torchvision' or 'detectron2', but got {self.backend!r}."
            )
        if self.backend == "detectron2" and self.num_classes is not None:
            raise ValueError(
                "`num_classes` is read by backend 'torchvision' only; with 'detectron2' set "
                "MODEL.ROI_HEADS.NUM_CLASSES in `detectron2_config`."
            )
        if self.backend == "torchvision" and self.detectron2_config is not None:
            raise ValueError("`detectron2_config` needs `backend: detectron2`.")

    @property
    def box_score_thresh(self) -> float:
        if self.score_thresh is not None:
            return float(self.score_thresh)
        return 0.05 if self.checkpoint else 0.0


S = TypeVar("S", bound=HandlerSettings)


def read_settings(cls: type[S], context: Any, handler: str) -> S:
    """The ``handler:`` section of model-config.yaml as ``cls``; ValueError naming a bad key."""
    section = (getattr(context, "model_yaml_config", None) or {}).get("handler")
    if section is None:
        section = {}
    if not isinstance(section, Mapping):
        raise ValueError(
            f"the handler: section of model-config.yaml must be a mapping, got {section!r}"
        )
    known = [field.name for field in dataclasses.fields(cls)]
    unknown = sorted(str(key) for key in section if key not in known)
    if unknown:
        raise ValueError(
            f"unknown key `{unknown[0]}` in the handler: section of model-config.yaml; "
            f"{handler} reads: {', '.join(sorted(known))}"
        )
    return cls(**{str(key): value for key, value in section.items()})


def model_file(model_dir: str, path: str | None) -> str | None:
    """A settings path, relative to the model dir unless absolute."""
    return os.path.join(model_dir, path) if path else None


def worker_device(settings: HandlerSettings, context: Any) -> torch.device:
    if settings.device == "cuda":
        return torch.device("cuda", int(context.system_properties.get("gpu_id") or 0))
    return torch.device("cpu")


def file_key(path: str | None) -> list[Any] | None:
    """What identifies a weights file in a cache key: path, size and mtime."""
    if not path:
        return None
    stat = os.stat(path)
    return [path, stat.st_size, stat.st_mtime_ns]


# --- threads, requests ----------------------------------------------------------------------


def set_threads(threads: int) -> None:
    """Apply ``threads_per_worker``: 0 leaves torch's defaults."""
    if threads <= 0:
        return
    torch.set_num_threads(threads)
    try:
        torch.set_num_interop_threads(threads)
    except RuntimeError:  # only possible before the first inter-op work of the process
        logger.info("inter-op threads already fixed at %d", torch.get_num_interop_threads())


def freeze_heap() -> None:
    """End of ``initialize``: move every object the worker holds now (torch, the model, its
    graphs) out of the garbage collector's full collections (``gc.freeze``).

    A full (generation 2) collection walks every tracked object of the process; in a worker
    with torch and a model loaded that took 117-179 ms on the 2-core host, once every few
    thousand requests, and a worker answers nothing meanwhile. The workers of one model take
    their requests in step, so they collect at about the same time and the whole server stalls:
    30-90 consecutive requests over a 100 ms SLA (found with a ``gc.callbacks`` probe in the
    quick model's workers, measured by ``benchmarks/repeatability.py``). Frozen, a full
    collection walks only what the requests themselves allocated. The model lives as long as
    the worker, so nothing frozen would ever have been freed.
    """
    gc.collect()
    gc.freeze()
    if LONG_COLLECTIONS not in gc.callbacks:
        gc.callbacks.append(LONG_COLLECTIONS)


class CollectionLog:
    """A ``gc.callbacks`` entry: a full collection that still stalls the worker for
    ``threshold_ms`` or more goes to the model log as a warning (``benchmarks/repeatability.py``
    counts these lines)."""

    def __init__(
        self, threshold_ms: float = 20.0, clock: Callable[[], float] = time.perf_counter
    ) -> None:
        self.threshold_ms = threshold_ms
        self.clock = clock
        self._started = 0.0

    def __call__(self, phase: str, info: Mapping[str, Any]) -> None:
        if phase == "start":
            self._started = self.clock()
        elif info.get("generation") == 2:
            ms = 1000.0 * (self.clock() - self._started)
            if ms >= self.threshold_ms:
                logger.warning("full garbage collection: %.0f ms", ms)


LONG_COLLECTIONS = CollectionLog()


def decode_image(row: Any) -> Image.Image:
    """The RGB image in one request; ValueError with the reason when there is none."""
    body = (row.get("data") or row.get("body")) if isinstance(row, dict) else None
    if not body:
        raise ValueError("the request has no body: send the image bytes as the request body")
    if not isinstance(body, bytes | bytearray):
        raise ValueError(f"the body must be raw image bytes (JPEG/PNG), not {type(body).__name__}")
    try:
        with Image.open(io.BytesIO(body)) as image:
            return ImageOps.exif_transpose(image).convert("RGB")
    except UnidentifiedImageError:
        raise ValueError(f"the body ({len(body)} bytes) is not an image PIL can read") from None
    except BAD_IMAGE_ERRORS as exc:
        raise ValueError(f"the body is not a decodable image: {exc}") from exc


# --- graphs: TorchScript and torch.compile ---------------------------------------------------


@contextlib.contextmanager
def quiet_torchscript() -> Iterator[None]:
    """torch >= 2.10 marks TorchScript deprecated; we keep it as a lever on purpose."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", r"`torch\.jit\.\w+` is deprecated", FutureWarning)
        yield


def cached_torchscript(
    compile_fn: Callable[[], torch.jit.ScriptModule],
    *,
    key: Mapping[str, Any],
    cache_dir: str | None,
    device: torch.device,
    handler_file: str,
) -> torch.jit.ScriptModule:
    """Compile once per key; with a cache dir, load what another worker already saved."""
    if not cache_dir:
        return compile_fn()
    sources = [Path(handler_file).read_bytes(), Path(__file__).read_bytes()]
    full_key = {
        **key,
        "handler": hashlib.sha256(b"".join(sources)).hexdigest(),
        "torch": torch.__version__,
    }
    digest = hashlib.sha256(json.dumps(full_key, sort_keys=True).encode()).hexdigest()[:20]
    path = Path(cache_dir) / f"{Path(handler_file).stem}-{digest}.pt"
    if path.exists():
        try:
            with quiet_torchscript():
                module: torch.jit.ScriptModule = torch.jit.load(  # type: ignore[no-untyped-call]
                    str(path), map_location=device
                )
            logger.info("TorchScript module loaded from %s", path)
            return module
        except (RuntimeError, OSError) as exc:
            logger.warning("cannot load %s (%s); compiling again", path, exc)
    module = compile_fn()
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as file, quiet_torchscript():
            torch.jit.save(module, file)
        os.replace(tmp, path)  # atomic: workers starting together never read a partial file
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
    logger.info("TorchScript module saved to %s", path)
    return module


def compiled(module: torch.nn.Module) -> torch.nn.Module:
    """``torch.compile(module)`` (inductor); the first call compiles, so warm it up once.

    Shapes that change between calls (batch sizes, image sizes) make dynamo recompile once and
    then mark the changing dimensions dynamic. Compiled kernels are cached by inductor on disk
    (``TORCHINDUCTOR_CACHE_DIR``), so a second worker of the same settings compiles faster.
    """
    result: torch.nn.Module = torch.compile(module)  # type: ignore[assignment]
    return result
