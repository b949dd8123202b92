"""TorchServe handler of the Animated Drawings detector: a Mask R-CNN R50-FPN.

Two backends build the same network, ResNet-50-FPN Mask R-CNN:

- ``torchvision`` (default): torchvision's ``maskrcnn_resnet50_fpn``, built in code;
- ``detectron2``: the article's own model, built by Detectron2 from its model-zoo config
  ``COCO-InstanceSegmentation/mask_rcnn_R_50_FPN_3x.yaml`` (read from the installed
  ``detectron2`` package; ``detectron2_config`` names another file). Detectron2 has no PyPI
  release: install it from its repository (``pip install --no-build-isolation
  'git+https://github.com/facebookresearch/detectron2.git'``) or a wheel built from it.

Without ``checkpoint`` the weights are random but deterministic (``torch.manual_seed(0)``),
``score_thresh`` is 0 and every image yields exactly ``detections_per_img`` detections, so the
work per image (the mask head runs once per detection) does not depend on what the random
weights happen to find. (Detectron2's R50 config normalises pixels with std 1, as its MSRA
weights were trained; with random weights the handler sets ImageNet's std instead, so the
random network sees unit-scale input and finds boxes rather than degenerate ones: the same
compute; and its mask predictor starts as torchvision's, not at Detectron2's std 0.001, so that
both backends' random masks, and the work of encoding them, are alike.)
With ``checkpoint`` the weights file is loaded: a torchvision state dict, or for
Detectron2 anything ``DetectionCheckpointer`` reads (its model-zoo ``model_final_f10217.pkl``).

Settings, read once in ``initialize`` from the ``handler:`` section of model-config.yaml into
``DetectorSettings`` (``autotune_handler_utils``; an unknown key is refused):

    min_size, max_size    800, 1333 (Detectron2's test sizes): the short side is resized to
                          min_size unless the long side would exceed max_size
    detections_per_img    100
    score_thresh          0.0 with random weights, 0.05 with a checkpoint
    num_classes           torchvision only: 91 (COCO indexing, 0 = background); Detectron2
                          reads MODEL.ROI_HEADS.NUM_CLASSES from its config
    mask_threshold        0.5
    backend               "torchvision" (default) or "detectron2"
    detectron2_config     unset: the article's config above; a path (relative to the model dir
                          or absolute) to another Detectron2 YAML config
    device, fp16, torchscript, compile, torchscript_cache_dir, threads_per_worker,
    channels_last, checkpoint: as every autotune handler (``autotune_handler_utils``). Here:
      fp16         the forward runs under torch.autocast(float16) (cuda only): convs and
                   linears in fp16, RoIAlign, NMS and softmax in fp32 by autocast's policy
      torchscript  torchvision: ``torch.jit.script`` of the whole model. Scripted torchvision
                   computes the resize scale in float32, so at some sizes the image is 1 px
                   smaller than in eager mode (min_size 512 or 256 for a 1000 x 750 image; at
                   320 and 800 both agree exactly). Detectron2: its own
                   ``detectron2.export.scripting_with_instances`` of ``inference`` (Detectron2
                   scripts the model, not its pre/post-processing, which stay in Python here;
                   tracing, its other export path, would fix the detection count's shapes).
                   The scripted module answers tensors, not Detectron2's scripted Instances,
                   whose class exists only in the process that scripted it: a worker loading
                   the cached module could not read them
      compile      torch.compile of the backbone (ResNet-50 + FPN, most of the FLOPs) in both
                   backends; the RPN and RoI heads stay eager (data-dependent shapes: NMS,
                   per-image box counts). Compiled in ``initialize`` on a 4:3 image
      channels_last default true (on a 2-core EPYC, 1 thread: 5-25% faster than NCHW)

Input: one image (JPEG, PNG, ...) per request, the raw bytes as the body, sent with a content
type such as image/jpeg (curl's default form encoding makes TorchServe answer 500 itself). A
batch of N requests runs as one forward pass (both backends pad the resized images to a common
size, so a batch of images of different sizes answers slightly differently from single requests).

Output per request, the same for both backends, detections sorted by score, coordinates in
pixels of the input image:

    {"width": W, "height": H,
     "boxes": [[x0, y0, x1, y1], ...],          # floats, rounded to 0.01 px
     "labels": [int, ...],                      # class indices: COCO category ids (1-90)
     "scores": [float, ...],                    # rounded to 1e-4
     "masks": [{"size": [H, W], "counts": "..."}, ...]}

Labels are torchvision's 91-way COCO indexing; Detectron2's 80 contiguous COCO classes are
mapped to the same category ids (a model with another class count answers its own indices).
Each mask is the full-image binary mask (probability > ``mask_threshold``) in COCO's compressed
RLE: column-major run lengths starting with a run of zeros, written as pycocotools writes them,
so ``pycocotools.mask.decode(mask)`` reads it; ``decode_mask`` below does the same in numpy. A
request whose body is not a decodable image gets HTTP 400 and ``{"error": "..."}``; the rest of
its batch is answered normally.

TorchServe loads the one class defined in this file; the code it shares with the other
autotune handler is in ``autotune_handler_utils.py``, shipped beside it (``--extra-files``).
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch
import torchvision
from ts.torch_handler.base_handler import BaseHandler

try:
    from . import autotune_handler_utils as utils
except ImportError:  # TorchServe imports this file as a top-level module of the model folder
    import autotune_handler_utils as utils  # type: ignore[import-not-found, no-redef, unused-ignore]

logger = logging.getLogger(__name__)

# The knobs of the handler: section this handler implements (read by autotune with ast).
AUTOTUNE_KNOBS = ("fp16", "torchscript", "compile", "threads_per_worker")

DETECTRON2_CONFIG = "COCO-InstanceSegmentation/mask_rcnn_R_50_FPN_3x.yaml"
# ImageNet's pixel std in 0-255 units (torchvision's normalisation): random weights only.
IMAGENET_STD = [57.375, 57.120, 58.395]
# The COCO category ids (torchvision's 91-way indexing) of the 80 contiguous Detectron2 classes.
COCO_IDS = tuple(i for i in range(1, 91) if i not in (12, 26, 29, 30, 45, 66, 68, 69, 71, 83))
# What a 4:3 image needs to compile the backbone at load time (the short side is resized anyway).
WARMUP_SIZE = (750, 1000)


def read_settings(context: Any) -> utils.DetectorSettings:
    """The ``handler:`` section of model-config.yaml, typed and validated."""
    return utils.read_settings(utils.DetectorSettings, context, "maskrcnn_detector")


@contextlib.contextmanager
def quiet_detectron2() -> Iterator[None]:
    """Warnings Detectron2 raises on each import or forward with this torch, known and harmless."""
    with utils.quiet_torchscript(), warnings.catch_warnings():
        # its anchor generator calls torch.meshgrid without `indexing` (it means "ij")
        warnings.filterwarnings("ignore", r"torch\.meshgrid", UserWarning)
        yield


def detectron2_config_file(name: str = DETECTRON2_CONFIG) -> str:
    """A model-zoo config inside the installed Detectron2 package.

    Not ``detectron2.model_zoo.get_config_file``: that module imports ``pkg_resources``, which
    current setuptools no longer ships.
    """
    try:
        with quiet_detectron2():
            import detectron2
    except ImportError:
        raise ValueError(
            "backend 'detectron2' needs Detectron2, which has no PyPI release: install it with "
            "`pip install --no-build-isolation "
            "'git+https://github.com/facebookresearch/detectron2.git'`"
        ) from None
    path = Path(detectron2.__file__).parent / "model_zoo" / "configs" / name
    if not path.is_file():
        raise ValueError(f"no Detectron2 config {name} in {path.parent.parent}")
    return str(path)


def encode_masks(masks: torch.Tensor, threshold: float = 0.5) -> list[dict[str, Any]]:
    """COCO compressed RLE of each ``masks[k] > threshold``; ``masks`` is (K, H, W), any device.

    Bool masks are taken as already thresholded (``threshold`` is not read).

    Only the columns between a mask's first and last set pixel are thresholded and scanned:
    the columns outside them are zeros, which only lengthen the first and last runs.
    """
    height, width = masks.shape[1:]
    if masks.dtype == torch.bool:
        masks, threshold = masks.view(torch.uint8), 0
    columns = (masks.amax(dim=1) > threshold).cpu().numpy()  # (K, W): columns with a set pixel
    starts = columns.argmax(axis=1)
    ends = width - columns[:, ::-1].argmax(axis=1)
    encoded = []
    used_columns = cast(list[bool], columns.any(axis=1).tolist())
    for mask, used, c0, c1 in zip(masks, used_columns, starts, ends, strict=True):
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
    data, pos = rle["counts"].encode("ascii"), 0
    runs: list[int] = []
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


def _detections(found: Any) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """One image's Detectron2 ``Instances``: boxes, scores, classes, mask probabilities."""
    return found.pred_boxes.tensor, found.scores, found.pred_classes, found.pred_masks


