"""How much the goodput of one configuration moves when it is measured again.

Deploys one configuration of the quick model on a real TorchServe through the public API
(``autotune.prepare`` builds the evaluator ``autotune run`` uses) and measures its goodput
``--repeats`` times (default 5), each on a freshly registered model, as the confirmation of the
winner does. Prints each measurement (goodput, P99, the search's steps), then the median, the
spread (max/min) and the coefficient of variation of goodput and P99, and the host's load: the
load average before and after, and the CPU that *other* processes used during each measurement
(in cores: the host's busy time minus ours and our servers'), since on a shared host that, not
the tool, is often where the spread comes from.

    python benchmarks/repeatability.py [--config "cpu/fp32/ts w2 b4 d1ms t1"] [--repeats 5]
        [--sla-ms 100] [--step-s S] [--no-confirm-failures] [--rel-precision 0.1] [--json]

The default configuration is the best of the quick landscape on this 2-core host
(``benchmarks/landscapes/quick_cpu.csv``: TorchScript, 2 workers, batch 4, 1 ms, 1 thread).
With defaults it takes 3-5 minutes. Exit status 1 when the spread exceeds ``--max-spread``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import psutil

import autotune
from autotune.loadgen import GoodputSettings, LoadResult, find_goodput, run_sync
from autotune.serving import Holder, HostLock, result_from_goodput
from autotune.space import TrialConfig
from autotune.study import TrialResult

DEFAULT_CONFIG = "cpu/fp32/ts w2 b4 d1ms t1"


def parse_label(label: str) -> TrialConfig:
    """``TrialConfig.label()`` back into a configuration: ``cpu/fp32/ts w2 b4 d1ms t1``."""
    try:
        head, *rest = label.split()
        device, precision, mode = head.split("/")
        fields = {part[0]: part[1:] for part in rest}
        return TrialConfig(
            device=device,  # type: ignore[arg-type]
            fp16=precision == "fp16",
            torchscript=mode == "ts",
            compile=mode == "compile",
            workers=int(fields["w"]),
            batch_size=int(fields["b"]),
            max_batch_delay_ms=int(fields["d"].removesuffix("ms")),
            threads_per_worker=int(fields.get("t", "0")),
        )
    except (ValueError, KeyError) as exc:
        raise SystemExit(
            f"--config {label!r}: not a label like {DEFAULT_CONFIG!r} ({exc})"
        ) from None


def _measure_with_steps(
    prepared: Any, config: TrialConfig, load: GoodputSettings, sla_ms: float, log: Any
) -> TrialResult:
    """As ``evaluate`` (register, search, unregister), printing the search's path."""

    def on_step(step: LoadResult) -> None:
        print(
            f"     {step.mode:6} {step.offered_rps:7.1f} -> {step.throughput_rps:7.1f} req/s "
            f"P99 {step.p99_ms:7.1f} ms over {step.over_sla} of {step.sent} "
            f"{step.verdict} {step.duration_s:.1f} s",
            file=log,
            flush=True,
        )

    started = time.monotonic()
    with prepared.evaluator.deployed(config) as target:
        deploy_s = time.monotonic() - started
        found = run_sync(find_goodput(target, sla_ms=sla_ms, settings=load, on_step=on_step))
    return result_from_goodput(
        config, found, deploy_s=deploy_s, measure_s=time.monotonic() - started - deploy_s
    )


def _say_wait(holder: Holder | None) -> None:
    who = holder.describe() if holder is not None else "another autotune run"
    print(f"waiting for the host: {who}", file=sys.stderr, flush=True)


def _ours_cpu_s() -> float:
    """CPU seconds used so far by this process and everything it started (our servers)."""
    total = 0.0
    me = psutil.Process()
    for p in [me, *me.children(recursive=True)]:
        try:
            t = p.cpu_times()
            total += t.user + t.system + t.children_user + t.children_system
        except psutil.Error:
            pass
    return total


def _busy_s() -> float:
    t = psutil.cpu_times()
    return float(t.user + t.nice + t.system + t.irq + t.softirq + t.steal)


def _cv(values: list[float]) -> float:
    finite = [v for v in values if math.isfinite(v)]
    if len(finite) < 2 or statistics.fmean(finite) == 0:
        return math.nan
    return statistics.stdev(finite) / statistics.fmean(finite)


