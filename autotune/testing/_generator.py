"""Landscapes that cannot be memorised: a generator of TorchServe-like batching servers.

Each landscape is one host and one model, drawn at random from a *family* by a seed, and every
configuration of its search space with the goodput a model of TorchServe's dynamic batching
gives it. The same (family, seed) always gives the same landscape (numpy's ``default_rng``).

The model, per configuration (device, fp16, graph mode, workers W, batch size B, delay D,
threads per worker T):

* **Service time of a batch of n** on cuda: the worker's CPU part (pre/post-processing,
  ``cpu_ms`` a request) plus the GPU part ``(gpu_fixed_ms + gpu_item_ms * n**gpu_exp)`` x the
  fp16 factor x the graph factor (TorchScript, compile). The workers share one GPU by
  time-slicing: GPU parts run one at a time, each slowed by ``contention`` per extra worker.
  On cpu: ``cpu_fixed_ms + item_ms(T) * n**cpu_exp``, where one item on T threads follows
  Amdahl's law (parallel share ``amdahl``), slowed by ``(W*T/cores)**oversub`` when the threads
  oversubscribe the cores and by ``membw`` per extra worker (memory bandwidth).
* **Batching**, as ``Model.pollBatch`` does it: a batch that does not fill waits the whole delay;
  at rate r a batch collects ``1 + r*D`` requests during the delay, and under load the queue
  fills it up to B. Capacity is ``n / service(n)`` per worker on cpu; on cuda the GPU's share
  bounds it as well.
* **P99 at rate r**: the aggregation wait, the service time at the noise's 99th percentile and a
  queueing term ``service * rho/(1-rho)`` (rho: utilisation at the batch that forms).
* **Goodput**, as the load generator finds it: 0 with the idle P99 when single requests on an
  idle server miss the SLA; else the highest rate of a rising ramp before the first rate whose
  P99 misses the SLA or that saturates the server.
* **Failures** (empty ``p99_ms``): memory cliffs where batch x workers exceed the device's
  memory, and, per landscape, a graph mode that does not work for the model.
* **Plateaus and jitter**: sometimes a client-side cap on the rate (many configurations tie at
  the top), and a small fixed per-configuration factor, as neighbours vary in measurements.
  Measurement noise is not in the table: the benchmark adds it per trial (``--noise CV``).

Families: ``cpu_classifier`` (a CPU-only host and an image classifier), ``gpu_detector`` (a GPU
host, a detector far too slow on its CPU), ``mixed_host`` (a slow CPU that meets the SLA and a
fast GPU: both sub-spaces hold feasible configurations).

Seeds: :data:`TUNING_SEEDS` (0-999) are the ones a search's settings may be chosen on;
:data:`HELD_OUT_SEEDS` (1000-1999) are the held-out test set, never used to choose settings.

Ranges: the profile is drawn within :data:`DEFAULT_RANGES`. The ``wide`` set draws the held-out
seeds within :data:`WIDE_RANGES` instead, from a random stream of its own: other core counts and
SLAs, batch sizes and worker counts that are not powers of two, larger batches, other delay
lists, stronger contention and oversubscription, slower and faster graph modes and fp16, larger
jitter and more plateaus. No setting of the search was tuned on its figures (one change was
found by reading one of its traces): it checks that the search holds on landscapes of the same
kind drawn outside the ranges it was tuned within.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

import numpy as np

from autotune.space import TrialConfig
from autotune.testing._landscape import Landscape, Row, space_from_configs

__all__ = [
    "DEFAULT_RANGES",
    "FAMILIES",
    "HELD_OUT_SEEDS",
    "SETS",
    "TUNING_SEEDS",
    "WIDE_RANGES",
    "Profile",
    "Ranges",
    "generate",
    "landscape_set",
]

FAMILIES: Final = ("cpu_classifier", "gpu_detector", "mixed_host")
TUNING_SEEDS: Final = range(0, 1000)
HELD_OUT_SEEDS: Final = range(1000, 2000)

SETS: Final = ("tuning", "held-out", "wide")
_RATE_STEPS: Final = 90  # points of the rising ramp, geometric
_JITTER_P99: Final = 1.15  # the service time's 99th percentile over its median


@dataclass(frozen=True, kw_only=True)
class Profile:
    """The drawn parameters of one landscape (plain data, for the record and the tests)."""

    family: str
    seed: int
    sla_ms: float
    cores: int
    # cpu
    item_ms: float
    amdahl: float
    cpu_exp: float
    cpu_fixed_ms: float
    oversub: float
    membw: float
    cpu_mem_items: float  # batch x workers above this fails on cpu (inf: never)
    # cuda
    gpu_fixed_ms: float
    gpu_item_ms: float
    gpu_exp: float
    cpu_ms: float  # the CPU part of a request on cuda (pre/post-processing)
    fp16_factor: float
    contention: float
    gpu_mem_items: float  # workers x batch x (0.55 with fp16) above this fails on cuda
    # both
    torchscript_factor: float
    compile_factor: float
    broken_graph: str  # "" or the graph mode that fails ("torchscript", "compile")
    rate_cap_rps: float  # inf: no plateau
    jitter: float
    # the space
    devices: tuple[str, ...]
    compile_offered: bool
    workers: Mapping[str, tuple[int, ...]]
    batch_size: tuple[int, ...]
    max_batch_delay_ms: tuple[int, ...]
    threads_per_worker: tuple[int, ...]


@dataclass(frozen=True, kw_only=True)
class Ranges:
    """Where a profile's parameters are drawn from (choices, and (low, high) of uniform draws)."""

    cores: tuple[int, ...] = (4, 8, 16)
    sla_ms: tuple[float, ...] = (50.0, 100.0, 100.0, 200.0)
    counts: tuple[int, ...] = (1, 2, 4, 8, 16)  # workers and threads, up to the cores
    batch_ladder: tuple[int, ...] = (1, 2, 4, 8, 16, 32, 64)
    batch_max: tuple[int, ...] = (16, 32, 64)
    delays: tuple[tuple[int, ...], ...] = ((1, 5, 10, 25, 50, 100), (0, 2, 5, 10, 20),
                                           (1, 5, 25, 100), (5, 50))  # fmt: skip
    gpu_workers: tuple[tuple[int, ...], ...] = ((1, 2, 4, 8), (1, 2, 3, 4), (1, 2, 4))
    amdahl: tuple[float, float] = (0.5, 0.97)
    oversub: tuple[float, float] = (1.0, 1.6)
    membw: tuple[float, float] = (0.0, 0.3)
    fp16_factor: tuple[float, float] = (0.4, 0.9)
    contention: tuple[float, float] = (0.0, 0.45)
    torchscript_factor: tuple[float, float] = (0.75, 1.05)
    compile_factor: tuple[float, float] = (0.55, 1.05)
    jitter: tuple[float, float] = (0.005, 0.04)
    plateau: float = 0.25  # the chance of a cap on the rate
    stream: tuple[int, ...] = ()  # appended to the random stream's key: another set of draws


