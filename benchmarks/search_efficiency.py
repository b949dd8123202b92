"""How many trials the tuner's search needs to find the best configuration of a landscape.

A *landscape* is a CSV with one row per configuration, every one measured (or modelled) once::

    device,fp16,torchscript,workers,batch_size,max_batch_delay_ms,threads_per_worker,throughput_rps,p99_ms
    cuda,true,true,1,8,5,0,108.0,98.8

``throughput_rps`` is goodput (requests/s served with P99 <= SLA), 0 when even light load breaks
the SLA; ``p99_ms`` is the P99 at that rate (at light load when the goodput is 0; empty when the
deployment failed). An optional last column ``sla_ms`` (one value for every row) says which SLA
the goodput was measured for; it is the default of ``--sla-ms``, else 100 ms.

The benchmark replays the landscape through the study code ``autotune run`` uses: the search space
is built from the landscape's distinct values per column (a :class:`~autotune._space.SearchSpace`),
the study is an in-memory Optuna study with the sampler :func:`~autotune._study.make_sampler` gives,
seeded by :func:`~autotune._tuner.enqueue_seeds` and driven by :class:`~autotune._tuner.Tuner`; only
the measurement is a table look-up (:class:`TableEvaluator`).
It compares three searches:

* **ours**: the tuner's default sampler (``gp``) with the CLI's ``n_startup_trials``;
* **random**: ``RandomSampler`` through the same study code and seeds; and, since random search
  often needs more trials than the budget, its exact expectation from the space's
  probabilities (``random (expected)``);
* **grid**: TorchServe's ``benchmarks/auto_benchmark.py`` sweep: nested loops over the lists,
  processors (cpu, then gpu) outermost, then the model's mode (fp32/fp16, eager/TorchScript),
  then workers and batch size (its config files are named ``..._w{W}_b{B}.json`` and run sorted),
  then batch delay and threads; nothing random, one run.

For each: the median number of trials (over seeds) to reach 95% and 99% of the best goodput in
the table, and the share of seeds that reach it within ``--trials``. A trial is one study trial
(the unit of ``autotune run --trials``), including the enqueued baseline; a configuration
measured before is reused by the tuner, not deployed again, and ``deployments`` counts only
those measured.

    python benchmarks/search_efficiency.py --landscape FILE.csv [--seeds 10] [--trials 40]
        [--sla-ms 100] [--sampler gp] [--n-startup-trials N] [--no-random] [--json]
"""

from __future__ import annotations

import argparse
import csv
import itertools
import json
import math
import statistics
import sys
import time
import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import optuna
import torch
from optuna.distributions import CategoricalDistribution, IntDistribution
from optuna.trial import TrialState
from rich.console import Console
from rich.table import Table

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # run as a script from a checkout
    sys.path.insert(0, str(ROOT))

from autotune._errors import AutotuneError  # noqa: E402
from autotune._run import RunSettings  # noqa: E402
from autotune.space import (  # noqa: E402  # noqa: E402
    PARAMETERS,
    Backend,
    Device,
    Hardware,
    PerDevice,
    SearchSpace,
    TrialConfig,
)
from autotune.study import (  # noqa: E402
    StopRule,
    TrialResult,
    Tuner,
    enqueue_seeds,
    make_sampler,
)
from autotune.study import schema as A  # noqa: E402

# compile is optional in a landscape (absent: false)
COLUMNS: Final = (*(p for p in PARAMETERS if p != "compile"), "throughput_rps", "p99_ms")
LEVELS: Final = (0.95, 0.99)
DEFAULT_SLA_MS: Final = 100.0
# The CLI's default: the benchmark measures the sampler `autotune run` uses.
DEFAULT_N_STARTUP_TRIALS: Final[int] = RunSettings.__dataclass_fields__["n_startup_trials"].default
DEFAULT_SAMPLER: Final[str] = RunSettings.__dataclass_fields__["sampler"].default
# Enumerate the sampler's parameter grid for the exact random-search figure up to this size.
_MAX_ENUMERATED: Final = 1_000_000


class LandscapeError(Exception):
    """A landscape CSV that cannot be used; the message names the file, the line and the rule."""


# -- the landscape ------------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class Row:
    throughput_rps: float
    p99_ms: float  # NaN: the deployment failed


