"""Build ``gpu_animated_drawings.csv``: the Animated Drawings detector's landscape, modelled.

The source article tuned a Detectron2 Mask R-CNN served by TorchServe by hand and reports a few
figures (``shared/SEED.md``); this script turns them into one row per configuration of an 864-point
grid with a queueing model of TorchServe's dynamic batching, simulated request by request. The
model and its calibration are documented in ``README.md`` beside this file; every constant lives in
:class:`Model`.

    python benchmarks/landscapes/make_gpu_landscape.py [--out FILE.csv] [--check]

``--check`` prints the calibration figures (the article's against the model's) and writes nothing.
The output is deterministic: the arrival and service-noise streams are seeded and shared by every
configuration (common random numbers), so two configurations differ only by their settings.
"""

from __future__ import annotations

import argparse
import csv
import itertools
import math
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
COLUMNS = (
    "device",
    "fp16",
    "torchscript",
    "workers",
    "batch_size",
    "max_batch_delay_ms",
    "threads_per_worker",
    "throughput_rps",
    "p99_ms",
)

# The grid: 288 cuda rows (fp16 x torchscript x workers x batch x delay) and 576 cpu rows
# (torchscript x workers x batch x delay x threads).
WORKERS = (1, 2, 4, 8)
BATCH_SIZES = (1, 2, 4, 8, 16, 32)
DELAYS_MS = (5, 25, 100)
THREADS = (1, 2, 4, 8)


@dataclass(frozen=True, kw_only=True)
class Config:
    device: str
    fp16: bool
    torchscript: bool
    workers: int
    batch_size: int
    max_batch_delay_ms: int
    threads_per_worker: int


@dataclass(frozen=True, kw_only=True)
class Model:
    """Every constant of the model, in milliseconds unless the name says otherwise."""

    sla_ms: float = 100.0
    # GPU host: per batch of n requests, CPU pre-processing in the worker (decode, resize),
    # GPU time a + b*n (exclusive: processes on one GPU time-slice), CPU post-processing (masks).
    pre_ms_per_request: float = 0.5
    post_ms_per_request: float = 0.5
    gpu_fixed_ms: float = 13.6
    gpu_ms_per_request: float = 6.0
    fp16_gpu_factor: float = 0.668  # model.half(): fewer bytes moved, tensor cores
    torchscript_gpu_factor: float = 0.96
    # Each extra worker process on the GPU: context switches and memory traffic.
    gpu_contention_per_worker: float = 0.35
    # CPU host: one image takes cpu_image_ms on one thread; threads help as Amdahl says; workers
    # beyond the cores oversubscribe them; every extra worker adds memory-bandwidth contention.
    cpu_cores: int = 8
    cpu_image_ms: float = 1550.0
    cpu_parallel_fraction: float = 0.93
    cpu_contention_per_worker: float = 0.15
    torchscript_cpu_factor: float = 0.92
    # Service-time noise: lognormal per batch.
    noise_sigma: float = 0.06
    # The load: Poisson arrivals, a ramp of rates; the queue holds job_queue_size requests.
    requests: int = 4000
    warmup_requests: int = 400
    ramp_start_x_capacity: float = 0.05
    ramp_factor: float = 1.2
    bisect_steps: int = 7
    job_queue_size: int = 100
    seed: int = 20230317

    # -- service times -------------------------------------------------------------------------

    def gpu_ms(self, c: Config, n: int) -> float:
        t = self.gpu_fixed_ms + self.gpu_ms_per_request * n
        if c.fp16:
            t *= self.fp16_gpu_factor
        if c.torchscript:
            t *= self.torchscript_gpu_factor
        return t * (1.0 + self.gpu_contention_per_worker * (c.workers - 1))

    def cpu_image_time_ms(self, c: Config) -> float:
        t, w = c.threads_per_worker, c.workers
        f = self.cpu_parallel_fraction
        amdahl = (1.0 - f) + f / t
        oversubscribed = max(1.0, w * t / self.cpu_cores)
        contention = 1.0 + self.cpu_contention_per_worker * (w - 1)
        ts = self.torchscript_cpu_factor if c.torchscript else 1.0
        return self.cpu_image_ms * amdahl * oversubscribed * contention * ts

    def cpu_batch_ms(self, c: Config, n: int) -> float:
        return n * self.cpu_image_time_ms(c)

    def idle_p99_ms(self, c: Config) -> float:
        """P99 of single requests, one at a time, on an idle server: a lone request waits the
        whole batch delay when the batch holds more than one (the load generator's idle
        latency)."""
        q99 = math.exp(2.326 * self.noise_sigma)
        wait = c.max_batch_delay_ms if c.batch_size > 1 else 0.0
        if c.device == "cpu":
            return wait + self.cpu_batch_ms(c, 1) * q99
        cpu = self.pre_ms_per_request + self.post_ms_per_request
        return wait + cpu + self.gpu_ms(c, 1) * q99

    def capacity_rps(self, c: Config) -> float:
        """Requests per second with full batches and busy workers (no queueing limit)."""
        b = c.batch_size
        if c.device == "cpu":
            return c.workers * b / self.cpu_batch_ms(c, b) * 1000.0
        cpu = (self.pre_ms_per_request + self.post_ms_per_request) * b
        gpu = self.gpu_ms(c, b)
        per_worker = b / (cpu + gpu)
        return min(c.workers * per_worker, b / gpu) * 1000.0