DEFAULT_RANGES: Final = Ranges()
WIDE_RANGES: Final = Ranges(
    cores=(2, 4, 6, 12, 32),
    sla_ms=(30.0, 75.0, 150.0, 300.0, 500.0),
    counts=(1, 2, 3, 4, 6, 8, 12, 16, 32),
    batch_ladder=(1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64, 96, 128),
    batch_max=(8, 24, 48, 128),
    delays=((0, 1, 2, 4, 8, 16, 32), (3, 30, 300), (2, 10, 50, 200), (1, 10, 20, 40, 80)),
    gpu_workers=((1, 2, 3, 4, 5, 6), (1, 2, 4, 8, 16), (1, 2)),
    amdahl=(0.3, 0.99),
    oversub=(0.8, 2.2),
    membw=(0.0, 0.5),
    fp16_factor=(0.3, 1.1),
    contention=(0.0, 0.8),
    torchscript_factor=(0.6, 1.2),
    compile_factor=(0.4, 1.3),
    jitter=(0.0, 0.08),
    plateau=0.4,
    stream=(77,),
)


def _pick(rng: np.random.Generator, values: Sequence[Any]) -> Any:
    return values[int(rng.integers(len(values)))]


def _log_uniform(rng: np.random.Generator, low: float, high: float) -> float:
    return float(math.exp(rng.uniform(math.log(low), math.log(high))))