@dataclass(frozen=True, kw_only=True)
class Landscape:
    """The table, and the search space its distinct values span."""

    source: str
    rows: Mapping[TrialConfig, Row]
    space: SearchSpace
    sla_ms: float | None = None  # the SLA the goodput was measured for, when the CSV says

    def feasible_rps(self, config: TrialConfig, sla_ms: float) -> float:
        """The goodput the table gives ``config`` under ``sla_ms``; 0 if absent or over."""
        row = self.rows.get(config)
        if row is None or not row.p99_ms <= sla_ms:
            return 0.0
        return row.throughput_rps

    def best(self, sla_ms: float) -> tuple[TrialConfig, float]:
        config = max(self.rows, key=lambda c: self.feasible_rps(c, sla_ms))
        return config, self.feasible_rps(config, sla_ms)

    def hardware(self) -> Hardware:
        """The host the landscape stands for: a GPU if it has cuda rows, and as many cores as
        its largest cpu worker or thread count (what the tuner's baseline starts from)."""
        cores = max(
            (v for c in self.rows if c.device == "cpu" for v in (c.workers, c.threads_per_worker)),
            default=1,
        )
        return Hardware(cpu_cores=max(1, cores), gpus=int("cuda" in self.space.devices))


def _bool(value: str) -> bool:
    lowered = value.strip().lower()
    if lowered in ("true", "1", "yes"):
        return True
    if lowered in ("false", "0", "no"):
        return False
    raise ValueError(f"not a boolean: {value!r}")


def _float(value: str) -> float:
    return math.nan if value.strip() in ("", "nan", "NaN") else float(value)


def read_landscape(path: Path) -> Landscape:
    """Read a landscape CSV (format in the module docstring) and build its search space."""
    source = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise LandscapeError(f"{source}: cannot read the landscape: {exc}") from None
    reader = csv.DictReader(text.splitlines())
    missing = [c for c in COLUMNS if c not in (reader.fieldnames or ())]
    if missing:
        raise LandscapeError(
            f"{source}: missing column(s) {', '.join(missing)}; a landscape has the columns "
            f"{','.join(COLUMNS)}"
        )
    rows: dict[TrialConfig, Row] = {}
    slas: set[float] = set()
    for line, record in enumerate(reader, start=2):
        try:
            device = record["device"].strip()
            if device not in ("cpu", "cuda"):
                raise ValueError(f"device must be cpu or cuda, got {device!r}")
            threads = int(record["threads_per_worker"]) if device == "cpu" else 0
            config = TrialConfig(
                device="cpu" if device == "cpu" else "cuda",
                fp16=_bool(record["fp16"]),
                torchscript=_bool(record["torchscript"]),
                workers=int(record["workers"]),
                batch_size=int(record["batch_size"]),
                max_batch_delay_ms=int(record["max_batch_delay_ms"]),
                threads_per_worker=threads,
            )
            row = Row(
                throughput_rps=_float(record["throughput_rps"]),
                p99_ms=_float(record["p99_ms"]),
            )
            if record.get("sla_ms", "").strip():
                slas.add(float(record["sla_ms"]))
        except (TypeError, ValueError) as exc:
            raise LandscapeError(f"{source}: line {line}: {exc}") from None
        if not row.throughput_rps >= 0:
            raise LandscapeError(
                f"{source}: line {line}: throughput_rps must be >= 0, got {row.throughput_rps}"
            )
        if config in rows:
            raise LandscapeError(f"{source}: line {line}: configuration {config.label()} again")
        rows[config] = row
    if not rows:
        raise LandscapeError(f"{source}: no rows")
    if len(slas) > 1:
        raise LandscapeError(f"{source}: sla_ms must be one value, got {sorted(slas)}")
    return Landscape(
        source=source,
        rows=rows,
        space=space_from_configs(rows, source=source),
        sla_ms=slas.pop() if slas else None,
    )