@dataclass(frozen=True)
class Measurement:
    p99_ms: float
    overflow: bool  # the job queue overflowed: TorchServe answers 503


class Simulator:
    """TorchServe's batching, request by request, with the streams shared by all configs."""

    def __init__(self, model: Model) -> None:
        self.model = model
        rng = np.random.default_rng(model.seed)
        self.gaps = rng.exponential(1.0, size=model.requests)  # unit-rate Poisson gaps
        self.noise = rng.lognormal(0.0, model.noise_sigma, size=model.requests)

    def measure(self, c: Config, rate_rps: float) -> Measurement:
        m = self.model
        arrivals = np.cumsum(self.gaps) * (1000.0 / rate_rps)  # ms
        n_req = len(arrivals)
        done = np.empty(n_req)
        free_at = [0.0] * c.workers  # when each worker is ready for its next batch
        lock_free_at = 0.0  # batch aggregation holds a model-wide lock (Model.pollBatch)
        gpu_free_at = 0.0
        head = 0
        batch = 0
        overflow = False
        cap = c.batch_size
        delay = float(c.max_batch_delay_ms)
        while head < n_req:
            k = min(range(c.workers), key=free_at.__getitem__)
            start = max(free_at[k], lock_free_at)
            first = max(start, float(arrivals[head]))
            # Requests waiting in the queue when this worker starts polling.
            waiting = int(np.searchsorted(arrivals, start, side="right")) - head
            if waiting > m.job_queue_size:
                overflow = True
            # Poll up to cap-1 more within the delay; queued requests are taken at once.
            last = head + cap - 1
            if cap == 1:
                n, close = 1, first
            elif last < n_req and arrivals[last] <= first + delay:
                n, close = cap, max(first, float(arrivals[last]))
            else:
                deadline = first + delay
                n = int(np.searchsorted(arrivals, deadline, side="right")) - head
                n = max(1, min(n, cap, n_req - head))
                close = deadline
            lock_free_at = close
            noise = float(self.noise[batch % len(self.noise)])
            if c.device == "cpu":
                finish = close + m.cpu_batch_ms(c, n) * noise
            else:
                gpu_start = max(close + m.pre_ms_per_request * n, gpu_free_at)
                gpu_end = gpu_start + m.gpu_ms(c, n) * noise
                gpu_free_at = gpu_end
                finish = gpu_end + m.post_ms_per_request * n
            done[head : head + n] = finish
            free_at[k] = finish
            head += n
            batch += 1
        latency = (done - arrivals)[m.warmup_requests :]
        return Measurement(float(np.percentile(latency, 99)), overflow)

    def ok(self, c: Config, rate_rps: float) -> bool:
        result = self.measure(c, rate_rps)
        return not result.overflow and result.p99_ms <= self.model.sla_ms

    def goodput(self, c: Config) -> tuple[float, float]:
        """``(goodput_rps, p99_ms)``: the highest rate of a ramp from light load whose P99
        meets the SLA, refined by bisection, and the P99 there; ``(0, P99 at light load)``
        when even light load (idle single requests, then the ramp's first step) breaks the
        SLA."""
        m = self.model
        idle = m.idle_p99_ms(c)
        if idle > m.sla_ms:
            return 0.0, idle
        light = m.ramp_start_x_capacity * m.capacity_rps(c)
        at_light = self.measure(c, light)
        if at_light.overflow or at_light.p99_ms > m.sla_ms:
            return 0.0, at_light.p99_ms
        good, bad = light, light * m.ramp_factor
        while self.ok(c, bad):
            good, bad = bad, bad * m.ramp_factor
        for _ in range(m.bisect_steps):
            mid = math.sqrt(good * bad)
            if self.ok(c, mid):
                good = mid
            else:
                bad = mid
        return good, self.measure(c, good).p99_ms


