"""The detector handler's Detectron2 backend (``backend: detectron2``), run in-process on the CPU.

Detectron2 has no PyPI release; ``scripts/check`` installs the wheel in ``../shared/wheels/``
when it is there. These tests skip only when Detectron2 is missing and that wheel is too; with
the wheel present but not installed they fail, so CI cannot pass them by skipping.
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from autotune.handlers.maskrcnn_detector import (
    COCO_IDS,
    DETECTRON2_CONFIG,
    MaskRCNNDetector,
    decode_mask,
    detectron2_config_file,
)
from handler_harness import load, run_batch

WHEELS = Path(__file__).resolve().parents[2].parent / "shared" / "wheels"
if importlib.util.find_spec("detectron2") is None:
    if list(WHEELS.glob(f"detectron2-*-cp{sys.version_info[0]}{sys.version_info[1]}-*.whl")):
        raise RuntimeError(
            f"Detectron2 is not installed but its wheel is in {WHEELS}: run scripts/check, "
            "which installs it"
        )
    pytest.skip(
        f"Detectron2 is not installed (no PyPI release; no wheel in {WHEELS}): "
        "pip install --no-build-isolation 'git+https://github.com/facebookresearch/detectron2.git'",
        allow_module_level=True,
    )

SMALL = {"min_size": 320, "max_size": 533, "detections_per_img": 10}
D2 = {**SMALL, "backend": "detectron2"}


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("model")


@pytest.fixture(scope="module")
def d2(model_dir: Path) -> Any:
    return load(MaskRCNNDetector, D2, model_dir)


@pytest.fixture(scope="module")
def d2_result(d2: Any, drawing_jpeg: bytes) -> dict[str, Any]:
    (result,), statuses = run_batch(d2, [drawing_jpeg])
    assert statuses == [200]
    return result


def assert_same_detections(got: dict[str, Any], want: dict[str, Any], box_atol: float) -> None:
    assert got["labels"] == want["labels"]
    np.testing.assert_allclose(got["boxes"], want["boxes"], atol=box_atol)
    np.testing.assert_allclose(got["scores"], want["scores"], atol=1e-3)
    for g, w in zip(got["masks"], want["masks"], strict=True):
        a, b = decode_mask(g), decode_mask(w)
        assert (a & b).sum() >= 0.98 * (a | b).sum()


def shape_of(value: Any) -> Any:
    """The JSON structure of an answer: keys, and the types of the values down to the leaves."""
    if isinstance(value, dict):
        return {key: shape_of(item) for key, item in value.items()}
    if isinstance(value, list):
        return [shape_of(value[0])] if value else []
    return type(value).__name__


def test_the_model_is_detectron2s_own_from_the_article_config(d2: Any) -> None:
    from detectron2.modeling import GeneralizedRCNN

    assert isinstance(d2.model, GeneralizedRCNN)
    assert d2.config_file == detectron2_config_file()
    assert d2.config_file.endswith(f"model_zoo/configs/{DETECTRON2_CONFIG}")
    assert type(d2.model.backbone.bottom_up).__name__ == "ResNet"
    assert len(d2.model.backbone.bottom_up.res4) == 6  # ResNet-50: 3, 4, 6, 3 blocks
    assert d2.model.roi_heads.mask_on


def test_answers_in_the_torchvision_backends_format(
    d2_result: dict[str, Any], drawing_jpeg: bytes, model_dir: Path
) -> None:
    torchvision_backend = load(MaskRCNNDetector, SMALL, model_dir)
    (want,), _ = run_batch(torchvision_backend, [drawing_jpeg])
    result = d2_result
    assert shape_of(result) == shape_of(want)
    assert list(result) == list(want)
    assert (result["width"], result["height"]) == (want["width"], want["height"]) == (1000, 750)
    count = SMALL["detections_per_img"]  # random weights: score_thresh 0, a fixed count
    assert len(result["boxes"]) == len(result["labels"]) == len(result["masks"]) == count
    assert result["scores"] == sorted(result["scores"], reverse=True)
    assert set(result["labels"]) <= set(COCO_IDS)  # the same 91-way indexing as torchvision
    for x0, y0, x1, y1 in result["boxes"]:
        assert 0 <= x0 <= x1 <= 1000 and 0 <= y0 <= y1 <= 750
        assert x1 - x0 > 1 and y1 - y0 > 1  # ImageNet's std: random weights find real boxes
    for box, rle in zip(result["boxes"], result["masks"], strict=True):
        mask = decode_mask(rle)
        assert mask.shape == (750, 1000)
        xs = np.nonzero(mask)[1]
        assert len(xs), "a pasted mask of a random mask head has pixels"
        margin = 2 + (box[2] - box[0]) / 28
        assert box[0] - margin <= xs.min() and xs.max() <= box[2] + margin


def test_a_batch_is_one_forward_pass_and_equals_single_requests(
    d2: Any, d2_result: dict[str, Any], drawing_jpeg: bytes, drawing_mirrored_jpeg: bytes
) -> None:
    calls: list[int] = []
    hook = d2.model.backbone.register_forward_hook(lambda m, i, o: calls.append(len(i[0])))
    try:
        batch, statuses = run_batch(d2, [drawing_jpeg, b"<html>", drawing_mirrored_jpeg])
    finally:
        hook.remove()
    assert statuses == [200, 400, 200]
    assert calls == [2]
    assert "not an image PIL can read" in batch[1]["error"]
    (mirrored,), _ = run_batch(d2, [drawing_mirrored_jpeg])
    assert_same_detections(batch[0], d2_result, box_atol=0.1)
    assert_same_detections(batch[2], mirrored, box_atol=0.1)


def test_random_weights_are_fixed(
    d2_result: dict[str, Any], drawing_jpeg: bytes, tmp_path: Path
) -> None:
    again = load(MaskRCNNDetector, D2, tmp_path)
    assert run_batch(again, [drawing_jpeg])[0] == [d2_result]


def test_a_checkpoint_is_loaded(d2: Any, drawing_jpeg: bytes, model_dir: Path) -> None:
    state = {k: v.clone() for k, v in d2.model.state_dict().items()}
    state["roi_heads.box_predictor.cls_score.weight"].zero_()  # the bias alone decides:
    state["roi_heads.box_predictor.cls_score.bias"][2] = 10.0  # contiguous class 2, COCO id 3
    torch.save({"model": state}, model_dir / "model_final.pth")
    handler = load(MaskRCNNDetector, {**D2, "checkpoint": "model_final.pth"}, model_dir)
    assert handler.settings.box_score_thresh == 0.05
    (result,), statuses = run_batch(handler, [drawing_jpeg])
    assert statuses == [200] and result["labels"]
    assert set(result["labels"]) == {3}


def test_torchscript_equals_eager_and_is_cached(
    d2_result: dict[str, Any],
    drawing_jpeg: bytes,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    settings = {**D2, "torchscript": True, "torchscript_cache_dir": str(tmp_path / "cache")}
    scripted = load(MaskRCNNDetector, settings, tmp_path)
    assert isinstance(scripted.model, torch.jit.ScriptModule)
    (result,), _ = run_batch(scripted, [drawing_jpeg])
    assert_same_detections(result, d2_result, box_atol=0.02)
    assert [p.suffix for p in (tmp_path / "cache").iterdir()] == [".pt"]

    import detectron2.export

    def no_script(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("the cached module should have been loaded")

    monkeypatch.setattr(detectron2.export, "scripting_with_instances", no_script)
    cached = load(MaskRCNNDetector, settings, tmp_path)
    assert run_batch(cached, [drawing_jpeg])[0] == [result]

    # A second worker is another process: it has not scripted anything (no Detectron2 patch
    # classes of its own) and must answer from the cached module alone.
    (tmp_path / "drawing.jpg").write_bytes(drawing_jpeg)
    worker = subprocess.run(
        [sys.executable, "-c", SECOND_WORKER, json.dumps(settings), str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert worker.returncode == 0, worker.stderr[-3000:]
    statuses, answer = json.loads(worker.stdout.splitlines()[-1])
    assert statuses == [200]
    assert answer == result


SECOND_WORKER = f"""
import json, sys
sys.path.insert(0, {str(Path(__file__).resolve().parent)!r})
import detectron2.export
from autotune.handlers.maskrcnn_detector import MaskRCNNDetector
from handler_harness import load, run_batch

