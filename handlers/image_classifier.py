"""TorchServe handler of autotune's quick model: a small image classifier.

The model is torchvision's MobileNetV3-Small (or ResNet-18, ``architecture``) built in code with
deterministic random weights (``torch.manual_seed(0)``), or loaded from ``checkpoint`` (a state
dict of that architecture). MobileNetV3-Small takes 6-12 ms an image on one core of a small CPU
(batched and TorchScript at the low end), so a 100 ms SLA is reachable with room for the settings
to matter, and a trial is measured in seconds.

Settings, read once in ``initialize`` from the ``handler:`` section of model-config.yaml into
``ClassifierSettings`` (``autotune_handler_utils``; an unknown key is refused):

    architecture          "mobilenet_v3_small" (default) or "resnet18" (about 4x slower)
    image_size            224; images are resized (short side to 256/224 of it), center cropped
    device, fp16, torchscript, compile, torchscript_cache_dir, threads_per_worker,
    channels_last, checkpoint: as every autotune handler (``autotune_handler_utils``). Here
    fp16 runs the model in half precision with the softmax in fp32; torchscript traces and
    freezes the model (BN folded into the convs); compile runs torch.compile on the whole
    model; channels_last is 10-17% faster than NCHW on a 2-core EPYC at 1 thread.

Input: one image (JPEG, PNG, ...) per request, the raw bytes as the body, sent with a content
type such as image/jpeg (curl's default form encoding makes TorchServe answer 500 itself). A
batch of N requests runs as one forward pass.

Output per request: ``{"top5": [{"class": int, "score": float}, ...]}``, softmax scores, best
first. A request whose body is not a decodable image gets HTTP 400 and ``{"error": "..."}``;
the rest of its batch is answered normally.

TorchServe loads the one class defined in this file; the code it shares with the other
autotune handler is in ``autotune_handler_utils.py``, shipped beside it (``--extra-files``).
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import torch
import torchvision
from PIL import Image
from ts.torch_handler.base_handler import BaseHandler

try:
    from . import autotune_handler_utils as utils
except ImportError:  # TorchServe imports this file as a top-level module of the model folder
    import autotune_handler_utils as utils  # type: ignore[import-not-found, no-redef, unused-ignore]

logger = logging.getLogger(__name__)

# The knobs of the handler: section this handler implements (read by autotune with ast).
AUTOTUNE_KNOBS = ("fp16", "torchscript", "compile", "threads_per_worker")

MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)
# the state-dict key of each architecture's last layer (its class count)
LAST_LAYER: dict[str, str] = {
    "mobilenet_v3_small": "classifier.3.weight",
    "resnet18": "fc.weight",
}


def read_settings(context: Any) -> utils.ClassifierSettings:
    """The ``handler:`` section of model-config.yaml, typed and validated."""
    return utils.read_settings(utils.ClassifierSettings, context, "image_classifier")


class ImageClassifier(BaseHandler):
    """Image classifier: bytes in, top-5 classes out, one forward pass per batch."""

    def initialize(self, context: Any) -> None:
        self.settings = settings = read_settings(context)
        utils.set_threads(settings.threads_per_worker)
        model_dir = context.system_properties.get("model_dir") or "."
        self.device = utils.worker_device(settings, context)
        self.dtype = torch.float16 if settings.fp16 else torch.float32
        self.memory_format = (
            torch.channels_last if settings.channels_last else torch.contiguous_format
        )
        self.mean = torch.tensor(MEAN, device=self.device).view(1, 3, 1, 1) * 255
        self.std = torch.tensor(STD, device=self.device).view(1, 3, 1, 1) * 255

        checkpoint = utils.model_file(model_dir, settings.checkpoint)
        model = self._build(checkpoint)
        self.model: Any
        if settings.torchscript:
            key = {
                "model": settings.architecture,
                "device": self.device.type,
                "fp16": settings.fp16,
                "channels_last": settings.channels_last,
                "image_size": settings.image_size,
                "checkpoint": utils.file_key(checkpoint),
                "torchvision": torchvision.__version__,
            }
            self.model = utils.cached_torchscript(
                lambda: self._trace(model),
                key=key,
                cache_dir=settings.torchscript_cache_dir,
                device=self.device,
                handler_file=__file__,
            )
        elif settings.compile:
            self.model = utils.compiled(model)
            with torch.inference_mode():  # compile now, not in the first request
                self.model(self._example())
        else:
            self.model = model
        utils.freeze_heap()
        self.initialized = True
        logger.info("image_classifier ready on %s with %s", self.device, settings)

    def _build(self, checkpoint: str | None) -> torch.nn.Module:
        architecture = self.settings.architecture
        build = getattr(torchvision.models, architecture)
        if checkpoint:
            state = torch.load(checkpoint, map_location="cpu", weights_only=True)
            state = state.get("model", state.get("state_dict", state))
            last = LAST_LAYER[architecture]
            if last not in state:
                raise ValueError(
                    f"checkpoint {checkpoint} is not a {architecture} state dict "
                    f"(no {last!r}); set `architecture` to the one it was saved from"
                )
            model = build(num_classes=state[last].shape[0])
            model.load_state_dict(state)
        else:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(utils.SEED)
                model = build(weights=None)
        model = model.eval().to(self.device, self.dtype, memory_format=self.memory_format)
        return model.requires_grad_(False)  # type: ignore[no-any-return]

    def _example(self) -> torch.Tensor:
        size = self.settings.image_size
        example = torch.zeros(1, 3, size, size, device=self.device, dtype=self.dtype)
        return example.to(memory_format=self.memory_format)

    def _trace(self, model: torch.nn.Module) -> torch.jit.ScriptModule:
        with torch.no_grad(), utils.quiet_torchscript():
            traced = torch.jit.trace(model, self._example())  # type: ignore[no-untyped-call]
            return torch.jit.freeze(traced)  # type: ignore[no-any-return]

    def preprocess(self, data: list[Any]) -> tuple[torch.Tensor | None, list[str | None]]:
        """Decode the batch: the images as one tensor, and per request an error or None."""
        arrays: list[np.ndarray] = []
        errors: list[str | None] = []
        for row in data:
            try:
                arrays.append(self._resize_crop(utils.decode_image(row)))
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
        size = self.settings.image_size
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
                assert self.context is not None  # BaseHandler.handle set it before postprocess
                self.context.set_response_status(400, error, idx)
                results.append({"error": error})
            else:
                pairs = next(rows)
                results.append({"top5": [{"class": int(c), "score": s} for s, c in pairs]})
        return results