def grid() -> Iterator[Config]:
    for fp16, ts, w, b, d in itertools.product(
        (False, True), (False, True), WORKERS, BATCH_SIZES, DELAYS_MS
    ):
        yield Config(
            device="cuda",
            fp16=fp16,
            torchscript=ts,
            workers=w,
            batch_size=b,
            max_batch_delay_ms=d,
            threads_per_worker=0,
        )
    for ts, w, b, d, t in itertools.product(
        (False, True), WORKERS, BATCH_SIZES, DELAYS_MS, THREADS
    ):
        yield Config(
            device="cpu",
            fp16=False,
            torchscript=ts,
            workers=w,
            batch_size=b,
            max_batch_delay_ms=d,
            threads_per_worker=t,
        )


def row(c: Config, throughput_rps: float, p99_ms: float) -> dict[str, object]:
    return {
        "device": c.device,
        "fp16": str(c.fp16).lower(),
        "torchscript": str(c.torchscript).lower(),
        "workers": c.workers,
        "batch_size": c.batch_size,
        "max_batch_delay_ms": c.max_batch_delay_ms,
        "threads_per_worker": c.threads_per_worker,
        "throughput_rps": round(throughput_rps, 2),
        "p99_ms": round(p99_ms, 1),
    }


def check(sim: Simulator) -> None:
    """Print the article's figures next to the model's (see README.md, "Calibration")."""
    m = sim.model

    def cuda(fp16: bool, b: int, ts: bool = False) -> Config:
        return Config(
            device="cuda",
            fp16=fp16,
            torchscript=ts,
            workers=1,
            batch_size=b,
            max_batch_delay_ms=5,
            threads_per_worker=0,
        )

    cpu = [c for c in grid() if c.device == "cpu"]
    cpu_p99 = min(m.idle_p99_ms(c) for c in cpu)
    cpu_rps = max(m.capacity_rps(c) for c in cpu)
    fp32_b1, fp16_b1 = cuda(False, 1), cuda(True, 1)
    idle32, idle16 = m.idle_p99_ms(fp32_b1), m.idle_p99_ms(fp16_b1)
    cap32, cap16 = m.capacity_rps(fp32_b1), m.capacity_rps(fp16_b1)
    lines = [
        ("best CPU P99 (idle)", "305 ms, SLA missed", f"{cpu_p99:.0f} ms"),
        ("best CPU throughput (saturated)", "1x", f"1x = {cpu_rps:.2f} rps"),
        ("GPU fp32 w1 b1 P99 (idle)", "23.6 ms", f"{idle32:.1f} ms"),
        ("GPU fp32 w1 b1 throughput (saturated)", "~12x", f"{cap32 / cpu_rps:.1f}x"),
        ("GPU fp16 w1 b1 P99 vs fp32 (idle)", "-32%", f"{idle16 / idle32 - 1:+.0%}"),
        ("GPU fp16 w1 b1 throughput vs fp32 (saturated)", "~+32%", f"{cap16 / cap32 - 1:+.0%}"),
    ]
    for ts in (False, True):
        goodput, p99 = sim.goodput(cuda(True, 8, ts))
        mode = "torchscript" if ts else "eager"
        lines.append(
            (
                f"GPU fp16 w1 b8 d5 {mode}: P99, goodput",
                "94.4 ms, ~25x",
                f"{p99:.1f} ms, {goodput / cpu_rps:.1f}x ({goodput:.1f} rps)",
            )
        )
    width = max(len(a) for a, _, _ in lines)
    print(f"{'figure':<{width}}  {'article':<20}  model")
    for what, article, model in lines:
        print(f"{what:<{width}}  {article:<20}  {model}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=HERE / "gpu_animated_drawings.csv")
    parser.add_argument("--check", action="store_true", help="print the calibration only")
    args = parser.parse_args(argv)
    sim = Simulator(Model())
    if args.check:
        check(sim)
        return 0
    rows = []
    configs = list(grid())
    for i, c in enumerate(configs, 1):
        throughput, p99 = sim.goodput(c)
        rows.append(row(c, throughput, p99))
        if i % 48 == 0:
            print(f"{i}/{len(configs)} configurations", file=sys.stderr)
    with args.out.open("w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=COLUMNS, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
    best = max(r["throughput_rps"] for r in rows)  # type: ignore[type-var]
    near = [r for r in rows if float(r["throughput_rps"]) >= 0.99 * float(best)]  # type: ignore[arg-type]
    print(f"wrote {len(rows)} rows to {args.out}; best {best} rps; {len(near)} within 1%")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