def space_from_configs(configs: Iterable[TrialConfig], *, source: str) -> SearchSpace:
    """The search space spanned by the distinct values of ``configs``, per device where the
    tuner's space allows it (workers, batch size, delay); threads from the cpu rows."""
    configs = list(configs)
    backends = sorted({Backend.of(c.device, c.fp16) for c in configs}, key=list(Backend).index)

    def per_device(name: str) -> PerDevice:
        values: dict[Device, tuple[int, ...]] = {}
        for device in ("cpu", "cuda"):
            found = {getattr(c, name) for c in configs if c.device == device}
            if found:
                values[device] = tuple(sorted(found))
        return PerDevice(**values)

    threads = sorted({c.threads_per_worker for c in configs if c.device == "cpu"}) or [0]
    return SearchSpace(
        backends=tuple(backends),
        torchscript=tuple(sorted({c.torchscript for c in configs})),
        workers=per_device("workers"),
        batch_size=per_device("batch_size"),
        max_batch_delay_ms=per_device("max_batch_delay_ms"),
        threads_per_worker=tuple(threads),
        source=source,
    )


# -- the measurement, replaced ------------------------------------------------------------------


class TableEvaluator:
    """An :class:`~autotune._tuner.Evaluator` that looks the configuration up in the table.

    A configuration the table lacks is a failed deployment (no goodput) and is counted in
    ``missing``; a row over ``sla_ms`` is ``over_sla``.
    """

    def __init__(self, landscape: Landscape, *, sla_ms: float) -> None:
        self.landscape = landscape
        self.sla_ms = sla_ms
        self.calls = 0
        self.missing: list[TrialConfig] = []

    def evaluate(self, config: TrialConfig) -> TrialResult:
        self.calls += 1
        row = self.landscape.rows.get(config)
        if row is None or math.isnan(row.p99_ms):
            if row is None:
                self.missing.append(config)
            return TrialResult(config=config, verdict="failed", failure="not in the landscape")
        if row.throughput_rps > 0 and row.p99_ms <= self.sla_ms:
            return TrialResult(
                config=config,
                verdict="feasible",
                throughput_rps=row.throughput_rps,
                p99_ms=row.p99_ms,
            )
        # A row without goodput holds its P99 at light load: the idle latency the stop rule reads.
        return TrialResult(
            config=config, verdict="over_sla", p99_ms=row.p99_ms, idle_latency_ms=row.p99_ms
        )


# -- the searches -------------------------------------------------------------------------------


SamplerFactory = Callable[[int], optuna.samplers.BaseSampler]


def sampler_factory(kind: str, *, n_startup_trials: int) -> SamplerFactory:
    """``make_sampler``'s kinds (gp, tpe, random), and variants for experiments:
    ``gp-deterministic`` (GPSampler, noise-free objective), ``tpe-group`` (multivariate TPE with
    group decomposition), ``tpe-univariate``."""
    variants: dict[str, SamplerFactory] = {
        "gp-deterministic": lambda seed: optuna.samplers.GPSampler(
            seed=seed, n_startup_trials=n_startup_trials, deterministic_objective=True
        ),
        "tpe-group": lambda seed: optuna.samplers.TPESampler(
            seed=seed, n_startup_trials=n_startup_trials, multivariate=True, group=True
        ),
        "tpe-univariate": lambda seed: optuna.samplers.TPESampler(
            seed=seed, n_startup_trials=n_startup_trials, multivariate=False
        ),
    }
    if kind in variants:
        return variants[kind]
    make_sampler(kind, seed=0, n_startup_trials=n_startup_trials)  # unknown kind: ConfigError
    return lambda seed: make_sampler(kind, seed=seed, n_startup_trials=n_startup_trials)


@dataclass(frozen=True, kw_only=True)
class Trace:
    """One search's trials in order: the goodput each one found, and whether it deployed."""

    throughput_rps: tuple[float, ...]
    deployed: tuple[bool, ...]
    missing: int = 0
    seconds: float = 0.0


def run_search(
    landscape: Landscape,
    sampler: optuna.samplers.BaseSampler,
    *,
    trials: int,
    sla_ms: float,
) -> Trace:
    """Replay the landscape through the tuner's study loop, as ``autotune run`` would."""
    started = time.perf_counter()
    study = optuna.create_study(
        storage=optuna.storages.InMemoryStorage(), sampler=sampler, direction="maximize"
    )
    enqueue_seeds(study, landscape.space, landscape.hardware())
    evaluator = TableEvaluator(landscape, sla_ms=sla_ms)
    tuner = Tuner(
        study=study,
        space=landscape.space,
        evaluator=evaluator,
        sla_ms=sla_ms,
        stop_rule=StopRule(),
    )
    tuner.run(n_trials=trials, timeout_s=None)
    done = sorted(study.get_trials(deepcopy=False), key=lambda t: t.number)
    return Trace(
        throughput_rps=tuple(float(t.value or 0.0) for t in done),
        deployed=tuple(A.REUSED_FROM not in t.user_attrs for t in done),
        missing=len(evaluator.missing),
        seconds=time.perf_counter() - started,
    )


