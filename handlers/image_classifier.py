"""TorchServe handler of autotune's quick model: a small image classifier.

The model is torchvision's MobileNetV3-Small (or ResNet-18, ``architecture``) built in code with
deterministic random weights (``torch.manual_seed(0)``), or loaded from ``checkpoint`` (a state
dict of that architecture). MobileNetV3-Small takes 6-12 ms an image on one core of a small CPU
(batched and TorchScript at the low end), so a 100 ms SLA is reachable with room for the settings
to matter, and a trial is measured in seconds.

Settings, read once in ``initialize`` from the ``handler:`` section of model-config.yaml:

    architecture          "mobilenet_v3_small" (default) or "resnet18" (about 4x slower)
    device                "cpu" (default) or "cuda"; on cuda the worker's ``gpu_id`` is used
    fp16                  false; true runs the model in half precision, softmax in fp32
                          (cuda only)
    torchscript           false; true traces and freezes the model (BN folded into the convs)
    torchscript_cache_dir unset; a folder where the compiled module is saved once per settings
                          key and loaded by later workers instead of compiling again
    threads_per_worker    0 = torch's default; n > 0 sets intra- and inter-op threads to n
    channels_last         default true (on a 2-core EPYC, 1 thread: 10-17% faster than NCHW)
    checkpoint            unset; a state dict path, relative to the model dir or absolute
    image_size            224; images are resized (short side to 256/224 of it), center cropped

Input: one image (JPEG, PNG, ...) per request, the raw bytes as the body, sent with a content
type such as image/jpeg (curl's default form encoding makes TorchServe answer 500 itself). A
batch of N requests runs as one forward pass.

Output per request: ``{"top5": [{"class": int, "score": float}, ...]}``, softmax scores, best
first. A request whose body is not a decodable image gets HTTP 400 and ``{"error": "..."}``;
the rest of its batch is answered normally.

TorchServe loads the one class defined in this file, so the file defines no other class and
imports nothing from autotune: it is copied into the model archive as is.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import logging
import os
import tempfile
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torchvision
from PIL import Image, ImageOps
from ts.torch_handler.base_handler import BaseHandler

logger = logging.getLogger(__name__)

SEED = 0
MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)
# the torchvision builders, and the state-dict key of each one's last layer (its class count)
ARCHITECTURES: dict[str, str] = {
    "mobilenet_v3_small": "classifier.3.weight",
    "resnet18": "fc.weight",
}
DEFAULTS: dict[str, Any] = {
    "architecture": "mobilenet_v3_small",
    "device": "cpu",
    "fp16": False,
    "torchscript": False,
    "torchscript_cache_dir": None,
    "threads_per_worker": 0,
    "channels_last": True,
    "checkpoint": None,
    "image_size": 224,
}
BAD_IMAGE_ERRORS = (OSError, ValueError, SyntaxError, EOFError, Image.DecompressionBombError)


def read_settings(context: Any) -> dict[str, Any]:
    """The ``handler:`` section of model-config.yaml over DEFAULTS, validated."""
    given = dict((getattr(context, "model_yaml_config", None) or {}).get("handler") or {})
    settings = {**DEFAULTS, **{k: v for k, v in given.items() if k in DEFAULTS}}
    for key in ("fp16", "torchscript", "channels_last"):
        if not isinstance(settings[key], bool):
            raise ValueError(f"`{key}` must be true or false, but got {settings[key]!r}.")
    for key in ("threads_per_worker", "image_size"):
        value, least = settings[key], 0 if key == "threads_per_worker" else 1
        if isinstance(value, bool) or not isinstance(value, int) or value < least:
            raise ValueError(f"`{key}` must be an integer >= {least}, but got {value!r}.")
    if (
        not isinstance(settings["architecture"], str)
        or settings["architecture"] not in ARCHITECTURES
    ):
        raise ValueError(
            f"`architecture` must be one of {sorted(ARCHITECTURES)}, "
            f"but got {settings['architecture']!r}."
        )
    if settings["device"] not in ("cpu", "cuda"):
        raise ValueError(f"`device` must be 'cpu' or 'cuda', but got {settings['device']!r}.")
    if settings["device"] == "cuda" and not torch.cuda.is_available():
        raise ValueError("`device` is 'cuda', but torch.cuda.is_available() is False here.")
    if settings["fp16"] and settings["device"] != "cuda":
        raise ValueError("`fp16` needs device 'cuda', but got device 'cpu'.")
    return settings


def set_threads(threads: int) -> None:
    """Apply ``threads_per_worker``: 0 leaves torch's defaults."""
    if threads <= 0:
        return
    torch.set_num_threads(threads)
    try:
        torch.set_num_interop_threads(threads)
    except RuntimeError:  # only possible before the first inter-op work of the process
        logger.info("inter-op threads already fixed at %d", torch.get_num_interop_threads())


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
    except Image.UnidentifiedImageError:
        raise ValueError(f"the body ({len(body)} bytes) is not an image PIL can read") from None
    except BAD_IMAGE_ERRORS as exc:
        raise ValueError(f"the body is not a decodable image: {exc}") from exc