def no_script(*args, **kwargs):
    raise AssertionError("the cached module should have been loaded")

detectron2.export.scripting_with_instances = no_script
settings, model_dir = json.loads(sys.argv[1]), sys.argv[2]
handler = load(MaskRCNNDetector, settings, model_dir)
(answer,), statuses = run_batch(handler, [open(model_dir + "/drawing.jpg", "rb").read()])
print(json.dumps([statuses, answer]))
"""


def test_compile_equals_eager(
    d2_result: dict[str, Any], drawing_jpeg: bytes, tmp_path: Path
) -> None:
    compiled = load(MaskRCNNDetector, {**D2, "compile": True}, tmp_path)
    assert type(compiled.model.backbone).__name__ == "OptimizedModule"
    (result,), _ = run_batch(compiled, [drawing_jpeg])
    assert_same_detections(result, d2_result, box_atol=0.1)


def test_a_config_file_relative_to_the_model_dir(tmp_path: Path) -> None:
    config = tmp_path / "mask_rcnn.yaml"
    base = Path(detectron2_config_file()).parent.parent / "Base-RCNN-FPN.yaml"
    config.write_text(
        f'_BASE_: "{base}"\nMODEL:\n  MASK_ON: True\n  ROI_HEADS:\n    NUM_CLASSES: 3\n'
    )
    handler = load(MaskRCNNDetector, {**D2, "detectron2_config": "mask_rcnn.yaml"}, tmp_path)
    assert handler.config_file == str(config)
    assert handler.model.roi_heads.box_predictor.num_classes == 3
    assert handler.label_ids is None  # not COCO's 80 classes: its own indices


@pytest.mark.skipif(not torch.cuda.is_available(), reason="fp16 runs on CUDA only; no GPU here")
def test_fp16_on_cuda_finds_the_fp32_top_detection(drawing_jpeg: bytes, tmp_path: Path) -> None:
    fp32 = load(MaskRCNNDetector, {**D2, "device": "cuda"}, tmp_path)
    fp16 = load(MaskRCNNDetector, {**D2, "device": "cuda", "fp16": True}, tmp_path)
    (want,), _ = run_batch(fp32, [drawing_jpeg])
    (got,), _ = run_batch(fp16, [drawing_jpeg])
    matches = [
        i
        for i in range(3)
        if got["labels"][i] == want["labels"][0]
        and np.allclose(got["boxes"][i], want["boxes"][0], atol=2.0)
        and abs(got["scores"][i] - want["scores"][0]) < 1e-2
    ]
    assert matches, (got["boxes"][:3], want["boxes"][0])