def _scriptable_inference(model: torch.nn.Module) -> torch.nn.Module:
    """``model.inference`` as a module that answers tensors, to script.

    A scripted Detectron2 model answers ``Instances`` of a class that
    ``scripting_with_instances`` makes in the process that scripts it
    (``detectron2.export.torchscript_patch<N>``): a worker that loads the module from the
    TorchScript cache has no such class and fails on the first request ("ScriptedInstances1 is
    not found"). This one returns each image's tensors. Defined here, not at module level:
    TorchServe wants exactly one class in a handler file.
    """

    class Detectron2Inference(torch.nn.Module):
        def __init__(self, model: Any) -> None:
            super().__init__()
            self.model = model

        def forward(
            self, images: list[dict[str, torch.Tensor]]
        ) -> list[tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]]:
            outputs: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]] = []
            for found in self.model.inference(images, None, False):
                outputs.append(
                    (found.pred_boxes.tensor, found.scores, found.pred_classes, found.pred_masks)
                )
            return outputs

    return Detectron2Inference(model).eval()


class MaskRCNNDetector(BaseHandler):
    """Mask R-CNN: bytes in, boxes, labels, scores and RLE masks out; one forward per batch."""

    device: torch.device  # BaseHandler's is Optional; initialize always sets it

    def initialize(self, context: Any) -> None:
        self.settings = settings = read_settings(context)
        utils.set_threads(settings.threads_per_worker)
        model_dir = context.system_properties.get("model_dir") or "."
        self.device = utils.worker_device(settings, context)
        self.checkpoint = utils.model_file(model_dir, settings.checkpoint)
        self.model: Any
        if settings.backend == "detectron2":
            config = utils.model_file(model_dir, settings.detectron2_config)
            self.config_file = config or detectron2_config_file()
            model = self._build_detectron2()
            self.model = self._script_detectron2(model) if settings.torchscript else model
        else:
            model = self._build_torchvision()
            self.model = self._script_torchvision(model) if settings.torchscript else model
        self.scripted = isinstance(self.model, torch.jit.ScriptModule)
        if settings.compile:
            self.model.backbone = utils.compiled(self.model.backbone)
            warmup = torch.zeros(3, *WARMUP_SIZE, device=self.device)
            self.inference(([warmup], [None]))  # compile now, not in the first request
        utils.freeze_heap()
        self.initialized = True
        logger.info("maskrcnn_detector ready on %s with %s", self.device, settings)

    # --- torchvision ---------------------------------------------------------------------

    def _build_torchvision(self) -> torch.nn.Module:
        settings = self.settings
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(utils.SEED)
            model = torchvision.models.detection.maskrcnn_resnet50_fpn(
                weights=None,
                weights_backbone=None,
                num_classes=settings.num_classes or 91,
                min_size=settings.min_size,
                max_size=settings.max_size,
                box_score_thresh=settings.box_score_thresh,
                box_detections_per_img=settings.detections_per_img,
            )
        if self.checkpoint:
            state = torch.load(self.checkpoint, map_location="cpu", weights_only=True)
            model.load_state_dict(state.get("model", state.get("state_dict", state)))
        if settings.channels_last:
            model = model.to(memory_format=torch.channels_last)
        return model.eval().requires_grad_(False).to(self.device)  # type: ignore[no-any-return]

    def _script_torchvision(self, model: torch.nn.Module) -> torch.nn.Module:
        def compile_model() -> torch.jit.ScriptModule:
            with utils.quiet_torchscript():
                scripted = torch.jit.script(model)
            scripted._has_warned = True  # silence "always returns a (Losses, Detections) tuple"
            return scripted

        key = {
            "model": "maskrcnn_resnet50_fpn",
            "settings": self._model_key(),
            "torchvision": torchvision.__version__,
        }
        return self._cached_script(compile_model, key, model)

    # --- Detectron2 ----------------------------------------------------------------------

    def _build_detectron2(self) -> torch.nn.Module:
        settings = self.settings
        with quiet_detectron2():
            from detectron2.checkpoint import DetectionCheckpointer
            from detectron2.config import get_cfg
            from detectron2.modeling import build_model

        cfg = get_cfg()
        cfg.merge_from_file(self.config_file)
        cfg.MODEL.DEVICE = str(self.device)
        cfg.MODEL.WEIGHTS = ""
        cfg.MODEL.ROI_HEADS.SCORE_THRESH_TEST = settings.box_score_thresh
        cfg.TEST.DETECTIONS_PER_IMAGE = settings.detections_per_img
        if not self.checkpoint:
            cfg.MODEL.PIXEL_STD = IMAGENET_STD
        self.bgr = cfg.INPUT.FORMAT == "BGR"
        classes = cfg.MODEL.ROI_HEADS.NUM_CLASSES
        self.label_ids = torch.tensor(COCO_IDS) if classes == len(COCO_IDS) else None
        with torch.random.fork_rng(devices=[]), quiet_detectron2():
            torch.manual_seed(utils.SEED)
            model = build_model(cfg)
            if not self.checkpoint:
                # Detectron2 starts the mask predictor at std 0.001 (probabilities 0.5 +- 1e-4);
                # torchvision's init here gives both backends random masks alike, so that the
                # mask paste and RLE encoding do alike work (the same compute either way).
                predictor = model.roi_heads.mask_head.predictor
                torch.nn.init.kaiming_normal_(predictor.weight, mode="fan_out", nonlinearity="relu")
                torch.nn.init.zeros_(predictor.bias)
        if self.checkpoint:
            DetectionCheckpointer(model).load(self.checkpoint)
        if settings.channels_last:
            model = model.to(memory_format=torch.channels_last)
        return model.eval().requires_grad_(False)  # type: ignore[no-any-return]

    def _script_detectron2(self, model: torch.nn.Module) -> torch.nn.Module:
        from detectron2.export import scripting_with_instances
        from detectron2.structures import Boxes

        fields = {
            "proposal_boxes": Boxes,
            "objectness_logits": torch.Tensor,
            "pred_boxes": Boxes,
            "scores": torch.Tensor,
            "pred_classes": torch.Tensor,
            "pred_masks": torch.Tensor,
        }

        def compile_model() -> torch.jit.ScriptModule:
            with quiet_detectron2():
                return scripting_with_instances(  # type: ignore[no-any-return]
                    _scriptable_inference(model), fields
                )

        config = hashlib.sha256(Path(self.config_file).read_bytes()).hexdigest()
        import detectron2

        key = {
            "model": "detectron2",
            "settings": self._model_key(),
            "config": [self.config_file, config],
            "detectron2": detectron2.__version__,
        }
        return self._cached_script(compile_model, key, model)

    def _detectron2_forward(self, images: list[torch.Tensor]) -> list[dict[str, torch.Tensor]]:
        """As Detectron2's DefaultPredictor: short side to min_size (long side at most
        max_size), pixels 0-255 in the config's channel order, one ``inference`` for the batch;
        then its ``detector_postprocess`` without dropping empty boxes (a fixed count)."""
        from detectron2.layers.mask_ops import paste_masks_in_image

        threshold = self.settings.mask_threshold  # Detectron2 keeps probabilities >= it
        inputs = []
        for image in images:
            height, width = image.shape[-2:]
            scale = self.settings.min_size / min(height, width)
            scale = min(scale, self.settings.max_size / max(height, width))
            size = (int(height * scale + 0.5), int(width * scale + 0.5))
            resized = torch.nn.functional.interpolate(image[None], size, mode="bilinear")[0]
            resized = (resized.flip(0) if self.bgr else resized) * 255
            inputs.append({"image": resized})  # scripted: Dict[str, Tensor]
        with quiet_detectron2():
            if self.scripted:  # (boxes, scores, classes, masks) per image
                found_all = self.model(inputs)
            else:
                found_all = [_detections(f) for f in self.model.inference(inputs, None, False)]
        outputs = []
        for found, image, given in zip(found_all, images, inputs, strict=True):
            pred_boxes, scores, pred_classes, pred_masks = found
            height, width = image.shape[-2:]
            resized_h, resized_w = given["image"].shape[-2:]
            factors = [width / resized_w, height / resized_h] * 2
            boxes = pred_boxes.float() * torch.tensor(factors, device=self.device)
            boxes[:, 0::2] = boxes[:, 0::2].clamp(0, width)
            boxes[:, 1::2] = boxes[:, 1::2].clamp(0, height)
            with torch.autocast(self.device.type, enabled=False):  # (K, H, W) bool
                masks = paste_masks_in_image(
                    pred_masks[:, 0].float(), boxes, (height, width), threshold
                )
            labels = pred_classes
            if self.label_ids is not None:
                labels = self.label_ids.to(labels.device)[labels]
            outputs.append(
                {"boxes": boxes, "labels": labels, "scores": scores, "masks": masks[:, None]}
            )
        return outputs

    # --- both ----------------------------------------------------------------------------

    def _model_key(self) -> dict[str, Any]:
        fields = ("min_size", "max_size", "detections_per_img", "num_classes", "channels_last")
        return {
            **{name: getattr(self.settings, name) for name in fields},
            "score_thresh": self.settings.box_score_thresh,
            "device": self.device.type,
            "fp16": self.settings.fp16,
            "checkpoint": utils.file_key(self.checkpoint),
        }

    def _cached_script(
        self, compile_model: Any, key: dict[str, Any], model: torch.nn.Module
    ) -> torch.nn.Module:
        try:
            return utils.cached_torchscript(
                compile_model,
                key=key,
                cache_dir=self.settings.torchscript_cache_dir,
                device=self.device,
                handler_file=__file__,
            )
        except (RuntimeError, torch.jit.Error) as exc:
            logger.warning("torch.jit.script failed (%s): falling back to eager mode", exc)
            return model

    def preprocess(self, data: list[Any]) -> tuple[list[torch.Tensor], list[str | None]]:
        """Decode the batch: the images as float (3, H, W) tensors, per request an error."""
        images: list[torch.Tensor] = []
        errors: list[str | None] = []
        for row in data:
            try:
                pixels = torch.from_numpy(np.array(utils.decode_image(row)))
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
        fp16 = torch.autocast("cuda", dtype=torch.float16, enabled=self.settings.fp16)
        with torch.inference_mode(), fp16:
            if self.settings.backend == "detectron2":
                return self._detectron2_forward(images), errors
            outputs = self.model(images)
            return (outputs[1] if self.scripted else outputs), errors

    def postprocess(
        self, data: tuple[list[dict[str, torch.Tensor]], list[str | None]]
    ) -> list[dict[str, Any]]:
        outputs, errors = data
        threshold = self.settings.mask_threshold
        answers = iter(outputs)
        results: list[dict[str, Any]] = []
        for idx, error in enumerate(errors):
            if error is not None:
                assert self.context is not None  # BaseHandler.handle set it before postprocess
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
