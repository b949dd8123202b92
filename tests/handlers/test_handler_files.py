"""Rules TorchServe puts on a handler file, and the helpers both handler files duplicate."""

from __future__ import annotations

import inspect
from types import ModuleType

import pytest
from autotune.handlers import image_classifier, maskrcnn_detector
from ts.utils.util import list_classes_from_module

MODULES = [image_classifier, maskrcnn_detector]
# Each handler file is copied alone into its model archive, so these are duplicated on purpose.
SHARED = ["set_threads", "decode_image", "quiet_torchscript", "cached_torchscript"]


@pytest.mark.parametrize("module", MODULES, ids=lambda m: m.__name__)
def test_a_handler_file_defines_exactly_one_class(module: ModuleType) -> None:
    # ts.model_loader refuses a handler module with more than one class of its own.
    assert len(list_classes_from_module(module)) == 1


@pytest.mark.parametrize("name", SHARED)
def test_duplicated_helpers_have_not_drifted_apart(name: str) -> None:
    sources = {inspect.getsource(getattr(module, name)) for module in MODULES}
    assert len(sources) == 1, f"{name} differs between the handler files"
