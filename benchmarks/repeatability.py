"""How much the goodput of one configuration moves when it is measured again.

Deploys one configuration of the quick model on a real TorchServe through the public API
(``autotune.prepare`` builds the evaluator ``autotune run`` uses) and measures its goodput
``--repeats`` times (default 5), each on a freshly registered model, as the confirmation of the
winner does. Prints each measurement (goodput, P99, the search's steps), then the median, the
spread (max/min) and the coefficient of variation of goodput and P99, and the host's load: the
load average before and after, and the CPU that *other* processes used during each measurement
(in cores: the host's busy time minus ours and our servers'), since on a shared host that, not
the tool, is often where the spread comes from. It also counts the garbage collector's pauses:
the load generator's own (this process: none were full collections during a measurement), and
the full collections of the model's workers that took over 20 ms, which autotune's handlers log
(before ``freeze_heap`` the workers of the quick model stalled 117-179 ms in them, both at once).
And it times a fixed pure-Python loop before each repeat (``host_speed``): on a shared host the
CPU itself runs faster or slower from one minute to the next (1.7-3x measured here), and a
goodput spread that follows it is the host's, not the search's.

    python benchmarks/repeatability.py [--config "cpu/fp32/ts w2 b4 d1ms t1"] [--repeats 5]
        [--sla-ms 100] [--step-s S] [--step-min-s S] [--fail-min-s S]
        [--no-confirm-failures] [--rel-precision 0.1]
        [--verify-s 0] [--step-warmup-s 0] [--autogroup-nice -20] [--steps] [--json]

``--json`` prints one object whose rows carry every probe and step of each search (offered
rate, P99, requests, verdict, and why a step did not pass: its errors, or how many requests
were over the SLA and how they clustered); ``--steps`` prints them as they come.

The default configuration is the best of the quick landscape on this 2-core host
(``benchmarks/landscapes/quick_cpu.csv``: TorchScript, 2 workers, batch 4, 1 ms, 1 thread).
With defaults it takes 3-5 minutes. Exit status 1 when the spread exceeds ``--max-spread``.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import gc
import itertools
import json
import math
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import psutil

import autotune
from autotune.loadgen import GoodputResult, GoodputSettings, LoadResult, step_passes
from autotune.serving import Holder, HostLock
from autotune.space import TrialConfig

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


def _over_runs(step: LoadResult) -> tuple[int, float, float]:
    """Longest run of consecutive requests over the SLA (in send order), and when the first and
    the last over request were sent (s into the window, from their position and the rate)."""
    if step.sla_ms is None or not step.latencies_ms.size:
        return 0, math.nan, math.nan
    over = ~(step.latencies_ms <= step.sla_ms)
    where = np.flatnonzero(over)
    if not where.size:
        return 0, math.nan, math.nan
    longest = run = 1
    for a, b in itertools.pairwise(where.tolist()):
        run = run + 1 if b == a + 1 else 1
        longest = max(longest, run)
    rate = max(step.offered_rps, 1e-9)
    return longest, float(where[0] / rate), float(where[-1] / rate)


def _why(step: LoadResult, passed: bool) -> str | None:
    """Why a step did not pass: errors, or the requests over the SLA and how they clustered."""
    if passed:
        return None
    if step.errors:
        kinds = ", ".join(f"{k} x{v}" for k, v in step.errors_by_kind.items())
        return f"errors: {kinds}"
    longest, first_s, last_s = _over_runs(step)
    what = "failed" if step.verdict == "fail" else "undecided at its time cap"
    return (
        f"{what}: {step.over_sla} of {step.sent} over the SLA, longest run {longest} "
        f"consecutive, from {first_s:.2f} s to {last_s:.2f} s of {step.duration_s:.2f} s"
    )


def _step_row(step: LoadResult, settings: GoodputSettings) -> dict[str, Any]:
    passed = step.mode == "open" and step_passes(
        step,
        max_errors=math.floor(settings.max_error_ratio * step.offered_rps * step.duration_s),
        min_samples=settings.undecided_min_samples,
    )
    return {
        "mode": str(step.mode),
        "offered_rps": round(step.offered_rps, 1),
        "throughput_rps": round(step.throughput_rps, 1),
        "p50_ms": round(step.p50_ms, 1),
        "p99_ms": round(step.p99_ms, 1),
        "sent": step.sent,
        "warmup_requests": step.warmup_requests,
        "over_sla": step.over_sla,
        "errors_by_kind": dict(step.errors_by_kind),
        "verdict": step.verdict,
        "passed": passed,
        "duration_s": round(step.duration_s, 2),
        "stopped_early": step.stopped_early,
        "why": _why(step, passed) if step.mode == "open" else None,
    }


def _steps(found: GoodputResult | None, settings: GoodputSettings) -> list[dict[str, Any]]:
    if found is None:
        return []
    probes = [found.idle_probe, found.burst_probe, found.capacity_probe]
    return [_step_row(s, settings) for s in [*probes, *found.steps] if s is not None]


def _print_steps(steps: list[dict[str, Any]], log: Any) -> None:
    for st in steps:
        print(
            f"     {st['mode']:6} {st['offered_rps']:7.1f} -> {st['throughput_rps']:7.1f} req/s "
            f"P99 {st['p99_ms']:7.1f} ms over {st['over_sla']} of {st['sent']} "
            f"{st['verdict']} {st['duration_s']:.1f} s" + (f"  ({st['why']})" if st["why"] else ""),
            file=log,
            flush=True,
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


def _set_autogroup_nice(pid: int, nice: int) -> str:
    """Linux with ``sched_autogroup``: the CPU is shared between sessions first, and a nice value
    ranks a process only inside its own session, so other sessions' "niced" work still takes an
    equal share. Setting the nice of a session (``/proc/<pid>/autogroup``; negative values need
    privilege) is what makes a measurement outrank it. Returns the new setting, or why not."""
    path = Path(f"/proc/{pid}/autogroup")
    try:
        path.write_text(str(nice))
        return path.read_text().strip()
    except OSError as exc:
        return f"not set ({exc.strerror})"


class GcPauses:
    """The garbage collector's pauses in this process (the load generator's), per generation."""

    def __init__(self) -> None:
        self.pauses_ms: list[tuple[int, float]] = []
        self._started = 0.0

    def __call__(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._started = time.perf_counter()
        else:
            elapsed_ms = 1000 * (time.perf_counter() - self._started)
            self.pauses_ms.append((info["generation"], elapsed_ms))

    def take(self) -> dict[str, float]:
        """Counts and the longest pause since the last call; starts over."""
        full = [ms for gen, ms in self.pauses_ms if gen == 2]
        out = {
            "collections": len(self.pauses_ms),
            "full_collections": len(full),
            "longest_ms": round(max((ms for _, ms in self.pauses_ms), default=0.0), 1),
            "full_total_ms": round(sum(full), 1),
        }
        self.pauses_ms = []
        return out


def worker_collections(workdir: Path) -> dict[str, float]:
    """The full collections of the model's workers that took over 20 ms (the handlers log them
    to TorchServe's model log: ``autotune_handler_utils.freeze_heap``)."""
    pauses = []
    for log in workdir.rglob("model_log.log*"):
        for line in log.read_text(errors="replace").splitlines():
            _, found, rest = line.partition("full garbage collection: ")
            if found:
                with contextlib.suppress(ValueError):
                    pauses.append(float(rest.split()[0]))
    return {"count": len(pauses), "longest_ms": max(pauses, default=0.0)}