def _profile(family: str, seed: int, r: Ranges = DEFAULT_RANGES) -> Profile:
    if family not in FAMILIES:
        raise ValueError(f"`family` must be one of {FAMILIES}, but got {family!r}.")
    rng = np.random.default_rng([FAMILIES.index(family), seed, *r.stream])
    cores = int(_pick(rng, r.cores))
    sla_ms = float(_pick(rng, r.sla_ms))
    powers = [v for v in r.counts if v <= cores]
    cpu_workers = tuple(powers) if rng.random() < 0.6 else tuple(range(1, min(cores, 6) + 1))
    threads = tuple(powers)
    top = int(_pick(rng, r.batch_max))
    batch = tuple(b for b in r.batch_ladder if b <= top)
    delays = tuple(sorted(_pick(rng, r.delays)))
    gpu_workers = tuple(_pick(rng, r.gpu_workers))
    compile_offered = bool(rng.random() < 0.4)
    broken = ""
    if rng.random() < 0.2:
        broken = "compile" if compile_offered and rng.random() < 0.6 else "torchscript"
    if family == "cpu_classifier":
        devices: tuple[str, ...] = ("cpu",)
        item_ms = _log_uniform(rng, sla_ms / 40, sla_ms / 1.5)
    elif family == "gpu_detector":
        devices = ("cpu", "cuda")
        item_ms = _log_uniform(rng, sla_ms * 1.5, sla_ms * 20)  # cpu misses the SLA
    else:
        devices = ("cpu", "cuda")
        item_ms = _log_uniform(rng, sla_ms / 12, sla_ms / 1.5)
    gpu_item_ms = (
        _log_uniform(rng, 1.0, 12.0)
        if family == "gpu_detector"
        else _log_uniform(rng, 0.05, 1.5) * item_ms / 20
    )
    # Memory cliffs: per landscape, somewhere inside the space or beyond it.
    max_items = max(gpu_workers) * batch[-1]
    gpu_mem = _log_uniform(rng, 0.15, 2.0) * max_items
    cpu_mem = (
        _log_uniform(rng, 0.1, 1.5) * max(cpu_workers) * batch[-1]
        if rng.random() < 0.5
        else math.inf
    )
    return Profile(
        family=family,
        seed=seed,
        sla_ms=sla_ms,
        cores=cores,
        item_ms=item_ms,
        amdahl=float(rng.uniform(*r.amdahl)),
        cpu_exp=float(rng.uniform(0.7, 1.0)),
        cpu_fixed_ms=_log_uniform(rng, 0.2, 5.0),
        oversub=float(rng.uniform(*r.oversub)),
        membw=float(rng.uniform(*r.membw)),
        cpu_mem_items=cpu_mem,
        gpu_fixed_ms=_log_uniform(rng, 0.5, 4.0) * gpu_item_ms * 2,
        gpu_item_ms=gpu_item_ms,
        gpu_exp=float(rng.uniform(0.55, 1.0)),
        cpu_ms=_log_uniform(rng, 0.1, 4.0),
        fp16_factor=float(rng.uniform(*r.fp16_factor)),
        contention=float(rng.uniform(*r.contention)),
        gpu_mem_items=gpu_mem,
        torchscript_factor=float(rng.uniform(*r.torchscript_factor)),
        compile_factor=float(rng.uniform(*r.compile_factor)),
        broken_graph=broken,
        rate_cap_rps=math.inf,  # set once the best rate is known
        jitter=float(rng.uniform(*r.jitter)),
        devices=devices,
        compile_offered=compile_offered,
        workers={"cpu": cpu_workers, "cuda": gpu_workers},
        batch_size=batch,
        max_batch_delay_ms=delays,
        threads_per_worker=threads,
    )


def _configs(p: Profile) -> Iterator[TrialConfig]:
    graphs = [(False, False), (True, False)] + ([(False, True)] if p.compile_offered else [])
    for device in p.devices:
        precisions = (False,) if device == "cpu" else (False, True)
        threads = p.threads_per_worker if device == "cpu" else (0,)
        for fp16, (ts, comp), w, b, d, t in itertools.product(
            precisions, graphs, p.workers[device], p.batch_size, p.max_batch_delay_ms, threads
        ):
            yield TrialConfig(
                device="cpu" if device == "cpu" else "cuda",
                fp16=fp16,
                torchscript=ts,
                compile=comp,
                workers=w,
                batch_size=b,
                max_batch_delay_ms=d,
                threads_per_worker=t,
            )


