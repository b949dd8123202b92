"""TorchServe handler of the Animated Drawings detector: a Mask R-CNN R50-FPN.

The default backend is torchvision's ``maskrcnn_resnet50_fpn``, the same R50-FPN Mask R-CNN as
Detectron2's, built in code. Without ``checkpoint`` its weights are random but deterministic
(``torch.manual_seed(0)``), ``score_thresh`` is 0 and every image yields exactly
``detections_per_img`` detections, so the work per image (the mask head runs once per detection)
does not depend on what the random weights happen to find. With ``backend: detectron2`` (needs
Detectron2 installed from its own repository; it has no PyPI release) the model comes from
``detectron2_config`` and ``checkpoint``, with the same output.

Settings, read once in ``initialize`` from the ``handler:`` section of model-config.yaml:

    device                "cpu" (default) or "cuda"; on cuda the worker's ``gpu_id`` is used
    fp16                  false; true runs the forward under torch.autocast(float16) (cuda
                          only): convs and linears in fp16, while RoIAlign, NMS and softmax stay
                          fp32 by autocast's policy (the mixed precision torchvision tests)
    torchscript           false; true scripts the model (torchvision backend only). Scripted
                          torchvision computes the resize scale in float32, so at some sizes
                          the image is 1 px smaller than in eager mode (min_size 512 or 256
                          for a 1000 x 750 image); at 320 and 800 both agree exactly
    torchscript_cache_dir unset; a folder where the scripted module is saved once per settings
                          key and loaded by later workers instead of scripting again
    threads_per_worker    0 = torch's default; n > 0 sets intra- and inter-op threads to n
    channels_last         default true (on a 2-core EPYC, 1 thread: 5-25% faster than NCHW)
    checkpoint            unset; a state dict path, relative to the model dir or absolute
    min_size, max_size    800, 1333 (Detectron2's test sizes): the short side is resized to
                          min_size unless the long side would exceed max_size
    detections_per_img    100
    score_thresh          0.0 with random weights, 0.05 with a checkpoint
    num_classes           91 (torchvision's COCO indexing, 0 = background)
    mask_threshold        0.5
    backend               "torchvision" (default) or "detectron2"
    detectron2_config     the Detectron2 config file (backend detectron2 only)

Input: one image (JPEG, PNG, ...) per request, the raw bytes as the body, sent with a content
type such as image/jpeg (curl's default form encoding makes TorchServe answer 500 itself). A
batch of N requests runs as one forward pass (torchvision pads the resized images to a common
size, so a batch of images of different sizes answers slightly differently from single requests).

Output per request, detections sorted by score, coordinates in pixels of the input image:

    {"width": W, "height": H,
     "boxes": [[x0, y0, x1, y1], ...],          # floats, rounded to 0.01 px
     "labels": [int, ...],                      # class indices of the model
     "scores": [float, ...],                    # rounded to 1e-4
     "masks": [{"size": [H, W], "counts": "..."}, ...]}

Each mask is the full-image binary mask (probability > ``mask_threshold``) in COCO's compressed
RLE: column-major run lengths starting with a run of zeros, written as pycocotools writes them,
so ``pycocotools.mask.decode(mask)`` reads it; ``decode_mask`` below does the same in numpy. A
request whose body is not a decodable image gets HTTP 400 and ``{"error": "..."}``; the rest of
its batch is answered normally.

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
DEFAULTS: dict[str, Any] = {
    "device": "cpu",
    "fp16": False,
    "torchscript": False,
    "torchscript_cache_dir": None,
    "threads_per_worker": 0,
    "channels_last": True,
    "checkpoint": None,
    "min_size": 800,
    "max_size": 1333,
    "detections_per_img": 100,
    "score_thresh": None,
    "num_classes": 91,
    "mask_threshold": 0.5,
    "backend": "torchvision",
    "detectron2_config": None,
}
BAD_IMAGE_ERRORS = (OSError, ValueError, SyntaxError, EOFError, Image.DecompressionBombError)


def read_settings(context: Any) -> dict[str, Any]:
    """The ``handler:`` section of model-config.yaml over DEFAULTS, validated."""
    given = dict((getattr(context, "model_yaml_config", None) or {}).get("handler") or {})
    settings = {**DEFAULTS, **{k: v for k, v in given.items() if k in DEFAULTS}}
    for key in ("fp16", "torchscript", "channels_last"):
        if not isinstance(settings[key], bool):
            raise ValueError(f"`{key}` must be true or false, but got {settings[key]!r}.")
    least = {"threads_per_worker": 0, "min_size": 1, "max_size": 1, "detections_per_img": 1}
    for key, low in {**least, "num_classes": 2}.items():
        value = settings[key]
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise ValueError(f"`{key}` must be an integer >= {low}, but got {value!r}.")
    if settings["device"] not in ("cpu", "cuda"):
        raise ValueError(f"`device` must be 'cpu' or 'cuda', but got {settings['device']!r}.")
    if settings["device"] == "cuda" and not torch.cuda.is_available():
        raise ValueError("`device` is 'cuda', but torch.cuda.is_available() is False here.")
    if settings["fp16"] and settings["device"] != "cuda":
        raise ValueError("`fp16` needs device 'cuda', but got device 'cpu'.")
    if settings["backend"] not in ("torchvision", "detectron2"):
        raise ValueError(
            f"`backend` must be 'torchvision' or 'detectron2', but got {settings['backend']!r}."
        )
    if settings["backend"] == "detectron2" and not (
        settings["detectron2_config"] and settings["checkpoint"]
    ):
        raise ValueError("backend 'detectron2' needs both `detectron2_config` and `checkpoint`.")
    if settings["score_thresh"] is None:
        settings["score_thresh"] = 0.05 if settings["checkpoint"] else 0.0
    for key in ("score_thresh", "mask_threshold"):
        value = settings[key]
        if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= 1:
            raise ValueError(f"`{key}` must be a number in [0, 1], but got {value!r}.")
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


def encode_masks(masks: torch.Tensor, threshold: float = 0.5) -> list[dict[str, Any]]:
    """COCO compressed RLE of each ``masks[k] > threshold``; ``masks`` is (K, H, W), any device.

    Only the columns between a mask's first and last set pixel are thresholded and scanned:
    the columns outside them are zeros, which only lengthen the first and last runs.
    """
    height, width = masks.shape[1:]
    if masks.dtype == torch.bool:
        masks = masks.view(torch.uint8)
    columns = (masks.amax(dim=1) > threshold).cpu().numpy()  # (K, W): columns with a set pixel
    starts = columns.argmax(axis=1)
    ends = width - columns[:, ::-1].argmax(axis=1)
    encoded = []
    for mask, used, c0, c1 in zip(masks, columns.any(axis=1), starts, ends, strict=True):
        if not used:
            encoded.append(
                {"size": [height, width], "counts": _rle_string(np.array([height * width]))}
            )
            continue
        flat = (mask[:, c0:c1] > threshold).t().reshape(-1)  # column-major, as COCO
        changes = ((flat[1:] != flat[:-1]).nonzero()[:, 0] + 1).cpu().numpy()
        runs = np.diff(np.concatenate(([0], changes, [len(flat)])))
        if bool(flat[0]):
            runs = np.concatenate(([0], runs))
        runs[0] += c0 * height
        if len(runs) % 2:  # ends on zeros
            runs[-1] += (width - c1) * height
        elif c1 < width:
            runs = np.concatenate((runs, [(width - c1) * height]))
        encoded.append({"size": [height, width], "counts": _rle_string(runs)})
    return encoded


def _rle_string(runs: np.ndarray) -> str:
    """pycocotools' ``rleToString``: delta to the run two back, 5-bit groups as characters."""
    x = runs.astype(np.int64)
    x[3:] -= runs[1:-2]
    chars = np.zeros((len(x), 8), dtype=np.uint8)  # 8 groups of 5 bits cover |x| < 2**39
    active = np.ones(len(x), dtype=bool)
    for group in range(8):
        low = x & 0x1F
        x >>= 5
        more = np.where(low & 0x10, x != -1, x != 0)
        chars[:, group] = np.where(active, (low | (more << 5)) + 48, 0)
        active &= more
    return chars[chars > 0].tobytes().decode("ascii")


