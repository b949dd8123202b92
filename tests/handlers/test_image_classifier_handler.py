"""The quick model's handler (handlers/image_classifier.py), run in-process on the CPU."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import pytest
import torch
import torchvision
from autotune.handlers.image_classifier import ImageClassifier, read_settings
from handler_harness import jpeg, load, run_batch
from PIL import Image

# Tolerance between two float32 computations of the same softmax (reordered sums, BN folding).
ATOL = 1e-5


@pytest.fixture(scope="module")
def eager(tmp_path_factory: pytest.TempPathFactory) -> Any:
    return load(ImageClassifier, None, tmp_path_factory.mktemp("model"))


@pytest.fixture(scope="module")
def other_jpeg() -> bytes:
    return jpeg(Image.radial_gradient("L").convert("RGB").resize((320, 240)))


def assert_same_top5(got: dict[str, Any], want: dict[str, Any], atol: float = ATOL) -> None:
    assert [e["class"] for e in got["top5"]] == [e["class"] for e in want["top5"]]
    for g, w in zip(got["top5"], want["top5"], strict=True):
        assert g["score"] == pytest.approx(w["score"], abs=atol)


def test_output_is_top5_json(eager: Any, quick_jpeg: bytes) -> None:
    (result,), statuses = run_batch(eager, [quick_jpeg])
    assert statuses == [200]
    assert list(result) == ["top5"]
    classes = [entry["class"] for entry in result["top5"]]
    scores = [entry["score"] for entry in result["top5"]]
    assert len(set(classes)) == 5 and all(0 <= c < 1000 for c in classes)
    assert scores == sorted(scores, reverse=True) and 0 < sum(scores) <= 1
    assert json.loads(json.dumps(result)) == result


def test_batch_equals_single_requests(eager: Any, quick_jpeg: bytes, other_jpeg: bytes) -> None:
    bodies = [quick_jpeg, other_jpeg, quick_jpeg]
    batch, _ = run_batch(eager, bodies)
    singles = [run_batch(eager, [body])[0][0] for body in bodies]
    for got, want in zip(batch, singles, strict=True):
        assert_same_top5(got, want)


def test_malformed_image_gets_400_and_the_rest_is_answered(eager: Any, quick_jpeg: bytes) -> None:
    bodies = [quick_jpeg, b"not an image", quick_jpeg[: len(quick_jpeg) // 2], b"", quick_jpeg]
    results, statuses = run_batch(eager, bodies)
    assert statuses == [200, 400, 400, 400, 200]
    assert "not an image PIL can read" in results[1]["error"]
    assert "truncated" in results[2]["error"]
    assert "no body" in results[3]["error"]
    assert_same_top5(results[4], results[0])


def test_a_batch_of_only_malformed_images_runs_no_forward(eager: Any) -> None:
    results, statuses = run_batch(eager, [b"\x89PNG broken", b"GIF89a"])
    assert statuses == [400, 400]
    assert all("error" in result for result in results)


def test_png_grey_and_rgba_images_are_accepted(eager: Any) -> None:
    buffer = io.BytesIO()
    Image.new("LA", (100, 60), (128, 200)).save(buffer, format="PNG")
    _, statuses = run_batch(eager, [buffer.getvalue()])
    assert statuses == [200]


def test_torchscript_equals_eager_and_is_cached(
    eager: Any,
    quick_jpeg: bytes,
    other_jpeg: bytes,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    settings = {"torchscript": True, "torchscript_cache_dir": str(tmp_path / "cache")}
    scripted = load(ImageClassifier, settings, tmp_path)
    assert isinstance(scripted.model, torch.jit.ScriptModule)
    bodies = [quick_jpeg, other_jpeg]
    for got, want in zip(run_batch(scripted, bodies)[0], run_batch(eager, bodies)[0], strict=True):
        assert_same_top5(got, want, atol=1e-4)  # BN folded into the convs by torch.jit.freeze
    assert [p.suffix for p in (tmp_path / "cache").iterdir()] == [".pt"]

    def no_trace(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("the cached module should have been loaded")

    monkeypatch.setattr(torch.jit, "trace", no_trace)
    cached = load(ImageClassifier, settings, tmp_path)
    assert run_batch(cached, bodies)[0] == run_batch(scripted, bodies)[0]


def test_compile_equals_eager(
    eager: Any, quick_jpeg: bytes, other_jpeg: bytes, tmp_path: Path
) -> None:
    compiled = load(ImageClassifier, {"compile": True}, tmp_path)
    assert compiled.model is not compiled.model._orig_mod  # torch.compile's wrapper
    bodies = [quick_jpeg, other_jpeg]
    for got, want in zip(run_batch(compiled, bodies)[0], run_batch(eager, bodies)[0], strict=True):
        assert_same_top5(got, want, atol=1e-4)  # inductor fuses and reorders the sums


def test_channels_last_does_not_change_the_answer(
    eager: Any, quick_jpeg: bytes, tmp_path: Path
) -> None:
    assert eager.settings.channels_last is True
    nchw = load(ImageClassifier, {"channels_last": False}, tmp_path)
    assert_same_top5(run_batch(nchw, [quick_jpeg])[0][0], run_batch(eager, [quick_jpeg])[0][0])


@pytest.mark.usefixtures("restore_threads")
def test_threads_per_worker_is_applied(tmp_path: Path) -> None:
    load(ImageClassifier, {"threads_per_worker": 1}, tmp_path)
    assert torch.get_num_threads() == 1


def test_checkpoint_is_loaded_relative_to_the_model_dir(quick_jpeg: bytes, tmp_path: Path) -> None:
    model = torchvision.models.mobilenet_v3_small(num_classes=7)
    with torch.no_grad():  # a bias that decides the ranking: the checkpoint's weights are used
        model.classifier[3].bias.copy_(torch.arange(7.0) * 2)
    torch.save(model.state_dict(), tmp_path / "w.pt")
    handler = load(ImageClassifier, {"checkpoint": "w.pt"}, tmp_path)
    (result,), _ = run_batch(handler, [quick_jpeg])
    assert [entry["class"] for entry in result["top5"]] == [6, 5, 4, 3, 2]


def test_resnet18_architecture_with_its_checkpoint(quick_jpeg: bytes, tmp_path: Path) -> None:
    torch.save(torchvision.models.resnet18(num_classes=5).state_dict(), tmp_path / "r.pt")
    handler = load(ImageClassifier, {"architecture": "resnet18", "checkpoint": "r.pt"}, tmp_path)
    (result,), _ = run_batch(handler, [quick_jpeg])
    assert {entry["class"] for entry in result["top5"]} == set(range(5))


def test_a_checkpoint_of_another_architecture_is_refused_with_the_fix(tmp_path: Path) -> None:
    torch.save(torchvision.models.resnet18(num_classes=5).state_dict(), tmp_path / "r.pt")
    with pytest.raises(ValueError, match="set `architecture` to the one it was saved from"):
        load(ImageClassifier, {"checkpoint": "r.pt"}, tmp_path)


def test_defaults_when_the_handler_section_is_missing(tmp_path: Path) -> None:
    settings = load(ImageClassifier, None, tmp_path).settings
    assert settings.device == "cpu" and settings.image_size == 224
    assert not settings.fp16 and not settings.torchscript and not settings.compile


@pytest.mark.parametrize(
    ("handler_settings", "message"),
    [
        ({"fp16": True}, "`fp16` needs device 'cuda'"),
        ({"torchscript": "yes"}, "`torchscript` must be true or false"),
        ({"threads_per_worker": -1}, "`threads_per_worker` must be an integer >= 0"),
        ({"device": "tpu"}, "`device` must be 'cpu' or 'cuda'"),
        ({"architecture": "vgg16"}, "`architecture` must be one of"),
        ({"image_size": 0}, "`image_size` must be an integer >= 1"),
        ({"min_size": 320}, "unknown key `min_size` in the handler: section"),
    ],
)
def test_invalid_settings_are_refused(handler_settings: dict[str, Any], message: str) -> None:
    context = type("Ctx", (), {"model_yaml_config": {"handler": handler_settings}})()
    with pytest.raises(ValueError, match=message):
        read_settings(context)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="fp16 runs on CUDA only; no GPU here")
def test_fp16_on_cuda_is_close_to_fp32(quick_jpeg: bytes, tmp_path: Path) -> None:
    fp32 = load(ImageClassifier, {"device": "cuda"}, tmp_path)
    fp16 = load(ImageClassifier, {"device": "cuda", "fp16": True}, tmp_path)
    want, got = run_batch(fp32, [quick_jpeg])[0][0], run_batch(fp16, [quick_jpeg])[0][0]
    assert got["top5"][0]["class"] == want["top5"][0]["class"]
    for g, w in zip(got["top5"], want["top5"], strict=True):  # fp16 keeps about 3 digits
        assert g["score"] == pytest.approx(w["score"], rel=2e-2)


def test_a_loaded_worker_keeps_its_heap_out_of_full_collections(tmp_path: Path) -> None:
    import gc

    from autotune.handlers import autotune_handler_utils as utils

    # Start from a process where no earlier handler froze anything or installed the log.
    gc.unfreeze()
    while utils.LONG_COLLECTIONS in gc.callbacks:
        gc.callbacks.remove(utils.LONG_COLLECTIONS)
    assert gc.get_freeze_count() == 0
    handler = load(ImageClassifier, None, tmp_path)
    try:
        assert handler.initialized
        assert gc.get_freeze_count() > 0  # the model, torch and the rest are frozen
        assert utils.LONG_COLLECTIONS in gc.callbacks
    finally:
        gc.unfreeze()
        gc.callbacks.remove(utils.LONG_COLLECTIONS)


def test_a_full_collection_that_stalls_the_worker_is_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    from autotune.handlers import autotune_handler_utils as utils

    clock = iter([0.0, 0.050, 1.0, 2.0, 2.005])  # a young collection reads no clock
    log = utils.CollectionLog(threshold_ms=20, clock=lambda: next(clock))
    with caplog.at_level("WARNING", logger=utils.logger.name):
        log("start", {"generation": 2})
        log("stop", {"generation": 2})  # 50 ms: logged
        log("start", {"generation": 0})
        log("stop", {"generation": 0})  # a young one: never
        log("start", {"generation": 2})
        log("stop", {"generation": 2})  # 5 ms: below 20 ms
    assert [r.getMessage() for r in caplog.records] == ["full garbage collection: 50 ms"]