def grid_order(space: SearchSpace) -> list[TrialConfig]:
    """TorchServe's sweep order (see the module docstring): device, precision, TorchScript,
    workers, batch size, batch delay, threads; every list in its given (ascending) order."""
    order = []
    for backend in space.backends:  # cpu_fp32, cuda_fp32, cuda_fp16
        device = backend.device
        threads = space.threads_per_worker if device == "cpu" else (0,)
        for ts, w, b, d, t in itertools.product(
            space.torchscript,
            space.workers[device],
            space.batch_size[device],
            space.max_batch_delay_ms[device],
            threads,
        ):
            order.append(
                TrialConfig(
                    device=device,
                    fp16=backend.fp16,
                    torchscript=ts,
                    workers=w,
                    batch_size=b,
                    max_batch_delay_ms=d,
                    threads_per_worker=t,
                )
            )
    return order


def trials_to_reach(throughput_rps: Sequence[float], target_rps: float) -> int | None:
    """The 1-based number of the first trial at or above ``target_rps``; None if none is."""
    for number, value in enumerate(throughput_rps, start=1):
        if value >= target_rps:
            return number
    return None


def random_hit_probability(landscape: Landscape, target_rps: float, sla_ms: float) -> float | None:
    """The chance that one RandomSampler trial lands on a configuration at or above
    ``target_rps``: the share of the sampler's parameter grid (every combination equally
    likely) that maps to one. None when the grid is too large to enumerate."""
    dists = landscape.space.distributions()
    axes: list[list[Any]] = []
    for dist in dists.values():
        if isinstance(dist, CategoricalDistribution):
            axes.append(list(dist.choices))
        else:
            assert isinstance(dist, IntDistribution)
            axes.append(list(range(dist.low, dist.high + 1)))
    if math.prod(len(a) for a in axes) > _MAX_ENUMERATED:
        return None
    names = list(dists)
    cache: dict[TrialConfig, bool] = {}
    hits = total = 0
    for values in itertools.product(*axes):
        # A parameter not asked on a trial (threads on cuda) is dropped: each remaining
        # combination still appears equally often, as the sampler draws it.
        params = dict(zip(names, values, strict=True))
        params = {k: v for k, v in params.items() if landscape.space.applies(k, params["backend"])}
        config = landscape.space.config_from_params(params)
        if config not in cache:
            cache[config] = landscape.feasible_rps(config, sla_ms) >= target_rps
        hits += cache[config]
        total += 1
    return hits / total


# -- the figures --------------------------------------------------------------------------------


def median_trials(reached: Sequence[int | None]) -> float | None:
    """The median over seeds, a seed that never reached counting as infinitely many trials;
    None when that makes the median infinite (half or more of the seeds missed)."""
    if not reached:
        return None
    value = statistics.median(math.inf if r is None else r for r in reached)
    return None if math.isinf(value) else float(value)


@dataclass(frozen=True, kw_only=True)
class Reach:
    """How one search reached one level (a share of the best goodput) over its seeds."""

    level: float
    trials: tuple[int | None, ...]  # per seed
    deployments: tuple[int | None, ...]  # per seed: trials that measured, up to reaching
    within: int  # the budget the share is counted in

    @property
    def median_trials(self) -> float | None:
        return median_trials(self.trials)

    @property
    def median_deployments(self) -> float | None:
        return median_trials(self.deployments)

    @property
    def share(self) -> float:
        return sum(t is not None and t <= self.within for t in self.trials) / len(self.trials)

    def as_dict(self) -> dict[str, Any]:
        return {
            "median_trials": self.median_trials,
            "median_deployments": self.median_deployments,
            "share_within_trials": self.share,
            "per_seed": list(self.trials),
        }