def _service(p: Profile, c: TrialConfig, n: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(latency of a batch of n in its worker in ms, the server's capacity in requests/s)."""
    graph = p.torchscript_factor if c.torchscript else p.compile_factor if c.compile else 1.0
    if c.device == "cpu":
        t = c.threads_per_worker
        item = p.item_ms * ((1 - p.amdahl) + p.amdahl / t)
        item *= max(1.0, c.workers * t / p.cores) ** p.oversub
        item *= 1 + p.membw * (c.workers - 1)
        latency = p.cpu_fixed_ms + graph * item * n**p.cpu_exp
        capacity = 1000.0 * c.workers * n / latency
        return latency, capacity
    gpu = (p.gpu_fixed_ms + p.gpu_item_ms * n**p.gpu_exp) * graph
    gpu *= (p.fp16_factor if c.fp16 else 1.0) * (1 + p.contention * (c.workers - 1))
    cpu = p.cpu_ms * n
    capacity = 1000.0 * n / np.maximum(gpu, (gpu + cpu) / c.workers)
    # Another worker's GPU part may run first: half of them on average under load.
    latency = cpu + gpu * (1 + 0.5 * (c.workers - 1) * np.minimum(1.0, cpu / gpu + 0.5))
    return latency, capacity


def _goodput(p: Profile, c: TrialConfig) -> Row:
    b, d_s = c.batch_size, c.max_batch_delay_ms / 1000.0
    n = np.arange(1, b + 1, dtype=float)
    latency, capacity = _service(p, c, n)
    idle = (c.max_batch_delay_ms if b > 1 else 0.0) + latency[0] * _JITTER_P99
    if idle > p.sla_ms:
        return Row(throughput_rps=0.0, p99_ms=round(idle, 1))
    top = float(capacity.max())
    rates = top * np.geomspace(0.02, 1.0, _RATE_STEPS)
    best_rps, best_p99 = 0.0, idle
    for rate in rates:
        n_fill = 1 + rate * d_s
        enough = np.nonzero(capacity >= rate / 0.9)[0]
        n_need = float(enough[0] + 1) if enough.size else float(b)
        size = min(float(b), max(n_fill, n_need))
        k = math.ceil(size) - 1
        rho = rate / capacity[k]
        if b == 1:
            wait = 0.0
        elif n_fill >= b:
            wait = 1000.0 * (b - 1) / rate
        elif n_need > n_fill:
            wait = 500.0 * (size - 1) / rate
        else:
            wait = c.max_batch_delay_ms
        if rho >= 0.97:
            break
        p99 = wait + latency[k] * _JITTER_P99 + latency[k] * 1.2 * rho / (1 - rho)
        if p99 > p.sla_ms:
            break
        best_rps, best_p99 = float(rate), float(p99)
    return Row(throughput_rps=best_rps, p99_ms=round(best_p99, 1))


def _failed(p: Profile, c: TrialConfig) -> bool:
    if p.broken_graph == "torchscript" and c.torchscript:
        return True
    if p.broken_graph == "compile" and c.compile:
        return True
    if c.device == "cuda":
        return c.workers * c.batch_size * (0.55 if c.fp16 else 1.0) > p.gpu_mem_items
    return c.workers * c.batch_size > p.cpu_mem_items


def generate(
    family: str, seed: int, *, ranges: Ranges = DEFAULT_RANGES
) -> tuple[Landscape, Profile]:
    """The landscape of ``family`` drawn by ``seed`` within ``ranges`` (deterministic), and its
    profile."""
    p = _profile(family, seed, ranges)
    rng = np.random.default_rng([FAMILIES.index(family), seed, 1, *ranges.stream])
    rows: dict[TrialConfig, Row] = {}
    jitter: dict[tuple[Any, ...], float] = {}
    for c in _configs(p):
        if _failed(p, c):
            rows[c] = Row(throughput_rps=0.0, p99_ms=math.nan)
            continue
        row = _goodput(p, c)
        # batch 1 ignores the delay: one jitter for all its delays
        key = (c.device, c.fp16, c.torchscript, c.compile, c.workers, c.batch_size,
               c.max_batch_delay_ms if c.batch_size > 1 else -1, c.threads_per_worker)  # fmt: skip
        if key not in jitter:
            jitter[key] = float(math.exp(rng.normal(0.0, p.jitter)))
        rows[c] = Row(throughput_rps=round(row.throughput_rps * jitter[key], 2), p99_ms=row.p99_ms)
    best = max(r.throughput_rps for r in rows.values())
    if best > 0 and rng.random() < ranges.plateau:  # a plateau: the client or network caps the rate
        cap = best * float(rng.uniform(0.6, 0.95))
        p = Profile(**{**p.__dict__, "rate_cap_rps": round(cap, 2)})
        rows = {
            c: Row(throughput_rps=min(r.throughput_rps, p.rate_cap_rps), p99_ms=r.p99_ms)
            for c, r in rows.items()
        }
    source = f"{family}-{seed}"
    return Landscape(
        source=source, rows=rows, space=space_from_configs(rows, source=source), sla_ms=p.sla_ms
    ), p


def landscape_set(
    which: str, *, per_family: int, families: Sequence[str] = FAMILIES
) -> list[tuple[Landscape, Profile]]:
    """The first ``per_family`` landscapes of each family of the ``tuning`` or ``held-out``
    seeds, or of the held-out seeds drawn within :data:`WIDE_RANGES` (``wide``); a drawn
    landscape where no configuration meets the SLA is skipped."""
    if which not in SETS:
        raise ValueError(f"`which` must be one of {SETS}, but got {which!r}.")
    seeds = TUNING_SEEDS if which == "tuning" else HELD_OUT_SEEDS
    ranges = WIDE_RANGES if which == "wide" else DEFAULT_RANGES
    out = []
    for family in families:
        taken = 0
        for seed in seeds:
            if taken == per_family:
                break
            landscape, profile = generate(family, seed, ranges=ranges)
            if landscape.best(profile.sla_ms)[1] > 0:
                out.append((landscape, profile))
                taken += 1
    return out