def _cv(values: list[float]) -> float:
    finite = [v for v in values if math.isfinite(v)]
    if len(finite) < 2 or statistics.fmean(finite) == 0:
        return math.nan
    return statistics.stdev(finite) / statistics.fmean(finite)


def host_speed(samples: int = 15, loop: int = 200_000) -> dict[str, float]:
    """How fast this host runs a fixed pure-Python loop now: the median of ``samples`` timings
    (in million iterations a second) and their max/min. Taken before each repeat: when it moves
    between repeats as much as the goodput does, the host's CPU moved (a shared or throttled
    core), not the tool's figure."""
    rates = []
    for _ in range(samples):
        t0 = time.perf_counter()
        x = 0
        for i in range(loop):
            x += i
        rates.append(loop / (time.perf_counter() - t0) / 1e6)
    return {"median_mips": round(statistics.median(rates), 2), "spread": round(_spread(rates), 3)}


def _spread(values: list[float]) -> float:
    low, high = min(values), max(values)
    return high / low if low > 0 else math.inf


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", default=DEFAULT_CONFIG)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--sla-ms", type=float, default=100.0)
    parser.add_argument("--step-s", type=float, default=None)
    parser.add_argument("--step-min-s", type=float, default=None, help="no pass before it")
    parser.add_argument(
        "--fail-min-s", type=float, default=None, help="no failure on the SLA count before it"
    )
    parser.add_argument("--rel-precision", type=float, default=None)
    parser.add_argument("--no-confirm-failures", action="store_true")
    parser.add_argument("--verify-s", type=float, default=None, help="0: no verification")
    parser.add_argument("--step-warmup-s", type=float, default=None)
    parser.add_argument(
        "--server-warmup-s",
        type=float,
        default=None,
        help="load before the first repeat (default: autotune run's, 30 s)",
    )
    parser.add_argument(
        "--autogroup-nice",
        type=int,
        default=None,
        help="Set this session's and the server's autogroup nice (Linux, e.g. -10): on a host "
        "shared with other sessions, where their nice values do not rank them below us.",
    )
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
    if args.step_min_s is not None:
        load = dataclasses.replace(load, step_min_s=args.step_min_s)
    if args.fail_min_s is not None:
        load = dataclasses.replace(load, fail_min_s=args.fail_min_s)
    if args.rel_precision is not None:
        load = dataclasses.replace(load, rel_precision=args.rel_precision)
    if args.no_confirm_failures:
        load = dataclasses.replace(load, confirm_failures=False)
    if args.verify_s is not None:
        load = dataclasses.replace(load, verify_s=args.verify_s)
    if args.step_warmup_s is not None:
        load = dataclasses.replace(load, step_warmup_s=args.step_warmup_s)
    pauses = GcPauses()
    gc.callbacks.append(pauses)
    autogroup: dict[str, str] = {}
    if args.autogroup_nice is not None:
        autogroup["measurer"] = _set_autogroup_nice(os.getpid(), args.autogroup_nice)

    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="autotune-repeatability-"))
    log = sys.stderr if args.json else sys.stdout
    loadavg_before = os.getloadavg()
    started_utc = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())
    started = time.monotonic()
    settings = autotune.RunSettings(
        sla_ms=args.sla_ms,
        model="quick",
        storage=f"sqlite:///{workdir / 'unused.db'}",
        workdir=workdir,
        load=load,
        **({"server_warmup_s": args.server_warmup_s} if args.server_warmup_s is not None else {}),
    )
    # Starting a JVM takes seconds of CPU: not while another run measures.
    with HostLock(study="repeatability", on_wait=_say_wait):
        prepared = autotune.prepare(settings)  # starts TorchServe, checks the model answers
        if args.autogroup_nice is not None:
            server = prepared.evaluator.server_for(config)  # its session (a server of its own)
            if server.pid is not None:
                autogroup["server"] = _set_autogroup_nice(server.pid, args.autogroup_nice)
    rows: list[dict[str, Any]] = []
    try:
        if not prepared.space.contains(config):
            raise SystemExit(f"--config {args.config}: not in the quick model's search space")
        print(f"measuring {config.label()} {args.repeats} times, P99 <= {args.sla_ms:g} ms",
              file=log, flush=True)  # fmt: skip
        for i in range(args.repeats):
            with HostLock(study="repeatability", on_wait=_say_wait):
                # Counted once the host is ours, not while another run measured.
                speed = host_speed()
                busy0, ours0, t0 = _busy_s(), _ours_cpu_s(), time.monotonic()
                pauses.take()
                result = prepared.evaluator.evaluate(config)
                wall = time.monotonic() - t0
                others = max(0.0, (_busy_s() - busy0) - (_ours_cpu_s() - ours0)) / wall
            found = prepared.evaluator.last_goodput
            steps = _steps(found, load)
            probe = found.capacity_probe if found is not None else None
            capacity = probe.throughput_rps if probe is not None else math.nan
            if args.steps:
                _print_steps(steps, log)
            collections = pauses.take()
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
                "capacity_probe_rps": capacity,
                "host_speed": speed,
                "gc": collections,
                "steps": steps,
            }
            rows.append(row)
            print(
                f"  {i + 1}: {result.throughput_rps:7.1f} req/s  P99 {result.p99_ms:6.1f} ms  "
                f"({result.verdict}; offered {result.offered_rps:.1f}, {result.requests} requests,"
                f" deploy {result.deploy_s:.0f} s + measure {result.measure_s:.0f} s; other "
                f"processes {others:.2f} cores, load {row['loadavg_1m']:.2f}; host speed "
                f"{speed['median_mips']:.1f} M loops/s (max/min {speed['spread']:.2f}); "
                f"{collections['full_collections']:.0f} full collections of the generator's "
                f"heap, longest pause {collections['longest_ms']:.0f} ms)",
                file=log,
                flush=True,
            )
    finally:
        prepared.evaluator.close()
    workers_gc = worker_collections(workdir)
    goodputs = [float(r["goodput_rps"]) for r in rows]
    p99s = [float(r["p99_ms"]) for r in rows]
    capacities = [float(r["capacity_probe_rps"]) for r in rows]
    speeds = [float(r["host_speed"]["median_mips"]) for r in rows]
    summary = {
        "config": config.label(),
        "sla_ms": args.sla_ms,
        "repeats": args.repeats,
        "settings": dataclasses.asdict(load),
        "server_warmup_s": prepared.evaluator.server_warmup_s,
        "goodput_median_rps": statistics.median(goodputs),
        "goodput_spread": _spread(goodputs),
        "goodput_cv": _cv(goodputs),
        "p99_median_ms": statistics.median(p99s),
        "p99_spread": _spread(p99s),
        "p99_cv": _cv(p99s),
        # The closed-loop capacity probe of each search: when it moves as much as the goodput,
        # the server's capacity moved (the host), not the search's answer.
        "capacity_spread": _spread(capacities) if all(c > 0 for c in capacities) else math.nan,
        "host_speed_spread": _spread(speeds),
        "host_speed_within_max": max(float(r["host_speed"]["spread"]) for r in rows),
        "others_cpu_cores_mean": statistics.fmean(float(r["others_cpu_cores"]) for r in rows),
        "autogroup": autogroup,
        "worker_full_collections_over_20ms": workers_gc,
        "started_utc": started_utc,
        "loadavg_before": loadavg_before,
        "loadavg_after": os.getloadavg(),
        "cpu_cores": psutil.cpu_count(),
        "elapsed_s": round(time.monotonic() - started, 1),
        "rows": rows,
    }
    speed_between, speed_within = summary["host_speed_spread"], summary["host_speed_within_max"]
    print(
        f"goodput: median {summary['goodput_median_rps']:.1f} req/s, max/min "
        f"{summary['goodput_spread']:.3f}, CV {summary['goodput_cv']:.3f}\n"
        f"P99:     median {summary['p99_median_ms']:.1f} ms, max/min "
        f"{summary['p99_spread']:.3f}, CV {summary['p99_cv']:.3f}\n"
        f"capacity probe (closed loop): max/min {summary['capacity_spread']:.3f}\n"
        f"host speed (a fixed CPU loop before each repeat): max/min {speed_between:.3f} "
        f"between repeats, up to {speed_within:.3f} within one probe\n"
        f"host:    {summary['cpu_cores']} cores; load average {loadavg_before[0]:.2f} before, "
        f"{summary['loadavg_after'][0]:.2f} after; other processes used "
        f"{summary['others_cpu_cores_mean']:.2f} cores on average; {summary['elapsed_s']:.0f} s\n"
        f"workers: {workers_gc['count']:.0f} full garbage collections over 20 ms (longest "
        f"{workers_gc['longest_ms']:.0f} ms)",
        file=log,
        flush=True,
    )
    if args.json:
        print(json.dumps(summary, default=str, allow_nan=True))
    return 1 if summary["goodput_spread"] > args.max_spread else 0


if __name__ == "__main__":
    sys.exit(main())
