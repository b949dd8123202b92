"""The detector's two backends side by side: latency per image on this host, same work.

    .venv/bin/python benchmarks/detector_backends.py [--min-size 320 800] [--detections 100]
        [--batch 1] [--repeat 5] [--threads N] [--json FILE]

Both backends of ``handlers/maskrcnn_detector.py`` (torchvision's ``maskrcnn_resnet50_fpn`` and
Detectron2's ``mask_rcnn_R_50_FPN_3x``) load in this process with random weights and
``score_thresh`` 0, so every image yields exactly ``--detections`` detections in both and the
mask head does the same work. Each is called through ``handle`` as a TorchServe worker calls it
(decode, resize, forward, mask paste, RLE encode) on the Animated Drawings sample (1000 x 750),
in turns (A, B, A, B, ...) so that other load on the host hits both alike, after 2 warm-up
calls. Each line gives the minimum and median wall time per image, and the ratio of the
medians (Detectron2 / torchvision). The measurement holds autotune's host lock (it waits for a
run measuring on this host, and a run waits for it). Needs Detectron2 (see the README).

    .venv/bin/python benchmarks/detector_backends.py --archives DIR [--min-size 320]
        [--detections 10]

writes instead one model archive per backend at that size (``DIR/detector_<backend>.mar``, the
built-in ``animated_drawings``/``animated_drawings_d2`` models with other handler defaults) and
prints the ``autotune run`` command that tunes each on this CPU (``benchmarks/detector_cpu.yaml``).

    .venv/bin/python benchmarks/detector_backends.py --archives DIR --tune BACKEND
        --sla-ms 5000 [--trials 4]

tunes that archive end to end: what ``autotune run --model DIR/detector_BACKEND.mar --space
benchmarks/detector_cpu.yaml --confirm 0 --slow-model`` does (same prepare, study, trials on a
real TorchServe, summary; ``autotune export`` reads it, from ``sqlite:///DIR/detectors-tuned.db``):
the load generator set for a model answering ~0.3-1 request/s
(``autotune.loadgen.slow_model_settings``) instead of the CLI's defaults, which fit 20-100
req/s. With the defaults, no trial of this model can be feasible on
a 2-core CPU: the capacity probe's 32 clients leave a queue of 30+ s that the 5 s drain does
not empty (the next step's requests all count as unfinished errors), and a pass needs 299 (or
200 undecided) answers in one step of at most 24 s.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shutil
import statistics
import tempfile
import time
from importlib import resources
from pathlib import Path
from typing import Any

import torch
import ts
from autotune.handlers.maskrcnn_detector import MaskRCNNDetector
from ts.context import Context, RequestProcessor
from ts.metrics.metric_cache_yaml_impl import MetricsCacheYamlImpl

from autotune.loadgen import slow_model_settings
from autotune.serving import Holder, HostLock

SAMPLE = Path(str(resources.files("autotune").joinpath("assets", "drawing.jpg")))
BACKENDS = ("torchvision", "detectron2")
SPACE = Path(__file__).resolve().parent / "detector_cpu.yaml"
# The goodput search for a server of ~0.3-1 req/s (the CLI's own adds only warmup_requests=2):
# capacity probe with as many clients as the space's largest workers x batch (2 x 4), answers
# awaited until the queue is empty, steps of up to 60 s, and a step passes undecided on 15
# answers none of which is over the SLA (its P99 point estimate is its maximum).
SLOW_LOAD = slow_model_settings()  # what `autotune run --slow-model` uses


def load(settings: dict[str, Any], model_dir: Path) -> MaskRCNNDetector:
    """The handler initialised as a TorchServe worker does it."""
    metrics = MetricsCacheYamlImpl(
        config_file_path=str(Path(ts.__file__).parent / "configs" / "metrics.yaml")
    )
    metrics.initialize_cache()
    manifest = {"model": {"modelName": "bench"}}
    context = Context(
        "bench", str(model_dir), manifest, 8, None, ts.__version__, True, metrics,
        {"handler": settings},
    )  # fmt: skip
    handler = MaskRCNNDetector()
    handler.initialize(context)
    handler.context = context
    return handler


def handle(handler: MaskRCNNDetector, bodies: list[bytes]) -> None:
    context = handler.context
    context.request_processor = [RequestProcessor({}) for _ in bodies]
    context.request_ids = {i: f"r{i}" for i in range(len(bodies))}
    context.metrics.request_ids = context.request_ids
    results = handler.handle([{"body": body} for body in bodies], context)
    if any("error" in result for result in results):
        raise RuntimeError(f"the handler refused the sample: {results[0]}")


def measure(args: argparse.Namespace, min_size: int, model_dir: Path) -> dict[str, Any]:
    settings = {
        "min_size": min_size,
        "max_size": round(min_size * 1333 / 800),
        "detections_per_img": args.detections,
        "threads_per_worker": args.threads,
    }
    handlers = {name: load({**settings, "backend": name}, model_dir) for name in BACKENDS}
    bodies = [SAMPLE.read_bytes()] * args.batch
    for handler in handlers.values():
        for _ in range(2):
            handle(handler, bodies)
    per_image: dict[str, list[float]] = {name: [] for name in BACKENDS}
    for _ in range(args.repeat):
        for name, handler in handlers.items():
            start = time.perf_counter()
            handle(handler, bodies)
            per_image[name].append((time.perf_counter() - start) * 1000 / args.batch)
    row: dict[str, Any] = {"min_size": min_size, "batch": args.batch}
    for name, values in per_image.items():
        row[name] = {"min_ms": min(values), "median_ms": statistics.median(values)}
    row["ratio_median"] = row["detectron2"]["median_ms"] / row["torchvision"]["median_ms"]
    return row


def write_archives(args: argparse.Namespace) -> None:
    """One small-image archive per backend, and the commands that tune them."""
    from autotune.serving import get_model

    min_size = args.min_size[0]
    defaults = {
        "min_size": min_size,
        "max_size": round(min_size * 1333 / 800),
        "detections_per_img": args.detections,
    }
    for backend, builtin in (
        ("torchvision", "animated_drawings"),
        ("detectron2", "animated_drawings_d2"),
    ):
        spec = dataclasses.replace(
            get_model(builtin),
            name=f"detector_{backend}",
            handler_defaults={**get_model(builtin).handler_defaults, **defaults},
        )
        built = spec.build(args.archives / ".cache")
        target = args.archives / f"detector_{backend}.mar"
        shutil.copyfile(built, target)
        print(
            f"python benchmarks/{Path(__file__).name} --archives {args.archives} --tune {backend} "
            f"--sla-ms {args.sla_ms:g} --trials {args.trials}"
        )


def tune(args: argparse.Namespace) -> None:
    """One study of ``DIR/detector_<backend>.mar``, as ``autotune run`` with ``SLOW_LOAD``."""
    import autotune

    archives = args.archives.resolve()
    archive = archives / f"detector_{args.tune}.mar"
    if not archive.is_file():
        raise SystemExit(f"{archive}: no archive; write it first with --archives {args.archives}")
    settings = autotune.RunSettings(
        sla_ms=args.sla_ms,
        model=str(archive),
        storage=f"sqlite:///{archives}/detectors-tuned.db",
        space_path=SPACE,
        n_trials=args.trials,
        input_path=SAMPLE,
        workdir=archives / "work",
        load=SLOW_LOAD,
        confirm_top_k=0,
    )
    started = time.monotonic()
    prepared = autotune.prepare(settings)
    study, _ = autotune.open_study(prepared)
    autotune.run_study(
        prepared,
        study,
        on_trial_end=lambda trial, result: print(
            f"trial {trial.number}: {result.config.label()} {result.verdict} "
            f"{result.throughput_rps:.2f} req/s P99 {result.p99_ms:,.0f} ms",
            flush=True,
        ),
    )
    best = autotune.summarize(study).best
    print(f"wall {time.monotonic() - started:.0f} s; best: {best}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--min-size", type=int, nargs="+", default=[320, 800])
    parser.add_argument("--detections", type=int, default=100)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--json", type=Path, help="also write the rows here")
    parser.add_argument("--archives", type=Path, help="write the two archives here instead")
    parser.add_argument("--sla-ms", type=float, default=5000, help="(--archives) the SLA")
    parser.add_argument("--tune", choices=BACKENDS, help="(--archives) tune this one")
    parser.add_argument("--trials", type=int, default=4, help="(--tune) the study's trials")
    args = parser.parse_args()
    if args.tune and not args.archives:
        parser.error("--tune needs --archives DIR (where the archives are)")
    if args.tune:
        tune(args)
        return
    if args.archives:
        write_archives(args)
        return
    print(
        f"torch {torch.__version__}, {os.cpu_count()} CPUs, {args.threads} threads, "
        f"{args.detections} detections, batch {args.batch}",
        flush=True,
    )
    rows = []

    def on_wait(holder: Holder | None) -> None:
        who = holder.describe() if holder is not None else "another run"
        print(f"waiting for the host: {who}", flush=True)

    with HostLock(on_wait=on_wait), tempfile.TemporaryDirectory() as model_dir:
        print(f"load {os.getloadavg()[0]:.1f} when the host lock was taken", flush=True)
        for min_size in args.min_size:
            row = measure(args, min_size, Path(model_dir))
            rows.append(row)
            tv, d2 = row["torchvision"], row["detectron2"]
            print(
                f"min_size {min_size:4}: torchvision median {tv['median_ms']:7.0f} ms "
                f"(min {tv['min_ms']:6.0f})  detectron2 median {d2['median_ms']:7.0f} ms "
                f"(min {d2['min_ms']:6.0f})  detectron2/torchvision {row['ratio_median']:.2f}",
                flush=True,
            )
    print(f"load {os.getloadavg()[0]:.1f}")
    if args.json:
        args.json.write_text(json.dumps({"args": vars(args) | {"json": None}, "rows": rows}))


if __name__ == "__main__":
    main()
