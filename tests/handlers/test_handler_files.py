"""Rules TorchServe puts on a handler file, and the shared module shipped beside it.

TorchServe imports a handler file as a top-level module of the model folder (``sys.path`` holds
that folder), and refuses one that defines more than one class. autotune's handlers share
``autotune_handler_utils.py``, which the archive carries (``--extra-files``) and which they
import relatively when installed (``autotune.handlers``) and top-level in a model folder.
"""

from __future__ import annotations

import ast
import dataclasses
import shutil
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest
from autotune.handlers import autotune_handler_utils, image_classifier, maskrcnn_detector
from ts.utils.util import list_classes_from_module

HANDLERS_DIR = Path(autotune_handler_utils.__file__).parent
MODULES = [image_classifier, maskrcnn_detector]
SETTINGS = {
    image_classifier: autotune_handler_utils.ClassifierSettings,
    maskrcnn_detector: autotune_handler_utils.DetectorSettings,
}
KNOBS = {"fp16", "torchscript", "compile", "threads_per_worker"}


@pytest.mark.parametrize("module", MODULES, ids=lambda m: m.__name__)
def test_a_handler_file_defines_exactly_one_class(module: ModuleType) -> None:
    # ts.model_loader refuses a handler module with more than one class of its own.
    assert len(list_classes_from_module(module)) == 1


@pytest.mark.parametrize("module", MODULES, ids=lambda m: m.__name__)
def test_both_handlers_use_the_one_shared_module(module: ModuleType) -> None:
    assert module.utils is autotune_handler_utils


@pytest.mark.parametrize("module", MODULES, ids=lambda m: m.__name__)
def test_autotune_knobs_is_a_literal_tuple_of_settings_fields(module: ModuleType) -> None:
    """autotune reads AUTOTUNE_KNOBS with ast, never importing the file."""
    tree = ast.parse(Path(str(module.__file__)).read_text())
    (value,) = [
        node.value
        for node in tree.body
        if isinstance(node, ast.Assign)
        and [getattr(t, "id", None) for t in node.targets] == ["AUTOTUNE_KNOBS"]
    ]
    knobs = ast.literal_eval(value)
    assert isinstance(knobs, tuple) and set(knobs) == KNOBS == set(module.AUTOTUNE_KNOBS)
    fields = {field.name for field in dataclasses.fields(SETTINGS[module])}
    assert set(knobs) <= fields


@pytest.mark.parametrize("name", ["image_classifier", "maskrcnn_detector"])
def test_in_a_model_folder_the_handler_imports_the_utils_beside_it(
    name: str, tmp_path: Path
) -> None:
    """As TorchServe loads it: the model folder on sys.path, the file imported by its stem."""
    shutil.copy(HANDLERS_DIR / f"{name}.py", tmp_path)
    code = (
        f"import sys; sys.path.insert(0, {str(tmp_path)!r}); import {name} as m; "
        "from ts.utils.util import list_classes_from_module as c; "
        "print(m.utils.__name__, m.utils.__file__, [k.__name__ for k in c(m)])"
    )
    alone = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert alone.returncode != 0
    assert "No module named 'autotune_handler_utils'" in alone.stderr

    shutil.copy(HANDLERS_DIR / "autotune_handler_utils.py", tmp_path)
    shipped = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert shipped.returncode == 0, shipped.stderr
    module_name, path, classes = shipped.stdout.split(" ", 2)
    assert module_name == "autotune_handler_utils"
    assert Path(path) == tmp_path / "autotune_handler_utils.py"
    assert len(eval(classes)) == 1


@pytest.mark.parametrize(
    ("cls", "handler"),
    [
        (autotune_handler_utils.ClassifierSettings, "image_classifier"),
        (autotune_handler_utils.DetectorSettings, "maskrcnn_detector"),
    ],
)
def test_an_unknown_handler_key_is_refused_by_name(
    cls: type[autotune_handler_utils.HandlerSettings], handler: str
) -> None:
    context = type("Ctx", (), {"model_yaml_config": {"handler": {"fp_16": True, "fp16": False}}})
    with pytest.raises(ValueError) as info:
        autotune_handler_utils.read_settings(cls, context(), handler)
    message = str(info.value)
    assert message.startswith("unknown key `fp_16` in the handler: section of model-config.yaml")
    assert f"{handler} reads: " in message and "fp16" in message


def test_settings_are_frozen_and_typed() -> None:
    context = type("Ctx", (), {"model_yaml_config": {"handler": {"image_size": 160}}})()
    settings = image_classifier.read_settings(context)
    assert isinstance(settings, autotune_handler_utils.ClassifierSettings)
    assert settings.image_size == 160 and settings.device == "cpu"
    with pytest.raises(dataclasses.FrozenInstanceError):
        settings.image_size = 224


@pytest.mark.parametrize(
    ("section", "message"),
    [
        ("fp16: true", "the handler: section of model-config.yaml must be a mapping"),
        ({"torchscript": True, "compile": True}, "`torchscript` and `compile` are exclusive"),
        ({"compile": 1}, "`compile` must be true or false"),
        ({"checkpoint": 3}, "`checkpoint` must be a file path"),
    ],
)
def test_common_settings_are_validated(section: object, message: str) -> None:
    context = type("Ctx", (), {"model_yaml_config": {"handler": section}})()
    for module in MODULES:
        with pytest.raises(ValueError, match=message):
            module.read_settings(context)