def _spread(values: list[float]) -> float:
    low, high = min(values), max(values)
    return high / low if low > 0 else math.inf


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", default=DEFAULT_CONFIG)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--sla-ms", type=float, default=100.0)
    parser.add_argument("--step-s", type=float, default=None)
    parser.add_argument("--rel-precision", type=float, default=None)
    parser.add_argument("--no-confirm-failures", action="store_true")
    parser.add_argument("--max-spread", type=float, default=math.inf)
    parser.add_argument("--workdir", type=Path, default=None)
    parser.add_argument("--json", action="store_true", help="Print one JSON object at the end.")
    parser.add_argument(
        "--steps", action="store_true", help="Print every probe and step of each search."
    )
    args = parser.parse_args(argv)
    config = parse_label(args.config)
    load = GoodputSettings(warmup_requests=2)  # as `autotune run`
    if args.step_s is not None:
        load = dataclasses.replace(load, step_max_s=args.step_s)
    if args.rel_precision is not None:
        load = dataclasses.replace(load, rel_precision=args.rel_precision)
    if args.no_confirm_failures:
        load = dataclasses.replace(load, confirm_failures=False)

    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="autotune-repeatability-"))
    log = sys.stderr if args.json else sys.stdout
    loadavg_before = os.getloadavg()
    started = time.monotonic()
    settings = autotune.RunSettings(
        sla_ms=args.sla_ms,
        model="quick",
        storage=f"sqlite:///{workdir / 'unused.db'}",
        workdir=workdir,
        load=load,
    )
    prepared = autotune.prepare(settings)  # starts TorchServe and checks the model answers
    rows: list[dict[str, Any]] = []
    try:
        if not prepared.space.contains(config):
            raise SystemExit(f"--config {args.config}: not in the quick model's search space")
        print(f"measuring {config.label()} {args.repeats} times, P99 <= {args.sla_ms:g} ms",
              file=log, flush=True)  # fmt: skip
        for i in range(args.repeats):
            busy0, ours0, t0 = _busy_s(), _ours_cpu_s(), time.monotonic()
            with HostLock(study="repeatability", on_wait=_say_wait):
                if args.steps:
                    result = _measure_with_steps(prepared, config, load, args.sla_ms, log)
                else:
                    result = prepared.evaluator.evaluate(config)
            wall = time.monotonic() - t0
            others = max(0.0, (_busy_s() - busy0) - (_ours_cpu_s() - ours0)) / wall
            row = {
                "repeat": i + 1,
                "verdict": result.verdict,
                "goodput_rps": result.throughput_rps,
                "p99_ms": result.p99_ms,
                "offered_rps": result.offered_rps,
                "requests": result.requests,
                "deploy_s": round(result.deploy_s, 1),
                "measure_s": round(result.measure_s, 1),
                "others_cpu_cores": round(others, 2),
                "loadavg_1m": os.getloadavg()[0],
                "failure": result.failure,
            }
            rows.append(row)
            print(
                f"  {i + 1}: {result.throughput_rps:7.1f} req/s  P99 {result.p99_ms:6.1f} ms  "
                f"({result.verdict}; offered {result.offered_rps:.1f}, {result.requests} requests,"
                f" deploy {result.deploy_s:.0f} s + measure {result.measure_s:.0f} s; other "
                f"processes {others:.2f} cores, load {row['loadavg_1m']:.2f})",
                file=log,
                flush=True,
            )
    finally:
        prepared.evaluator.close()
    goodputs = [float(r["goodput_rps"]) for r in rows]
    p99s = [float(r["p99_ms"]) for r in rows]
    summary = {
        "config": config.label(),
        "sla_ms": args.sla_ms,
        "repeats": args.repeats,
        "settings": {
            "step_max_s": load.step_max_s,
            "rel_precision": load.rel_precision,
            "confirm_failures": load.confirm_failures,
        },
        "goodput_median_rps": statistics.median(goodputs),
        "goodput_spread": _spread(goodputs),
        "goodput_cv": _cv(goodputs),
        "p99_median_ms": statistics.median(p99s),
        "p99_spread": _spread(p99s),
        "p99_cv": _cv(p99s),
        "others_cpu_cores_mean": statistics.fmean(float(r["others_cpu_cores"]) for r in rows),
        "loadavg_before": loadavg_before,
        "loadavg_after": os.getloadavg(),
        "cpu_cores": psutil.cpu_count(),
        "elapsed_s": round(time.monotonic() - started, 1),
        "rows": rows,
    }
    print(
        f"goodput: median {summary['goodput_median_rps']:.1f} req/s, max/min "
        f"{summary['goodput_spread']:.3f}, CV {summary['goodput_cv']:.3f}\n"
        f"P99:     median {summary['p99_median_ms']:.1f} ms, max/min "
        f"{summary['p99_spread']:.3f}, CV {summary['p99_cv']:.3f}\n"
        f"host:    {summary['cpu_cores']} cores; load average {loadavg_before[0]:.2f} before, "
        f"{summary['loadavg_after'][0]:.2f} after; other processes used "
        f"{summary['others_cpu_cores_mean']:.2f} cores on average; {summary['elapsed_s']:.0f} s",
        file=log,
        flush=True,
    )
    if args.json:
        print(json.dumps(summary, default=str, allow_nan=True))
    return 1 if summary["goodput_spread"] > args.max_spread else 0


if __name__ == "__main__":
    sys.exit(main())
