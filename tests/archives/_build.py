"""Build test archives with torch-model-archiver (see the package docstring)."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import warnings
from pathlib import Path
from typing import Literal

# TorchServe's image_classifier example (examples/image_classifier/resnet_18/model.py) with a
# smaller torchvision model, so that a trial takes seconds on two cores.
MODEL_PY = textwrap.dedent(
    """
    from torchvision.models.mobilenetv3 import MobileNetV3, _mobilenet_v3_conf


    class ImageClassifier(MobileNetV3):
        def __init__(self):
            settings, last_channel = _mobilenet_v3_conf("mobilenet_v3_small")
            super().__init__(settings, last_channel)
    """
)

# A user's handler that is not based on BaseHandler: a class with initialize and handle.
ECHO_HANDLER = textwrap.dedent(
    """
    import hashlib


    class EchoDigest:
        def initialize(self, context):
            self.initialized = True

        def handle(self, data, context):
            rows = []
            for row in data:
                body = row.get("data") or row.get("body") or b""
                if isinstance(body, str):
                    body = body.encode()
                rows.append({"bytes": len(body), "sha1": hashlib.sha1(body).hexdigest()})
            return rows
    """
)

Form = Literal["default", "tgz", "no-archive"]
_SUFFIX = {"default": ".mar", "tgz": ".tar.gz", "no-archive": ""}


def archiver(*args: str, export: Path, name: str, form: Form = "default") -> Path:
    """Run torch-model-archiver; the archive it wrote."""
    exe = Path(sys.executable).with_name("torch-model-archiver")
    export.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        [str(exe), "--model-name", name, "--version", "1.0", "--export-path", str(export),
         "--archive-format", form, "--force", *args],
        check=True, capture_output=True, timeout=300,
    )  # fmt: skip
    return export / f"{name}{_SUFFIX[form]}"


def write_vision_model(folder: Path, *, torchscript: bool) -> list[str]:
    """model.py + weights.pth (eager) or model.pt (TorchScript), fixed random weights; the
    torch-model-archiver arguments that archive them."""
    import torch

    folder.mkdir(parents=True, exist_ok=True)
    (folder / "model.py").write_text(MODEL_PY)
    namespace: dict[str, object] = {}
    exec(compile(MODEL_PY, str(folder / "model.py"), "exec"), namespace)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = namespace["ImageClassifier"]()  # type: ignore[operator]
    model.eval()
    if not torchscript:
        torch.save(model.state_dict(), folder / "weights.pth")
        return ["--model-file", str(folder / "model.py"),
                "--serialized-file", str(folder / "weights.pth")]  # fmt: skip
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # torch 2.14: TorchScript is deprecated
        # torch leaves torch.jit.trace unannotated
        traced = torch.jit.trace(model, torch.zeros(1, 3, 224, 224))  # type: ignore[no-untyped-call]
        torch.jit.save(traced, str(folder / "model.pt"))
    return ["--serialized-file", str(folder / "model.pt")]


def vision_archive(
    folder: Path, *, torchscript: bool, form: Form = "default", name: str | None = None
) -> Path:
    """The stock image_classifier handler with MobileNetV3-Small, eager or TorchScript."""
    name = name or ("vision_ts" if torchscript else "vision_eager")
    args = write_vision_model(folder / f"{name}-src", torchscript=torchscript)
    return archiver(*args, "--handler", "image_classifier", export=folder, name=name, form=form)


def echo_archive(folder: Path, *, form: Form = "default") -> Path:
    src = folder / "echo-src"
    src.mkdir(parents=True, exist_ok=True)
    (src / "echo_handler.py").write_text(ECHO_HANDLER)
    return archiver("--handler", str(src / "echo_handler.py"), export=folder, name="echo",
                    form=form)  # fmt: skip


def broken_handler_archive(folder: Path) -> Path:
    """A handler file that fails to import in the worker."""
    src = folder / "broken-src"
    src.mkdir(parents=True, exist_ok=True)
    (src / "broken_handler.py").write_text(
        "import autotune_no_such_module  # noqa: F401\n\n\n" + ECHO_HANDLER
    )
    return archiver("--handler", str(src / "broken_handler.py"), export=folder, name="broken")


def garbage_weights_archive(folder: Path) -> Path:
    """The eager image_classifier archive with a weights file that is not weights."""
    src = folder / "garbage-src"
    src.mkdir(parents=True, exist_ok=True)
    (src / "model.py").write_text(MODEL_PY)
    (src / "weights.pth").write_bytes(b"these are not weights\n" * 10)
    return archiver("--model-file", str(src / "model.py"), "--serialized-file",
                    str(src / "weights.pth"), "--handler", "image_classifier",
                    export=folder, name="garbage")  # fmt: skip
