"""Measure ``quick_cpu.csv``: the quick model's landscape on this host, through the tuner itself.

Every configuration of a reduced cpu grid (workers x batch size x batch delay x threads per
worker x TorchScript, 48 by default) is deployed on a real TorchServe and measured by
the evaluator that ``autotune.prepare`` builds, the measurement ``autotune run`` makes for each
trial (goodput under the SLA with the load generator). Rows are appended as they are measured,
so an interrupted run resumes where it stopped; the configurations run in a seeded shuffled order
so that a drift of the host (other load, thermals) does not line up with one parameter.

    python benchmarks/landscapes/measure_quick_landscape.py [--out FILE.csv] [--sla-ms 100]
        [--workdir DIR] [--workers 1 2] [--batch-sizes 1 4 16] [--delays 1 10] [--threads 1 2]

At 20-60 s a configuration, the default grid takes 20-45 minutes.
"""

from __future__ import annotations

import argparse
import csv
import itertools
import random
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:  # run as a script from a checkout
    sys.path.insert(0, str(ROOT))

import autotune  # noqa: E402
from autotune import TrialConfig, TrialResult  # noqa: E402
from autotune.loadgen import GoodputSettings  # noqa: E402
from autotune.serving import Holder, HostLock  # noqa: E402
from autotune.space import PARAMETERS  # noqa: E402

HERE = Path(__file__).resolve().parent
COLUMNS = (
    *PARAMETERS,
    "throughput_rps",
    "p99_ms",
    "sla_ms",
)


def grid(
    workers: Sequence[int], batches: Sequence[int], delays: Sequence[int], threads: Sequence[int]
) -> list[TrialConfig]:
    return [
        TrialConfig(
            device="cpu",
            torchscript=ts,
            workers=w,
            batch_size=b,
            max_batch_delay_ms=d,
            threads_per_worker=t,
        )
        for ts, w, b, d, t in itertools.product((False, True), workers, batches, delays, threads)
    ]


def key(config: TrialConfig) -> tuple[object, ...]:
    return (
        config.device,
        config.fp16,
        config.torchscript,
        config.workers,
        config.batch_size,
        config.max_batch_delay_ms,
        config.threads_per_worker,
    )


def done_keys(path: Path) -> set[tuple[object, ...]]:
    if not path.is_file():
        return set()
    with path.open(newline="", encoding="utf-8") as f:
        return {
            (
                r["device"],
                r["fp16"] == "true",
                r["torchscript"] == "true",
                int(r["workers"]),
                int(r["batch_size"]),
                int(r["max_batch_delay_ms"]),
                int(r["threads_per_worker"]),
            )
            for r in csv.DictReader(f)
        }


def row(result: TrialResult, sla_ms: float) -> dict[str, object]:
    c = result.config
    feasible = result.verdict == "feasible"
    p99 = result.p99_ms
    return {
        "device": c.device,
        "fp16": str(c.fp16).lower(),
        "torchscript": str(c.torchscript).lower(),
        "compile": str(c.compile).lower(),
        "workers": c.workers,
        "batch_size": c.batch_size,
        "max_batch_delay_ms": c.max_batch_delay_ms,
        "threads_per_worker": c.threads_per_worker,
        "throughput_rps": round(result.throughput_rps, 2) if feasible else 0.0,
        # Empty for a failed deployment: the benchmark reads it as failed.
        "p99_ms": "" if result.verdict == "failed" or p99 != p99 else round(p99, 1),
        "sla_ms": f"{sla_ms:g}",
    }


def _say_wait(holder: Holder | None) -> None:
    who = holder.describe() if holder is not None else "another autotune run"
    print(f"waiting for the host: {who}", flush=True)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=HERE / "quick_cpu.csv")
    parser.add_argument("--sla-ms", type=float, default=100.0)
    parser.add_argument("--workdir", type=Path, default=None, help="default: a temp folder")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 4, 16])
    parser.add_argument("--delays", type=int, nargs="+", default=[1, 10])
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--seed", type=int, default=0, help="seed of the measuring order")
    args = parser.parse_args(argv)

    configs = grid(args.workers, args.batch_sizes, args.delays, args.threads)
    random.Random(args.seed).shuffle(configs)
    done = done_keys(args.out)
    todo = [c for c in configs if key(c) not in done]
    print(f"{len(configs)} configurations, {len(configs) - len(todo)} measured already")
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="quick-landscape-"))
    # The evaluator `autotune run` builds: the quick model's archive, its knobs, one server.
    settings = autotune.RunSettings(
        sla_ms=args.sla_ms,
        model="quick",
        storage=f"sqlite:///{workdir.resolve() / 'unused.db'}",
        workdir=workdir.resolve(),
        load=GoodputSettings(warmup_requests=2),  # as `autotune run`
    )
    prepared = autotune.prepare(settings)  # starts TorchServe and checks the model answers
    evaluator = prepared.evaluator
    new_file = not args.out.is_file()
    # Rows appended to an older file keep its columns (``quick_cpu.csv`` predates ``compile``).
    columns = COLUMNS if new_file else tuple(args.out.read_text().splitlines()[0].split(","))
    try:
        with args.out.open("a", newline="", encoding="utf-8") as f:
            writer = csv.DictWriter(
                f, fieldnames=columns, lineterminator="\n", extrasaction="ignore"
            )
            if new_file:
                writer.writeheader()
            for i, config in enumerate(todo, 1):
                started = time.monotonic()
                with HostLock(study="quick-landscape", on_wait=_say_wait):
                    result = evaluator.evaluate(config)
                writer.writerow(row(result, args.sla_ms))
                f.flush()
                print(
                    f"[{i}/{len(todo)}] {config.label()}: {result.verdict}, "
                    f"{result.throughput_rps:.1f} rps, P99 {result.p99_ms:.1f} ms "
                    f"({time.monotonic() - started:.0f} s)"
                    + (f" - {result.failure}" if result.failure else ""),
                    flush=True,
                )
    finally:
        evaluator.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
