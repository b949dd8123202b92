"""The Animated Drawings detector's handler (handlers/maskrcnn_detector.py), run on the CPU.

Small images (min_size 320) and 10 detections keep each forward pass around a second here.
min_size 320 is also a size where torchvision's scripted and eager resizes agree for a
1000 x 750 image: scripted code computes the scale in float32, so at min_size 256 or 512 it
makes the image 1 px smaller than eager code does (255 x 341 instead of 256 x 341), and
random weights then find other detections.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from autotune.handlers.maskrcnn_detector import (
    MaskRCNNDetector,
    decode_mask,
    encode_masks,
    read_settings,
)
from handler_harness import load, run_batch

SMALL = {"min_size": 320, "max_size": 533, "detections_per_img": 10}


@pytest.fixture(scope="module")
def eager(tmp_path_factory: pytest.TempPathFactory) -> Any:
    return load(MaskRCNNDetector, SMALL, tmp_path_factory.mktemp("model"))


@pytest.fixture(scope="module")
def drawing_result(eager: Any, drawing_jpeg: bytes) -> dict[str, Any]:
    (result,), statuses = run_batch(eager, [drawing_jpeg])
    assert statuses == [200]
    return result


def iou(a: np.ndarray, b: np.ndarray) -> float:
    union = (a | b).sum()
    return float((a & b).sum() / union) if union else 1.0


def assert_same_detections(got: dict[str, Any], want: dict[str, Any], box_atol: float) -> None:
    """Same detections in the same order; boxes within ``box_atol`` px, masks IoU >= 0.98."""
    assert got["labels"] == want["labels"]
    np.testing.assert_allclose(got["boxes"], want["boxes"], atol=box_atol)
    np.testing.assert_allclose(got["scores"], want["scores"], atol=1e-3)
    for g, w in zip(got["masks"], want["masks"], strict=True):
        assert iou(decode_mask(g), decode_mask(w)) >= 0.98


def test_output_format(drawing_result: dict[str, Any]) -> None:
    result = drawing_result
    assert (result["width"], result["height"]) == (1000, 750)
    count = len(result["boxes"])
    assert count == SMALL["detections_per_img"]  # random weights: score_thresh 0, fixed count
    assert len(result["labels"]) == len(result["scores"]) == len(result["masks"]) == count
    assert result["scores"] == sorted(result["scores"], reverse=True)
    for x0, y0, x1, y1 in result["boxes"]:
        assert 0 <= x0 <= x1 <= 1000 and 0 <= y0 <= y1 <= 750
    for box, rle in zip(result["boxes"], result["masks"], strict=True):
        mask = decode_mask(rle)
        assert mask.shape == (750, 1000)
        xs = np.nonzero(mask)[1]
        if len(xs):  # the pasted mask stays within its box, give or take its 1/28 padding
            assert xs.min() >= box[0] - 2 - (box[2] - box[0]) / 28
            assert xs.max() <= box[2] + 2 + (box[2] - box[0]) / 28
    assert json.loads(json.dumps(result)) == result


def test_torchscript_equals_eager_and_is_cached(
    drawing_jpeg: bytes,
    drawing_result: dict[str, Any],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    settings = {**SMALL, "torchscript": True, "torchscript_cache_dir": str(tmp_path / "cache")}
    scripted = load(MaskRCNNDetector, settings, tmp_path)
    assert isinstance(scripted.model, torch.jit.ScriptModule)
    (result,), _ = run_batch(scripted, [drawing_jpeg])
    assert_same_detections(result, drawing_result, box_atol=0.02)  # equal to the rounding

    def no_script(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("the cached module should have been loaded")

    monkeypatch.setattr(torch.jit, "script", no_script)
    cached = load(MaskRCNNDetector, settings, tmp_path)
    assert run_batch(cached, [drawing_jpeg])[0] == [result]


def test_batch_equals_single_requests(
    eager: Any,
    drawing_jpeg: bytes,
    drawing_mirrored_jpeg: bytes,
    drawing_result: dict[str, Any],
) -> None:
    # Same-size images: the batch pads nothing more than one image alone would.
    batch, statuses = run_batch(eager, [drawing_jpeg, drawing_mirrored_jpeg])
    assert statuses == [200, 200]
    (mirrored,), _ = run_batch(eager, [drawing_mirrored_jpeg])
    assert_same_detections(batch[0], drawing_result, box_atol=0.1)
    assert_same_detections(batch[1], mirrored, box_atol=0.1)


def test_malformed_image_gets_400_and_the_rest_is_answered(
    eager: Any, drawing_jpeg: bytes, drawing_result: dict[str, Any]
) -> None:
    results, statuses = run_batch(eager, [b"<html>", drawing_jpeg, drawing_jpeg[:5000]])
    assert statuses == [400, 200, 400]
    assert "not an image PIL can read" in results[0]["error"]
    assert "truncated" in results[2]["error"]
    assert_same_detections(results[1], drawing_result, box_atol=0.1)


def test_a_batch_is_one_forward_pass(
    eager: Any, drawing_jpeg: bytes, drawing_mirrored_jpeg: bytes
) -> None:
    calls: list[int] = []
    hook = eager.model.backbone.register_forward_hook(lambda m, i, o: calls.append(len(i[0])))
    try:
        _, statuses = run_batch(eager, [drawing_jpeg, b"junk", drawing_mirrored_jpeg])
    finally:
        hook.remove()
    assert statuses == [200, 400, 200]
    assert calls == [2]  # one backbone call on a batch of the two images


def test_channels_last_does_not_change_the_answer(
    drawing_jpeg: bytes, drawing_result: dict[str, Any], tmp_path: Path
) -> None:
    nchw = load(MaskRCNNDetector, {**SMALL, "channels_last": False}, tmp_path)
    assert_same_detections(run_batch(nchw, [drawing_jpeg])[0][0], drawing_result, box_atol=0.1)


@pytest.mark.usefixtures("restore_threads")
def test_threads_per_worker_is_applied(tmp_path: Path) -> None:
    load(MaskRCNNDetector, {**SMALL, "threads_per_worker": 1}, tmp_path)
    assert torch.get_num_threads() == 1


def context_with(settings: dict[str, Any]) -> Any:
    return type("Ctx", (), {"model_yaml_config": {"handler": settings}})()


def test_score_threshold_defaults_to_zero_only_with_random_weights() -> None:
    assert read_settings(context_with({})).box_score_thresh == 0.0
    assert read_settings(context_with({"checkpoint": "w.pt"})).box_score_thresh == 0.05
    given = read_settings(context_with({"checkpoint": "w.pt", "score_thresh": 0.5}))
    assert given.box_score_thresh == pytest.approx(0.5)


@pytest.mark.parametrize(
    ("handler_settings", "message"),
    [
        ({"fp16": True}, "`fp16` needs device 'cuda'"),
        ({"min_size": "800"}, "`min_size` must be an integer >= 1"),
        ({"detections_per_img": 0}, "`detections_per_img` must be an integer >= 1"),
        ({"mask_threshold": 2}, r"`mask_threshold` must be a number in \[0, 1\]"),
        ({"backend": "mmdet"}, "`backend` must be 'torchvision' or 'detectron2'"),
        ({"backend": "detectron2", "num_classes": 81}, "`num_classes` is read by backend"),
        ({"detectron2_config": "x.yaml"}, "`detectron2_config` needs `backend: detectron2`"),
        ({"min_sise": 320}, "unknown key `min_sise` in the handler: section of model-config"),
    ],
)
def test_invalid_settings_are_refused(handler_settings: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        read_settings(context_with(handler_settings))


# Written by pycocotools 2.0.11 (mask.encode) for the masks built in the test below.
PYCOCOTOOLS_SMALL = "73305NM"
PYCOCOTOOLS_LARGE = "01Qm5W6SVJ" + "0" * 78 + "ZK" + "`M`2`2`M" * 9 + "`M`2`2V2" + "0" * 218 + "ni5"


def test_masks_are_pycocotools_compressed_rle() -> None:
    small = np.zeros((6, 5), dtype=bool)
    small[1:4, 1:3] = small[0, 4] = True
    large = np.zeros((300, 200), dtype=bool)
    large[0, 0] = large[50:250, 20:180] = True
    large[100:120, 60:70] = False
    for mask, counts in ((small, PYCOCOTOOLS_SMALL), (large, PYCOCOTOOLS_LARGE)):
        (rle,) = encode_masks(torch.from_numpy(mask)[None])
        assert rle == {"size": list(mask.shape), "counts": counts}
        assert (decode_mask(rle) == mask).all()


def test_rle_round_trips_any_batch_of_masks() -> None:
    rng = np.random.default_rng(0)
    masks = rng.random((6, 37, 23)) > 0.5
    masks[0], masks[1], masks[2, :, :] = False, True, False
    masks[2, 0, 0] = True  # only the first pixel set
    masks[3, 5:9, 3:20] = True
    encoded = encode_masks(torch.from_numpy(masks))
    assert len(encoded) == len(masks)
    for rle, mask in zip(encoded, masks, strict=True):
        assert (decode_mask(rle) == mask).all()
    assert encode_masks(torch.zeros(0, 4, 4, dtype=torch.bool)) == []


@pytest.mark.skipif(not torch.cuda.is_available(), reason="fp16 runs on CUDA only; no GPU here")
def test_fp16_on_cuda_finds_the_fp32_top_detection(drawing_jpeg: bytes, tmp_path: Path) -> None:
    fp32 = load(MaskRCNNDetector, {**SMALL, "device": "cuda"}, tmp_path)
    fp16 = load(MaskRCNNDetector, {**SMALL, "device": "cuda", "fp16": True}, tmp_path)
    (want,), _ = run_batch(fp32, [drawing_jpeg])
    (got,), _ = run_batch(fp16, [drawing_jpeg])
    # fp16 keeps about 3 significant digits: 0.5 px at 1000 px, scores within 1e-2. Near-ties
    # may reorder, so the fp32 top detection must be among the fp16 top 3, not first.
    matches = [
        i
        for i in range(3)
        if got["labels"][i] == want["labels"][0]
        and np.allclose(got["boxes"][i], want["boxes"][0], atol=2.0)
        and abs(got["scores"][i] - want["scores"][0]) < 1e-2
    ]
    assert matches, (got["boxes"][:3], want["boxes"][0])


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA; no GPU here")
def test_torchscript_on_cuda_with_fp16_runs(drawing_jpeg: bytes, tmp_path: Path) -> None:
    settings = {**SMALL, "device": "cuda", "fp16": True, "torchscript": True}
    scripted = load(MaskRCNNDetector, settings, tmp_path)
    assert isinstance(scripted.model, torch.jit.ScriptModule)
    (result,), statuses = run_batch(scripted, [drawing_jpeg])
    assert statuses == [200] and len(result["boxes"]) == SMALL["detections_per_img"]
