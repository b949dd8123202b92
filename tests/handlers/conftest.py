"""Fixtures of the handler tests: the sample images, and torch's thread count restored."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch
from handler_harness import ASSETS, jpeg
from PIL import Image


@pytest.fixture(scope="session")
def quick_jpeg() -> bytes:
    return (ASSETS / "quick_sample.jpg").read_bytes()


@pytest.fixture(scope="session")
def drawing_jpeg() -> bytes:
    return (ASSETS / "drawing.jpg").read_bytes()


@pytest.fixture(scope="session")
def drawing_mirrored_jpeg() -> bytes:
    with Image.open(ASSETS / "drawing.jpg") as image:
        return jpeg(image.transpose(Image.Transpose.FLIP_LEFT_RIGHT))


@pytest.fixture
def restore_threads() -> Iterator[None]:
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)