@dataclass(frozen=True, kw_only=True)
class MethodResult:
    name: str
    sampler: str
    seeds: int
    reach: Mapping[float, Reach]
    seconds: float = 0.0
    missing_lookups: int = 0
    note: str = ""

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "sampler": self.sampler,
            "seeds": self.seeds,
            "reach": {f"{level:.0%}": r.as_dict() for level, r in self.reach.items()},
            "seconds": round(self.seconds, 2),
            "missing_lookups": self.missing_lookups,
            "note": self.note,
        }


def summarise(
    name: str,
    sampler: str,
    traces: Sequence[Trace],
    *,
    best_rps: float,
    trials: int,
    note: str = "",
) -> MethodResult:
    reach = {}
    for level in LEVELS:
        numbers = [trials_to_reach(t.throughput_rps, level * best_rps) for t in traces]
        deployments = [
            None if n is None else sum(t.deployed[:n]) for n, t in zip(numbers, traces, strict=True)
        ]
        reach[level] = Reach(
            level=level, trials=tuple(numbers), deployments=tuple(deployments), within=trials
        )
    return MethodResult(
        name=name,
        sampler=sampler,
        seeds=len(traces),
        reach=reach,
        seconds=sum(t.seconds for t in traces),
        missing_lookups=sum(t.missing for t in traces),
        note=note,
    )


@dataclass(frozen=True, kw_only=True)
class RandomExpectation:
    """Random search's exact figures, from the hit probability of one trial (after the
    enqueued seed trials, which come first in every study)."""

    level: float
    hit_probability: float
    seed_trials: int
    seed_hit: int | None  # the number of the first seed trial at the level, if one is

    def median_trials(self) -> float | None:
        if self.seed_hit is not None:
            return float(self.seed_hit)
        p = self.hit_probability
        if p <= 0:
            return None
        if p >= 1:
            return float(self.seed_trials + 1)
        # The smallest n with P(first hit <= n) >= 1/2, geometric from the first random trial.
        return float(self.seed_trials + math.ceil(math.log(0.5) / math.log1p(-p)))

    def share_within(self, trials: int) -> float:
        if self.seed_hit is not None:
            return 1.0 if self.seed_hit <= trials else 0.0
        return 1.0 - (1.0 - self.hit_probability) ** max(0, trials - self.seed_trials)

    def as_dict(self, trials: int) -> dict[str, Any]:
        return {
            "median_trials": self.median_trials(),
            "share_within_trials": self.share_within(trials),
            "hit_probability": self.hit_probability,
        }


@dataclass(frozen=True, kw_only=True)
class Report:
    landscape: str
    configurations: int
    space_size: int
    sla_ms: float
    best_rps: float
    best_config: TrialConfig
    near_best: Mapping[float, int]  # configurations at or above each level
    trials: int
    seeds: int
    n_startup_trials: int
    methods: Sequence[MethodResult]
    random_expected: Mapping[float, RandomExpectation] = field(default_factory=dict)

    def method(self, name: str) -> MethodResult | None:
        return next((m for m in self.methods if m.name == name), None)

    def random_median(self, level: float) -> tuple[float | None, str]:
        """Random search's median trials at ``level``: measured when more than half of the
        seeds reached it within the budget, else the exact expectation."""
        measured = self.method("random")
        if measured is not None and measured.reach[level].median_trials is not None:
            return measured.reach[level].median_trials, "measured"
        expected = self.random_expected.get(level)
        if expected is not None:
            return expected.median_trials(), "expected"
        return None, "unknown"

    def ratio(self, level: float) -> float | None:
        """Random search's median trials over ours (how many times fewer we need)."""
        ours = self.method("ours")
        random_median, _ = self.random_median(level)
        if ours is None or random_median is None:
            return None
        ours_median = ours.reach[level].median_trials
        if ours_median is None or ours_median <= 0:
            return None
        return random_median / ours_median

    def as_dict(self) -> dict[str, Any]:
        return {
            "landscape": self.landscape,
            "configurations": self.configurations,
            "space_size": self.space_size,
            "sla_ms": self.sla_ms,
            "best_throughput_rps": self.best_rps,
            "best_config": self.best_config.as_dict(),
            "configurations_at_level": {f"{k:.0%}": v for k, v in self.near_best.items()},
            "trials": self.trials,
            "seeds": self.seeds,
            "n_startup_trials": self.n_startup_trials,
            "methods": [m.as_dict() for m in self.methods],
            "random_expected": {
                f"{k:.0%}": v.as_dict(self.trials) for k, v in self.random_expected.items()
            },
            "ratio_random_over_ours": {
                f"{level:.0%}": {
                    "ratio": self.ratio(level),
                    "random_median_from": self.random_median(level)[1],
                }
                for level in LEVELS
            },
        }