@contextlib.contextmanager
def quiet_torchscript() -> Iterator[None]:
    """torch >= 2.10 marks TorchScript deprecated; we keep it as a lever on purpose."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", r"`torch\.jit\.\w+` is deprecated", FutureWarning)
        yield


def cached_torchscript(
    compile_fn: Callable[[], torch.jit.ScriptModule],
    *,
    key: dict[str, Any],
    cache_dir: str | None,
    device: torch.device,
) -> torch.jit.ScriptModule:
    """Compile once per key; with a cache dir, load what another worker already saved."""
    if not cache_dir:
        return compile_fn()
    key = {**key, "handler": hashlib.sha256(Path(__file__).read_bytes()).hexdigest()}
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:20]
    path = Path(cache_dir) / f"{Path(__file__).stem}-{digest}.pt"
    if path.exists():
        try:
            with quiet_torchscript():
                module = torch.jit.load(str(path), map_location=device)
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


class ImageClassifier(BaseHandler):
    """Image classifier: bytes in, top-5 classes out, one forward pass per batch."""

    def initialize(self, context: Any) -> None:
        self.settings = settings = read_settings(context)
        set_threads(settings["threads_per_worker"])
        model_dir = context.system_properties.get("model_dir") or "."
        if settings["device"] == "cuda":
            self.device = torch.device("cuda", int(context.system_properties.get("gpu_id") or 0))
        else:
            self.device = torch.device("cpu")
        self.dtype = torch.float16 if settings["fp16"] else torch.float32
        self.memory_format = (
            torch.channels_last if settings["channels_last"] else torch.contiguous_format
        )
        self.mean = torch.tensor(MEAN, device=self.device).view(1, 3, 1, 1) * 255
        self.std = torch.tensor(STD, device=self.device).view(1, 3, 1, 1) * 255

        checkpoint = settings["checkpoint"]
        if checkpoint:
            checkpoint = os.path.join(model_dir, checkpoint)
        model = self._build(checkpoint)
        if settings["torchscript"]:
            stat = os.stat(checkpoint) if checkpoint else None
            key = {
                "model": settings["architecture"],
                "device": self.device.type,
                "fp16": settings["fp16"],
                "channels_last": settings["channels_last"],
                "image_size": settings["image_size"],
                "checkpoint": [checkpoint, stat.st_size, stat.st_mtime_ns] if stat else None,
                "torch": torch.__version__,
                "torchvision": torchvision.__version__,
            }
            self.model = cached_torchscript(
                lambda: self._trace(model),
                key=key,
                cache_dir=settings["torchscript_cache_dir"],
                device=self.device,
            )
        else:
            self.model = model
        self.initialized = True
        logger.info("image_classifier ready on %s with %s", self.device, settings)

    def _build(self, checkpoint: str | None) -> torch.nn.Module:
        build = getattr(torchvision.models, self.settings["architecture"])
        if checkpoint:
            state = torch.load(checkpoint, map_location="cpu", weights_only=True)
            state = state.get("model", state.get("state_dict", state))
            last = ARCHITECTURES[self.settings["architecture"]]
            if last not in state:
                raise ValueError(
                    f"checkpoint {checkpoint} is not a {self.settings['architecture']} state "
                    f"dict (no {last!r}); set `architecture` to the one it was saved from"
                )
            model = build(num_classes=state[last].shape[0])
            model.load_state_dict(state)
        else:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(SEED)
                model = build(weights=None)
        model = model.eval().to(self.device, self.dtype, memory_format=self.memory_format)
        return model.requires_grad_(False)

    def _trace(self, model: torch.nn.Module) -> torch.jit.ScriptModule:
        size = self.settings["image_size"]
        example = torch.zeros(1, 3, size, size, device=self.device, dtype=self.dtype)
        with torch.no_grad(), quiet_torchscript():
            traced = torch.jit.trace(model, example.to(memory_format=self.memory_format))
            return torch.jit.freeze(traced)

    def preprocess(self, data: list[Any]) -> tuple[torch.Tensor | None, list[str | None]]:
        """Decode the batch: the images as one tensor, and per request an error or None."""
        arrays: list[np.ndarray] = []
        errors: list[str | None] = []
        for row in data:
            try:
                arrays.append(self._resize_crop(decode_image(row)))
                errors.append(None)
            except ValueError as exc:
                errors.append(str(exc))
        if not arrays:
            return None, errors
        # NHWC uint8 -> NCHW view with channels-last strides, normalised on the device.
        batch = torch.from_numpy(np.stack(arrays)).to(self.device).permute(0, 3, 1, 2)
        batch = ((batch.float() - self.mean) / self.std).to(self.dtype)
        return batch.contiguous(memory_format=self.memory_format), errors

    def _resize_crop(self, image: Image.Image) -> np.ndarray:
        size = self.settings["image_size"]
        short = round(size * 256 / 224)
        scale = short / min(image.size)
        width, height = (
            max(size, round(image.width * scale)),
            max(size, round(image.height * scale)),
        )
        image = image.resize((width, height), Image.Resampling.BILINEAR)
        left, top = (width - size) // 2, (height - size) // 2
        return np.array(image.crop((left, top, left + size, top + size)))

    def inference(
        self, data: tuple[torch.Tensor | None, list[str | None]], *args: Any, **kwargs: Any
    ) -> tuple[torch.Tensor | None, list[str | None]]:
        batch, errors = data
        if batch is None:
            return None, errors
        with torch.inference_mode():
            scores, classes = torch.softmax(self.model(batch).float(), dim=1).topk(5, dim=1)
            return torch.stack((scores, classes.float()), dim=2).cpu(), errors

    def postprocess(
        self, data: tuple[torch.Tensor | None, list[str | None]]
    ) -> list[dict[str, Any]]:
        top5, errors = data
        rows = iter(top5.tolist() if top5 is not None else [])
        results: list[dict[str, Any]] = []
        for idx, error in enumerate(errors):
            if error is not None:
                self.context.set_response_status(400, error, idx)
                results.append({"error": error})
            else:
                pairs = next(rows)
                results.append({"top5": [{"class": int(c), "score": s} for s, c in pairs]})
        return results
