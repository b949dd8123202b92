"""The public surface of ``autotune.loadgen`` is exactly ``__all__``."""

from __future__ import annotations

import autotune.loadgen as loadgen


def test_all_is_the_public_surface() -> None:
    public = {name for name in dir(loadgen) if not name.startswith("_")}
    assert set(loadgen.__all__) == public
    assert loadgen.__all__ == sorted(loadgen.__all__)
