"""benchmarks/gpu/: the GPU machine's prepared script, run here on what it does before a GPU.

``run_seed_table.sh`` is called once per staged part (``build/gpu-bundle/<n>``); each call
installs its part's wheels into a venv over the machine's Python and says which parts are still
to come. Here it runs in a scratch copy of the repository with one hand-made pure-Python wheel.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
GPU = ROOT / "benchmarks" / "gpu"


def make_wheel(folder: Path, name: str) -> Path:
    """A minimal pure-Python wheel of package ``name`` (version 0.1)."""
    dist = f"{name}-0.1.dist-info"
    files = {
        f"{name}/__init__.py": "VALUE = 42\n",
        f"{dist}/METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: 0.1\n",
        f"{dist}/WHEEL": "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\n"
        "Tag: py3-none-any\n",
    }
    files[f"{dist}/RECORD"] = "".join(f"{path},,\n" for path in [*files, f"{dist}/RECORD"])
    path = folder / f"{name}-0.1-py3-none-any.whl"
    with zipfile.ZipFile(path, "w") as whl:
        for member, text in files.items():
            whl.writestr(member, text)
    return path


@pytest.mark.parametrize("script", ["stage.sh", "run_seed_table.sh"])
def test_the_scripts_parse(script: str) -> None:
    subprocess.run(["bash", "-n", str(GPU / script)], check=True)


def test_each_call_installs_its_part_and_says_what_is_still_to_come(tmp_path: Path) -> None:
    if shutil.which("python3") is None:
        pytest.skip("no python3 on PATH (the GPU machine's interpreter)")
    repo = tmp_path / "repo"
    (repo / "benchmarks" / "gpu").mkdir(parents=True)
    shutil.copy(GPU / "run_seed_table.sh", repo / "benchmarks" / "gpu")
    part = repo / "build" / "gpu-bundle" / "1"
    part.mkdir(parents=True)
    (part / "PART").write_text("1 2\n")  # part 1 of 2 required parts
    make_wheel(part, "autotune_stage_probe")
    env = {**os.environ, "OUT": str(tmp_path / "out")}
    script = ["bash", "benchmarks/gpu/run_seed_table.sh"]

    first = subprocess.run(script, cwd=repo, env=env, capture_output=True, text=True, timeout=300)
    assert first.returncode == 0, first.stdout + first.stderr
    assert "installing part 1" in first.stdout
    assert "parts still to come: 2; call again with the next one" in first.stdout
    assert (repo / "build" / "gpu-installed" / "1").exists()
    venv_python = repo / "build" / "gpu-venv" / "bin" / "python"
    probe = ["import autotune_stage_probe as m; print(m.VALUE)"]
    got = subprocess.run([venv_python, "-c", *probe], capture_output=True, text=True, check=True)
    assert got.stdout.strip() == "42"

    again = subprocess.run(script, cwd=repo, env=env, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stdout + again.stderr
    assert "installing part 1" not in again.stdout  # an installed part is not installed again
    assert "parts still to come: 2" in again.stdout