Progress = Callable[[str], None]


def compare(
    landscape: Landscape,
    *,
    seeds: int,
    trials: int,
    sla_ms: float,
    sampler: str = DEFAULT_SAMPLER,
    n_startup_trials: int = DEFAULT_N_STARTUP_TRIALS,
    include_random: bool = True,
    progress: Progress | None = None,
) -> Report:
    """Run every search and compute the figures (plain data; :func:`render` shows them)."""
    best_config, best_rps = landscape.best(sla_ms)
    if best_rps <= 0:
        raise LandscapeError(
            f"{landscape.source}: no configuration has goodput with P99 <= {sla_ms:g} ms; "
            "check --sla-ms"
        )
    methods: list[MethodResult] = []
    searches = [("ours", sampler)] + ([("random", "random")] if include_random else [])
    for name, kind in searches:
        factory = sampler_factory(kind, n_startup_trials=n_startup_trials)
        traces = []
        for seed in range(seeds):
            if progress is not None:
                progress(f"{name} ({kind}) seed {seed + 1}/{seeds}")
            traces.append(run_search(landscape, factory(seed), trials=trials, sla_ms=sla_ms))
        methods.append(summarise(name, kind, traces, best_rps=best_rps, trials=trials))

    order = grid_order(landscape.space)
    sweep = Trace(
        throughput_rps=tuple(landscape.feasible_rps(c, sla_ms) for c in order),
        deployed=(True,) * len(order),
        missing=sum(c not in landscape.rows for c in order),
    )
    methods.append(summarise("grid", "torchserve-sweep", [sweep], best_rps=best_rps, trials=trials))

    expected: dict[float, RandomExpectation] = {}
    seed_trace = _seed_trace(landscape, sla_ms)
    for level in LEVELS:
        p = random_hit_probability(landscape, level * best_rps, sla_ms)
        if p is not None:
            expected[level] = RandomExpectation(
                level=level,
                hit_probability=p,
                seed_trials=len(seed_trace),
                seed_hit=trials_to_reach(seed_trace, level * best_rps),
            )
    near = {
        level: sum(landscape.feasible_rps(c, sla_ms) >= level * best_rps for c in landscape.rows)
        for level in LEVELS
    }
    return Report(
        landscape=landscape.source,
        configurations=len(landscape.rows),
        space_size=landscape.space.size(),
        sla_ms=sla_ms,
        best_rps=best_rps,
        best_config=best_config,
        near_best=near,
        trials=trials,
        seeds=seeds,
        n_startup_trials=n_startup_trials,
        methods=methods,
        random_expected=expected,
    )


def _seed_trace(landscape: Landscape, sla_ms: float) -> list[float]:
    """The goodput of the trials ``enqueue_seeds`` puts first, in order."""
    study = optuna.create_study(storage=optuna.storages.InMemoryStorage(), direction="maximize")
    enqueue_seeds(study, landscape.space, landscape.hardware())
    values = []
    for _ in study.get_trials(deepcopy=False, states=(TrialState.WAITING,)):
        trial = study.ask()
        config = landscape.space.suggest(trial)
        values.append(landscape.feasible_rps(config, sla_ms))
        study.tell(trial, 0.0)
    return values


# -- rendering ----------------------------------------------------------------------------------


def _fmt_median(value: float | None, trials: int) -> str:
    if value is None:
        return f">{trials}"
    return f"{value:g}"


