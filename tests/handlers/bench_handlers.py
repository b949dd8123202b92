"""Latency of the two handlers on this machine, through ``handle`` as a worker calls it.

    .venv/bin/python tests/handlers/bench_handlers.py classifier [--repeat N] [--threads 1 2]
    .venv/bin/python tests/handlers/bench_handlers.py detector [--repeat N] [--threads 2]

The variants of one model are timed in turns (A, B, C, A, B, C, ...) so that other load on the
host hits them alike; each line gives the minimum and the median wall time of ``handle``
(decode, forward, encode) over N turns, after 2 warm-up calls. Not a test: pytest skips it.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from autotune.handlers.image_classifier import ImageClassifier
from autotune.handlers.maskrcnn_detector import MaskRCNNDetector
from handler_harness import ASSETS, load, run_batch


def compare(variants: dict[str, tuple[Any, list[bytes]]], repeat: int, threads: int) -> None:
    torch.set_num_threads(threads)
    times: dict[str, list[float]] = {label: [] for label in variants}
    for handler, bodies in variants.values():
        for _ in range(2):
            run_batch(handler, bodies)
    for _ in range(repeat):
        for label, (handler, bodies) in variants.items():
            start = time.perf_counter()
            run_batch(handler, bodies)
            times[label].append((time.perf_counter() - start) * 1000)
    for label, values in times.items():
        print(
            f"threads={threads} {label}: min {min(values):8.1f} ms  "
            f"median {statistics.median(values):8.1f} ms",
            flush=True,
        )


def classifier(args: argparse.Namespace, model_dir: Path) -> None:
    body = (ASSETS / "quick_sample.jpg").read_bytes()
    handlers = {
        (torchscript, channels_last): load(
            ImageClassifier, {"torchscript": torchscript, "channels_last": channels_last}, model_dir
        )
        for torchscript in (False, True)
        for channels_last in (False, True)
    }
    for threads in args.threads:
        for batch in (1, 8):
            variants = {
                f"torchscript={ts!s:5} channels_last={cl!s:5} batch={batch}": (h, [body] * batch)
                for (ts, cl), h in handlers.items()
            }
            compare(variants, args.repeat, threads)


def detector(args: argparse.Namespace, model_dir: Path) -> None:
    body = (ASSETS / "drawing.jpg").read_bytes()
    for min_size in (320, 512, 800):
        variants = {}
        for torchscript, channels_last in ((False, True), (False, False), (True, True)):
            settings = {
                "min_size": min_size,
                "torchscript": torchscript,
                "channels_last": channels_last,
            }
            handler = load(MaskRCNNDetector, settings, model_dir)
            label = f"min_size={min_size} torchscript={torchscript!s:5} cl={channels_last!s:5}"
            variants[label] = (handler, [body])
        for threads in args.threads:
            compare(variants, args.repeat, threads)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", choices=["classifier", "detector"])
    parser.add_argument("--repeat", type=int, default=10)
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    args = parser.parse_args()
    print(f"torch {torch.__version__}, {os.cpu_count()} CPUs, load {os.getloadavg()[0]:.1f}")
    with tempfile.TemporaryDirectory() as model_dir:
        (classifier if args.model == "classifier" else detector)(args, Path(model_dir))
    print(f"load {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
