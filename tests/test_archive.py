"""Reading an archive without running it: its forms, its manifest and YAML, the handler read
with ``ast``, the knobs it takes, the YAML each trial writes, the answers check and the
config.properties builder. No TorchServe is started here."""

from __future__ import annotations

import hashlib
import json
import shutil
import textwrap
import zipfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import yaml

from autotune._errors import ConfigError
from autotune.serving import (
    Addresses,
    Manifest,
    ModelEntry,
    answer_difference,
    archive_kind,
    build_archive,
    describe_knobs,
    find_knobs,
    inspect_handler,
    model_config,
    open_archive,
    overridden_keys,
    pack_mar,
    restrict_space,
    server_properties,
    thread_env,
)
from autotune.space import Backend, Hardware, TrialConfig, builtin_space, load_space
from tests.archives import ECHO_HANDLER, archiver, echo_archive, vision_archive

CPU = Hardware(cpu_cores=2)
GPU = Hardware(cpu_cores=8, gpus=1)


def digest(path: Path) -> str:
    if path.is_dir():
        return hashlib.sha256(
            b"".join(p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file())
        ).hexdigest()
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The eager vision archive in all three forms, TorchScript, and the echo handler."""
    folder = tmp_path_factory.mktemp("archives")
    return {
        "eager": vision_archive(folder, torchscript=False),
        "tgz": vision_archive(folder, torchscript=False, form="tgz", name="vision_tgz"),
        "dir": vision_archive(folder, torchscript=False, form="no-archive", name="vision_dir"),
        "ts": vision_archive(folder, torchscript=True),
        "echo": echo_archive(folder),
    }


# -- forms and manifest --------------------------------------------------------------------------
@pytest.mark.parametrize("form", ["eager", "tgz", "dir"])
def test_every_form_unpacks_into_the_store_and_the_source_is_unchanged(
    built: dict[str, Path], tmp_path: Path, form: str
) -> None:
    source = built[form]
    before = digest(source)
    archive = open_archive(source, tmp_path / "store")
    assert archive.directory.parent == tmp_path / "store"
    assert (archive.directory / "MAR-INF" / "MANIFEST.json").is_file()
    assert archive.manifest.model_file == "model.py"
    assert archive.manifest.serialized_file == "weights.pth"
    # the copy's manifest names a config file (TorchServe reads the YAML only through it)
    manifest = json.loads((archive.directory / "MAR-INF" / "MANIFEST.json").read_text())
    assert manifest["model"]["configFile"] == "model-config.yaml"
    assert archive.handler.kind == "stock" and archive.handler.base_initialize
    assert digest(source) == before


def test_not_an_archive_and_no_manifest_are_refused(tmp_path: Path) -> None:
    text = tmp_path / "model.mar"
    text.write_text("not an archive")
    with pytest.raises(ConfigError, match="not a model archive"):
        archive_kind(text)
    empty = tmp_path / "empty.mar"
    with zipfile.ZipFile(empty, "w") as zf:
        zf.writestr("weights.pth", b"x")
    with pytest.raises(ConfigError, match=r"no MAR-INF/MANIFEST.json inside"):
        open_archive(empty, tmp_path / "store")
    with pytest.raises(ConfigError, match="no such file or directory"):
        archive_kind(tmp_path / "missing.mar")


# -- the handler, read with ast ------------------------------------------------------------------
def _handler_dir(tmp_path: Path, source: str, name: str = "my_handler.py") -> Manifest:
    (tmp_path / name).write_text(textwrap.dedent(source))
    return Manifest(model_name="m", model_version="1.0", handler=name, model_file="model.py")


@pytest.mark.parametrize(
    ("source", "based"),
    [
        # derives from a stock handler and keeps BaseHandler's initialize
        ("from ts.torch_handler.image_classifier import ImageClassifier\n"
         "class Mine(ImageClassifier):\n    topk = 3\n", True),
        # replaces initialize, but calls super()
        ("from ts.torch_handler.base_handler import BaseHandler\n"
         "class Mine(BaseHandler):\n    def initialize(self, ctx):\n"
         "        super().initialize(ctx)\n        self.extra = 1\n", True),
        # replaces initialize without super(): loads its own model, pt2 would not apply
        ("from ts.torch_handler.base_handler import BaseHandler\n"
         "class Mine(BaseHandler):\n    def initialize(self, ctx):\n        self.model = 1\n",
         False),
        # not a BaseHandler at all
        (ECHO_HANDLER, False),
        # a function entry point
        ("def handle(data, context):\n    return data\n", False),
    ],
)  # fmt: skip
def test_base_handler_initialize_is_found_from_the_source(
    tmp_path: Path, source: str, based: bool
) -> None:
    info = inspect_handler(_handler_dir(tmp_path, source), tmp_path, source="x.mar")
    assert info.kind == "file"
    assert info.base_initialize is based, info.why


def test_declared_knobs_are_read_and_checked(tmp_path: Path) -> None:
    manifest = _handler_dir(tmp_path, 'AUTOTUNE_KNOBS = ("fp16", "compile")\n' + ECHO_HANDLER)
    info = inspect_handler(manifest, tmp_path, source="x.mar")
    assert info.declared == ("fp16", "compile")
    knobs = find_knobs(manifest, info, GPU)
    assert knobs.compile_via == "handler" and knobs.fp16 and not knobs.torchscript
    bad = _handler_dir(tmp_path, 'AUTOTUNE_KNOBS = ("int8",)\n' + ECHO_HANDLER, "bad.py")
    with pytest.raises(ConfigError, match="unknown knob 'int8'"):
        inspect_handler(bad, tmp_path, source="x.mar")


def test_an_unknown_stock_handler_is_refused(tmp_path: Path) -> None:
    manifest = Manifest(model_name="m", model_version="1.0", handler="no_such_handler")
    with pytest.raises(ConfigError, match="neither a file in the archive nor a TorchServe stock"):
        inspect_handler(manifest, tmp_path, source="x.mar")


# -- knobs and the space -------------------------------------------------------------------------
def test_stock_eager_archive_takes_pt2_compile_and_torchscript_does_not(
    built: dict[str, Path], tmp_path: Path
) -> None:
    eager = open_archive(built["eager"], tmp_path / "a")
    ts = open_archive(built["ts"], tmp_path / "b")
    eager_knobs = find_knobs(eager.manifest, eager.handler, CPU)
    ts_knobs = find_knobs(ts.manifest, ts.handler, CPU)
    assert eager_knobs.compile_via == "pt2"
    assert eager_knobs.threads_via == "environment"
    assert ts_knobs.compile_via is None and "TorchScript" in ts_knobs.missing["compile"]
    assert eager_knobs.devices == ("cpu",) and "no GPU" in eager_knobs.missing["cuda"]
    space = restrict_space(
        load_space(builtin_space("archive")).filtered(CPU), eager_knobs, strict=False
    )
    assert space.compile == (False, True) and space.torchscript == (False,)
    lines = describe_knobs(space, eager_knobs)
    assert any(line.startswith("torch.compile: off, on (model-config.yaml pt2") for line in lines)
    assert any("OMP_NUM_THREADS" in line for line in lines)


def test_a_space_naming_a_knob_the_archive_cannot_take_is_refused(
    built: dict[str, Path], tmp_path: Path
) -> None:
    echo = open_archive(built["echo"], tmp_path / "s")
    knobs = find_knobs(echo.manifest, echo.handler, GPU)
    assert knobs.compile_via is None
    space_file = tmp_path / "mine.yaml"
    space_file.write_text(
        "parameters:\n  device: {choices: [cpu, cuda]}\n  fp16: {choices: [false, true]}\n"
        "  workers: {low: 1, high: 2}\n  batch_size: {choices: [1]}\n"
        "  max_batch_delay_ms: {choices: [5]}\n"
    )
    space = load_space(space_file).filtered(GPU)
    with pytest.raises(ConfigError, match=r"mine.yaml: parameters.fp16: this archive cannot take"):
        restrict_space(space, knobs, strict=True)
    dropped = restrict_space(space, knobs, strict=False)
    assert Backend.CUDA_FP16 not in dropped.backends and Backend.CUDA_FP32 in dropped.backends


# -- the YAML a trial writes ---------------------------------------------------------------------
def test_trial_yaml_overrides_the_controlled_keys_and_keeps_the_rest(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "model-config.yaml").write_text(
        "minWorkers: 4\nbatchSize: 32\njobQueueSize: 7\nresponseTimeout: 90\n"
        "pt2: {compile: {enable: true, mode: max-autotune}}\nhandler: {labels: x.json}\n"
    )
    shutil.copy(Path(__file__).parent / "archives" / "_build.py", src / "model.py")
    (src / "weights.pth").write_bytes(b"w")
    mar = archiver(
        "--model-file", str(src / "model.py"), "--serialized-file", str(src / "weights.pth"),
        "--handler", "image_classifier", "--config-file", str(src / "model-config.yaml"),
        export=tmp_path, name="kept",
    )  # fmt: skip
    archive = open_archive(mar, tmp_path / "store")
    knobs = find_knobs(archive.manifest, archive.handler, CPU)
    eager = model_config(archive, knobs, TrialConfig(workers=2, batch_size=4))
    assert eager["minWorkers"] == eager["maxWorkers"] == 2 and eager["batchSize"] == 4
    assert eager["jobQueueSize"] == 7 and eager["handler"] == {"labels": "x.json"}
    assert eager["responseTimeout"] == 90 and "pt2" not in eager
    compiled = model_config(archive, knobs, TrialConfig(batch_size=4, compile=True))
    assert compiled["pt2"] == {
        "compile": {"backend": "inductor", "dynamic": True, "mode": "max-autotune", "enable": True}
    }
    assert compiled["responseTimeout"] >= 600  # its first calls compile
    overridden, added = overridden_keys(archive, knobs)
    assert "minWorkers" in overridden and "batchSize" in overridden and "pt2" in overridden
    assert "maxWorkers" in added and "jobQueueSize" not in overridden + added
    assert thread_env(TrialConfig(threads_per_worker=3), knobs) == {
        "OMP_NUM_THREADS": "3",
        "MKL_NUM_THREADS": "3",
    }
    out = pack_mar(archive, compiled, tmp_path / "out" / "kept.mar")
    with zipfile.ZipFile(out) as zf:
        assert yaml.safe_load(zf.read("model-config.yaml"))["batchSize"] == 4
        assert "MAR-INF/MANIFEST.json" in zf.namelist() and "weights.pth" in zf.namelist()


def test_a_declaring_handler_gets_its_knobs_in_the_handler_section(tmp_path: Path) -> None:
    manifest = _handler_dir(
        tmp_path, 'AUTOTUNE_KNOBS = ("torchscript", "threads_per_worker")\n' + ECHO_HANDLER
    )
    info = inspect_handler(manifest, tmp_path, source="x.mar")
    knobs = find_knobs(manifest, info, CPU)
    assert knobs.threads_via == "handler"
    config = TrialConfig(torchscript=True, threads_per_worker=2)
    assert thread_env(config, knobs) == {}  # the handler sets its threads itself


# -- answers -------------------------------------------------------------------------------------
def test_answer_difference_allows_the_stated_tolerance_only() -> None:
    base = json.dumps({"top5": [{"class": 3, "score": 0.5}]}).encode()
    assert answer_difference(base, base) is None
    close = json.dumps({"top5": [{"class": 3, "score": 0.5004}]}).encode()
    assert answer_difference(base, close) is None
    far = json.dumps({"top5": [{"class": 3, "score": 0.6}]}).encode()
    assert answer_difference(base, far) == "$.top5[0].score: 0.6 != 0.5"
    other = json.dumps({"top5": [{"class": 4, "score": 0.5}]}).encode()
    assert "$.top5[0].class" in (answer_difference(base, other) or "")
    assert "items instead of" in (answer_difference(base, b'{"top5": []}') or "")
    assert "bytes differ" in (answer_difference(b"\x00abc", b"\x00abd") or "")


# -- config.properties ---------------------------------------------------------------------------
def test_one_builder_writes_the_tuning_server_and_the_export() -> None:
    entry = ModelEntry(
        name="m", version="2.0", archive="m.mar", workers=3, batch_size=4,
        max_batch_delay_ms=0, response_timeout_s=60,
    )  # fmt: skip
    export = server_properties(
        addresses=Addresses(), model_store=Path("store"), number_of_gpu=0, model=entry
    )
    assert export["enable_model_api"] is False and "disable_token_authorization" not in export
    assert export["models"] == {
        "m": {"2.0": {"minWorkers": 3, "maxWorkers": 3, "batchSize": 4, "maxBatchDelay": 1,
                      "responseTimeout": 60}}
    }  # fmt: skip
    assert export["inference_address"] == "http://127.0.0.1:8080"
    tuning = server_properties(
        addresses=Addresses(grpc_inference_port=7001, grpc_management_port=7002),
        model_store=Path("store"),
        number_of_gpu=1,
        enable_model_api=True,
    )
    assert tuning["enable_model_api"] is True and "load_models" not in tuning
    assert tuning["grpc_inference_port"] == 7001 and tuning["allowed_urls"] == r"file://.*"


def test_two_builds_of_one_model_at_once_both_succeed(tmp_path: Path) -> None:
    """torch-model-archiver stages in $TMPDIR/<model name> and deletes it first: two tuners
    building the same handler at once (a shared study) must not delete each other's files."""
    handler = tmp_path / "echo_handler.py"
    handler.write_text(ECHO_HANDLER)
    extra = tmp_path / "extra.txt"
    extra.write_bytes(b"x" * 2_000_000)  # long enough to copy that the builds overlap

    def build(i: int) -> Path:
        return build_archive(
            model_name="echo", handler=handler, extra_files=(extra,),
            config={"responseTimeout": 5}, cache_dir=tmp_path / f"cache{i}",
        )  # fmt: skip

    with ThreadPoolExecutor(4) as pool:
        built = list(pool.map(build, range(4)))
    for mar in built:
        with zipfile.ZipFile(mar) as zf:
            assert {"echo_handler.py", "extra.txt", "model-config.yaml"} <= set(zf.namelist())
