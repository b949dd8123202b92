"""benchmarks/seed_table.py in its CPU form: the CPU row measured, the GPU rows marked, a study.

A real TorchServe, the detector at 320 px with 10 detections (about a second an image here), a
few seconds of load per measurement and a one-trial study: a few minutes on two cores.
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
BACKEND = "detectron2" if importlib.util.find_spec("detectron2") else "torchvision"

pytestmark = [
    pytest.mark.integration,
    pytest.mark.measures,
    pytest.mark.usefixtures("no_orphans"),
    pytest.mark.skipif(torch.cuda.is_available(), reason="the CPU form; a GPU host runs it whole"),
]


def test_cpu_form_measures_the_cpu_row_and_marks_the_gpu_rows(tmp_path: Path) -> None:
    out = tmp_path / "seed"
    cmd = [
        sys.executable, str(ROOT / "benchmarks" / "seed_table.py"),
        "--out", str(out),
        "--backend", BACKEND,
        "--min-size", "320",
        "--detections", "10",
        "--space", str(ROOT / "benchmarks" / "detector_cpu.yaml"),
        "--closed-s", "4",
        "--step-s", "3",
        "--goodput-budget-s", "15",
        "--study-trials", "1",
        "--study-timeout-s", "30",
    ]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=540, check=False)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    report = json.loads((out / "seed_table.json").read_text())
    rows = {row["key"]: row for row in report["rows"]}
    assert list(rows) == ["cpu", "gpu_fp32_b1", "gpu_fp16_b1", "gpu_fp16_b8"]
    cpu = rows["cpu"]
    assert cpu["status"] == "measured" and cpu["concurrency"] == 2
    assert cpu["closed_rps"] > 0 and cpu["closed_p99_ms"] > 0 and cpu["closed_errors"] == 0
    assert cpu["closed_vs_cpu"] == 1.0
    assert cpu["config"].startswith("cpu/fp32/eager w1 b1")
    for key in ("gpu_fp32_b1", "gpu_fp16_b1", "gpu_fp16_b8"):
        assert rows[key]["status"] == "needs a GPU: not run on this host"
    assert rows["gpu_fp16_b8"]["article_p99_ms"] == 94.4
    study = report["study"]
    assert study["exit_code"] == 0 and study["trials"] == 1
    assert study["command"].startswith("autotune run --sla-ms 100 ")
    table = (out / "seed_table.md").read_text()
    assert table.count("needs a GPU: not run on this host") == 3
    assert "| best CPU configuration (fp32, workers=1, batch=1) |" in table
    assert f"backend {BACKEND}, min_size 320, 10 detections" in table
