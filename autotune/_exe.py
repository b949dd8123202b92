"""Find the console scripts autotune drives (torchserve, torch-model-archiver, optuna-dashboard)."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path


def find_executable(name: str) -> str | None:
    """The script installed beside this Python (the venv's own) first, then the one on PATH."""
    local = Path(sys.executable).with_name(name)
    if local.exists():
        return str(local)
    return shutil.which(name)