def render(report: Report, console: Console) -> None:
    """The comparison as a table, and the ratio line."""
    best = report.best_config
    console.print(
        f"{report.landscape}: {report.configurations} configurations (space {report.space_size}),"
        f" SLA P99 <= {report.sla_ms:g} ms; best {report.best_rps:g} rps ({best.label()}); "
        + ", ".join(f"{n} at >= {level:.0%}" for level, n in report.near_best.items())
    )
    table = Table(
        title=f"Trials to reach the best goodput: median over {report.seeds} seeds, and the "
        f"share of seeds within {report.trials} trials"
    )
    table.add_column("search")
    for level in LEVELS:
        table.add_column(f"{level:.0%} median", justify="right")
        table.add_column(f"{level:.0%} share", justify="right")
    table.add_column("seconds", justify="right")
    for method in report.methods:
        name = f"ours ({method.sampler})" if method.name == "ours" else method.name
        cells = [name]
        for level in LEVELS:
            reach = method.reach[level]
            cells.append(_fmt_median(reach.median_trials, report.trials))
            cells.append(f"{reach.share:.0%}")
        cells.append(f"{method.seconds:.1f}" if method.name != "grid" else "-")
        table.add_row(*cells)
    if report.random_expected:
        cells = ["random (expected)"]
        for level in LEVELS:
            expected = report.random_expected.get(level)
            if expected is None:
                cells += ["?", "?"]
                continue
            cells.append(_fmt_median(expected.median_trials(), 10**9))
            cells.append(f"{expected.share_within(report.trials):.0%}")
        cells.append("-")
        table.add_row(*cells)
    console.print(table)
    for level in LEVELS:
        ratio = report.ratio(level)
        _, source = report.random_median(level)
        shown = "n/a" if ratio is None else f"{ratio:.1f}x"
        console.print(
            f"to {level:.0%}: random search needs {shown} the trials ours needs "
            f"(random's median {source})"
        )
    missing = sum(m.missing_lookups for m in report.methods if m.name != "grid")
    if missing:
        console.print(
            f"[yellow]{missing} look-ups asked for configurations the landscape lacks; they "
            "counted as failed deployments[/yellow]"
        )


# -- command line -------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="Trials the tuner's search needs to find a landscape's best configuration."
    )
    parser.add_argument("--landscape", type=Path, required=True, help="landscape CSV")
    parser.add_argument("--seeds", type=int, default=10, help="seeds per search (default 10)")
    parser.add_argument("--trials", type=int, default=40, help="trial budget (default 40)")
    parser.add_argument(
        "--sla-ms",
        type=float,
        default=None,
        help="P99 SLA (default: the landscape's sla_ms column, else 100)",
    )
    parser.add_argument(
        "--sampler",
        default=DEFAULT_SAMPLER,
        help=f"our sampler: gp, tpe, random, gp-deterministic, tpe-group, tpe-univariate "
        f"(default {DEFAULT_SAMPLER}, as autotune run)",
    )
    parser.add_argument(
        "--n-startup-trials",
        type=int,
        default=DEFAULT_N_STARTUP_TRIALS,
        help=f"random trials before the model (default {DEFAULT_N_STARTUP_TRIALS}, "
        "as autotune run)",
    )
    parser.add_argument("--no-random", action="store_true", help="skip the random-search runs")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args(argv)
    err = Console(stderr=True)
    for flag, value, low in (("--seeds", args.seeds, 1), ("--trials", args.trials, 1)):
        if value < low:
            err.print(f"error: {flag} must be at least {low}, got {value}")
            return 2
    if args.sla_ms is not None and not args.sla_ms > 0:
        err.print(f"error: --sla-ms must be positive, got {args.sla_ms}")
        return 2

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    # The GP's fits are small: one thread is as fast on an idle host and 2-3x faster on a busy
    # one, where OpenMP threads spin against other processes.
    torch.set_num_threads(1)
    try:
        landscape = read_landscape(args.landscape)
        sampler_factory(args.sampler, n_startup_trials=args.n_startup_trials)
        with err.status("searching") as status:
            report = compare(
                landscape,
                seeds=args.seeds,
                trials=args.trials,
                sla_ms=args.sla_ms or landscape.sla_ms or DEFAULT_SLA_MS,
                sampler=args.sampler,
                n_startup_trials=args.n_startup_trials,
                include_random=not args.no_random,
                progress=lambda text: status.update(f"searching: {text}"),
            )
    except (LandscapeError, AutotuneError) as exc:  # AutotuneError: e.g. an unknown --sampler
        err.print(f"error: {exc}", highlight=False)
        return 1
    if args.json:
        print(json.dumps(report.as_dict(), indent=2))
    else:
        render(report, Console())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