def decode_mask(rle: dict[str, Any]) -> np.ndarray:
    """The (H, W) bool mask of one ``masks`` entry: pycocotools' ``decode`` in numpy."""
    height, width = rle["size"]
    data, runs, pos = rle["counts"].encode("ascii"), [], 0
    while pos < len(data):
        value, shift, more = 0, 0, True
        while more:
            char = data[pos] - 48
            value |= (char & 0x1F) << shift
            more = bool(char & 0x20)
            pos, shift = pos + 1, shift + 5
            if not more and char & 0x10:
                value |= -1 << shift
        runs.append(value + runs[-2] if len(runs) > 2 else value)
    flat = np.repeat(np.arange(len(runs)) % 2 == 1, runs)
    return flat.reshape(width, height).T


class MaskRCNNDetector(BaseHandler):
    """Mask R-CNN: bytes in, boxes, labels, scores and RLE masks out; one forward per batch."""

    def initialize(self, context: Any) -> None:
        self.settings = settings = read_settings(context)
        set_threads(settings["threads_per_worker"])
        model_dir = context.system_properties.get("model_dir") or "."
        if settings["device"] == "cuda":
            self.device = torch.device("cuda", int(context.system_properties.get("gpu_id") or 0))
        else:
            self.device = torch.device("cpu")
        for key in ("checkpoint", "detectron2_config"):
            if settings[key]:
                settings[key] = os.path.join(model_dir, settings[key])

        if settings["backend"] == "detectron2":
            self.model = self._build_detectron2()
            if settings["torchscript"]:
                logger.warning("torchscript is not supported with Detectron2 here: eager mode")
        else:
            model = self._build_torchvision()
            self.model = model
            if settings["torchscript"]:
                self.model = self._script(model)
        self.scripted = isinstance(self.model, torch.jit.ScriptModule)
        self.initialized = True
        logger.info("maskrcnn_detector ready on %s with %s", self.device, settings)

    def _build_torchvision(self) -> torch.nn.Module:
        settings = self.settings
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(SEED)
            model = torchvision.models.detection.maskrcnn_resnet50_fpn(
                weights=None,
                weights_backbone=None,
                num_classes=settings["num_classes"],
                min_size=settings["min_size"],
                max_size=settings["max_size"],
                box_score_thresh=settings["score_thresh"],
                box_detections_per_img=settings["detections_per_img"],
            )
        if settings["checkpoint"]:
            state = torch.load(settings["checkpoint"], map_location="cpu", weights_only=True)
            model.load_state_dict(state.get("model", state.get("state_dict", state)))
        if settings["channels_last"]:
            model = model.to(memory_format=torch.channels_last)
        return model.eval().requires_grad_(False).to(self.device)

    def _script(self, model: torch.nn.Module) -> torch.nn.Module:
        def compile_model() -> torch.jit.ScriptModule:
            with quiet_torchscript():
                scripted = torch.jit.script(model)
            scripted._has_warned = True  # silence "always returns a (Losses, Detections) tuple"
            return scripted

        checkpoint = self.settings["checkpoint"]
        stat = os.stat(checkpoint) if checkpoint else None
        key = {
            **{k: self.settings[k] for k in ("min_size", "max_size", "detections_per_img")},
            **{k: self.settings[k] for k in ("score_thresh", "num_classes", "channels_last")},
            "model": "maskrcnn_resnet50_fpn",
            "device": self.device.type,
            "fp16": self.settings["fp16"],
            "checkpoint": [checkpoint, stat.st_size, stat.st_mtime_ns] if stat else None,
            "torch": torch.__version__,
            "torchvision": torchvision.__version__,
        }
        try:
            return cached_torchscript(
                compile_model,
                key=key,
                cache_dir=self.settings["torchscript_cache_dir"],
                device=self.device,
            )
        except (RuntimeError, torch.jit.Error) as exc:
            logger.warning("torch.jit.script failed (%s): falling back to eager mode", exc)
            return model

    def _build_detectron2(self) -> torch.nn.Module:
        from detectron2.checkpoint import DetectionCheckpointer
        from detectron2.config import get_cfg
        from detectron2.modeling import build_model

        settings = self.settings
        cfg = get_cfg()
        cfg.merge_from_file(settings["detectron2_config"])
        cfg.MODEL.DEVICE = str(self.device)
        cfg.MODEL.ROI_HEADS.SCORE_THRESH_TEST = settings["score_thresh"]
        cfg.TEST.DETECTIONS_PER_IMAGE = settings["detections_per_img"]
        self.bgr = cfg.INPUT.FORMAT == "BGR"
        model = build_model(cfg).eval().requires_grad_(False)
        DetectionCheckpointer(model).load(settings["checkpoint"])
        return model

    def preprocess(self, data: list[Any]) -> tuple[list[torch.Tensor], list[str | None]]:
        """Decode the batch: the images as float (3, H, W) tensors, per request an error."""
        images: list[torch.Tensor] = []
        errors: list[str | None] = []
        for row in data:
            try:
                pixels = torch.from_numpy(np.array(decode_image(row)))
            except ValueError as exc:
                errors.append(str(exc))
                continue
            images.append(pixels.to(self.device).permute(2, 0, 1).float().div_(255).contiguous())
            errors.append(None)
        return images, errors

    def inference(
        self, data: tuple[list[torch.Tensor], list[str | None]], *args: Any, **kwargs: Any
    ) -> tuple[list[dict[str, torch.Tensor]], list[str | None]]:
        images, errors = data
        if not images:
            return [], errors
        fp16 = torch.autocast("cuda", dtype=torch.float16, enabled=self.settings["fp16"])
        with torch.inference_mode(), fp16:
            if self.settings["backend"] == "detectron2":
                return self._detectron2_forward(images), errors
            outputs = self.model(images)
            return (outputs[1] if self.scripted else outputs), errors

    def _detectron2_forward(self, images: list[torch.Tensor]) -> list[dict[str, torch.Tensor]]:
        """As Detectron2's DefaultPredictor: short side to min_size (long side at most
        max_size), pixels 0-255 in the config's channel order; the model pastes the masks back
        at the input size."""
        inputs = []
        for image in images:
            height, width = image.shape[-2:]
            scale = self.settings["min_size"] / min(height, width)
            scale = min(scale, self.settings["max_size"] / max(height, width))
            size = (int(height * scale + 0.5), int(width * scale + 0.5))
            resized = torch.nn.functional.interpolate(image[None], size, mode="bilinear")[0]
            resized = (resized.flip(0) if self.bgr else resized) * 255
            inputs.append({"image": resized, "height": height, "width": width})
        outputs = []
        for output in self.model(inputs):
            instances = output["instances"]
            outputs.append(
                {
                    "boxes": instances.pred_boxes.tensor,
                    "labels": instances.pred_classes,
                    "scores": instances.scores,
                    "masks": instances.pred_masks[:, None],
                }
            )
        return outputs

    def postprocess(
        self, data: tuple[list[dict[str, torch.Tensor]], list[str | None]]
    ) -> list[dict[str, Any]]:
        outputs, errors = data
        threshold = self.settings["mask_threshold"]
        answers = iter(outputs)
        results: list[dict[str, Any]] = []
        for idx, error in enumerate(errors):
            if error is not None:
                self.context.set_response_status(400, error, idx)
                results.append({"error": error})
                continue
            output = next(answers)
            masks = output["masks"][:, 0]
            results.append(
                {
                    "width": masks.shape[-1],
                    "height": masks.shape[-2],
                    "boxes": [[round(v, 2) for v in box] for box in output["boxes"].tolist()],
                    "labels": output["labels"].tolist(),
                    "scores": [round(s, 4) for s in output["scores"].float().tolist()],
                    "masks": encode_masks(masks, threshold),
                }
            )
        return results
