"""How good a configuration the tuner's search exports, and how fast it finds the optimum.

The benchmark replays landscapes (tables of every configuration's goodput: the CSV format is in
``autotune/testing/_landscape.py`` and ``benchmarks/landscapes/README.md``) through the study
code ``autotune run`` uses: the search space is built from the landscape's distinct values per
column, the study is an in-memory Optuna study with the sampler
:func:`autotune.study.make_sampler` gives for the space, seeded by
:func:`autotune.study.enqueue_seeds`, driven by :class:`autotune.study.Tuner` with its
``StopRule``; only the measurement is a table look-up (:class:`autotune.testing.TableEvaluator`,
with ``--noise CV``: each measured goodput is the table's times a lognormal factor of mean 1,
drawn once per configuration and replay seed).

Landscapes: ``--landscape PATH`` (one CSV, or a folder of them), or ``--generated SET`` (the
``tuning`` or ``held-out`` seeds of ``autotune.testing``'s generator, or ``wide``: the held-out
seeds drawn within wider ranges than the search was tuned within; ``--per-family`` of each
family). Searches, each over every landscape x ``--seeds`` replay seeds:

* **ours**: ``make_sampler(--sampler)`` with ``--n-startup-trials``, as ``autotune run``;
* **random**: ``make_sampler("random")`` (uniform among the unmeasured configurations), through
  the same study code and seeds; for trials to a level beyond the budget, its exact law
  (the seeds, then a uniform random order of the rest) gives ``random (unbounded)``;
* **grid**: TorchServe's ``benchmarks/auto_benchmark.py`` sweep: nested loops over the lists,
  processors (cpu, then gpu) outermost, then the model's mode (fp32/fp16, eager/TorchScript/
  compile), then workers and batch size, then batch delay and threads; nothing random.

Figures, per search, over all runs:

* ``exported_share``: the true goodput of the configuration the tool would export after
  ``--trials`` trials (and after each of ``--export-at``), as a share of the landscape's
  optimum: median, 10th percentile, worst. What it exports is what ``autotune run`` exports:
  with ``--confirm K`` (default 3, ``--repeats`` 2, as ``autotune run``), the K feasible
  search trials of highest measured goodput are measured ``--repeats`` more times (each
  re-measurement draws its own noise) and the winner is the one of highest geometric mean of
  its measurements (``autotune.study._confirm``'s rule, the same code). These K x R
  confirmation measurements come *after* the ``--trials`` search trials, beyond that budget,
  as in ``autotune run``; the JSON's ``confirm`` says so. ``exported_share_unconfirmed``:
  the feasible search trial of highest *measured* goodput (``--confirm 0``).
* ``trials_to``: for 95 % and 99 % of the optimum, the trial at which a configuration whose true
  goodput is at that level was first measured: the median over runs (a run that misses counts
  as infinite; ``null`` / ``>T`` when half or more missed) and the share of runs within the budget.

A trial is one study trial (the unit of ``autotune run --trials``), including the two enqueued
ones (TorchServe's default configuration, then a latency-first one).

    python benchmarks/search_efficiency.py (--landscape FILE_OR_DIR | --generated held-out)
        [--per-family 10] [--seeds 1] [--trials 30] [--export-at 20 30] [--noise 0.15]
        [--sla-ms MS] [--sampler gp] [--n-startup-trials N] [--no-random] [--json]
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import statistics
import sys
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import numpy as np
import optuna
import torch
from optuna.trial import TrialState
from rich.console import Console
from rich.table import Table

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # run as a script from a checkout
    sys.path.insert(0, str(ROOT))

from autotune import AutotuneError, RunSettings  # noqa: E402
from autotune.space import SearchSpace, TrialConfig  # noqa: E402
from autotune.study import (  # noqa: E402
    WINNER_RULE,
    Replicates,
    StopRule,
    Tuner,
    best_replicates,
    enqueue_seeds,
    is_feasible,
    make_sampler,
)
from autotune.study import schema as A  # noqa: E402
from autotune.testing import (  # noqa: E402
    SETS,
    Landscape,
    LandscapeError,
    TableEvaluator,
    landscape_files,
    landscape_set,
    noise_factor,
    read_landscape,
)

LEVELS: Final = (0.95, 0.99)
DEFAULT_SLA_MS: Final = 100.0


# The CLI's default: the benchmark measures the sampler `autotune run` uses.
def _run_default(name: str) -> Any:
    return RunSettings.__dataclass_fields__[name].default


DEFAULT_N_STARTUP_TRIALS: Final[int] = _run_default("n_startup_trials")
DEFAULT_SAMPLER: Final[str] = _run_default("sampler")
DEFAULT_CONFIRM: Final[int] = _run_default("confirm_top_k")
DEFAULT_REPEATS: Final[int] = _run_default("confirm_repeats")


# -- the searches -------------------------------------------------------------------------------


SamplerFactory = Callable[[int, SearchSpace], optuna.samplers.BaseSampler]


def sampler_factory(kind: str, *, n_startup_trials: int) -> SamplerFactory:
    """``make_sampler``'s kinds (gp, tpe, random), and ``optuna-gp`` (Optuna's GPSampler on the
    encoded form, the default before; for comparison)."""
    if kind == "optuna-gp":
        return lambda seed, space: optuna.samplers.GPSampler(
            seed=seed,
            n_startup_trials=n_startup_trials,
            deterministic_objective=False,
            warn_independent_sampling=False,
        )
    make_sampler(kind, seed=0, n_startup_trials=n_startup_trials)  # unknown kind: ConfigError
    return lambda seed, space: make_sampler(
        kind, seed=seed, n_startup_trials=n_startup_trials, space=space
    )


@dataclass(frozen=True, kw_only=True)
class Trace:
    """One search's trials in order: each one's true goodput, the goodput it measured (0 when
    infeasible), whether it deployed (False: the tuner reused an earlier measurement), and
    whether its deployment failed (out of memory, a graph mode that does not work)."""

    true_rps: tuple[float, ...]
    measured_rps: tuple[float, ...]
    deployed: tuple[bool, ...]
    configs: tuple[TrialConfig, ...] = ()
    p99_ms: tuple[float, ...] = ()
    failed: tuple[bool, ...] = ()
    noise_cv: float = 0.0
    seed: int = 0
    missing: int = 0
    seconds: float = 0.0

    def failed_deployments(self, trials: int) -> int:
        """How many of the first ``trials`` trials deployed a configuration that failed."""
        pairs = zip(self.failed[:trials], self.deployed[:trials], strict=False)
        return sum(failed and deployed for failed, deployed in pairs)

    def exported_rps(self, trials: int, *, confirm: Confirm | None = None) -> float:
        """The true goodput of what the tool exports after ``trials`` trials; 0 when no trial
        is feasible. Without ``confirm``: the feasible trial of highest measured goodput (the
        earlier on a tie), what the study's summary picks from the search trials. With it, as
        ``autotune run`` goes on (``plan_confirmation``'s candidates): the ``top_k`` feasible
        configurations of highest measured goodput are measured ``repeats`` more times, and the
        winner is chosen by the product's own rule (``autotune.study._confirm``: the highest
        geometric mean of all its measurements). The confirmation trials come after the
        ``trials`` search trials, beyond that budget, as in ``autotune run --trials``."""
        ranked: list[tuple[float, int]] = []
        for i, measured in enumerate(self.measured_rps[:trials]):
            if measured > 0 and self.deployed[i]:
                ranked.append((measured, i))
        if not ranked:
            return 0.0
        ranked.sort(key=lambda item: (-item[0], item[1]))
        if confirm is None or confirm.top_k == 0 or not self.configs:
            return self.true_rps[ranked[0][1]]
        candidates = []
        for measured, i in ranked[: confirm.top_k]:
            true, config = self.true_rps[i], self.configs[i]
            repeats = [
                true * noise_factor(config, cv=self.noise_cv, seed=self.seed, repeat=r)
                for r in range(1, confirm.repeats + 1)
            ]
            p99 = self.p99_ms[i] if self.p99_ms else math.nan
            candidates.append(
                Replicates(
                    trial=i,
                    throughput_rps=(measured, *repeats),
                    p99_ms=(p99,) * (1 + confirm.repeats),
                    confirmations=(),
                )
            )
        winner = best_replicates(candidates)
        return self.true_rps[winner.trial] if winner is not None else 0.0


@dataclass(frozen=True, kw_only=True)
class Confirm:
    """The confirmation of the winner after the search (``autotune run --confirm --repeats``)."""

    top_k: int
    repeats: int


def run_search(
    landscape: Landscape,
    sampler: optuna.samplers.BaseSampler,
    *,
    trials: int,
    sla_ms: float,
    noise_cv: float = 0.0,
    seed: int = 0,
) -> Trace:
    """Replay the landscape through the tuner's study loop, as ``autotune run`` would."""
    started = time.perf_counter()
    study = optuna.create_study(
        storage=optuna.storages.InMemoryStorage(), sampler=sampler, direction="maximize"
    )
    enqueue_seeds(study, landscape.space, landscape.hardware())
    evaluator = TableEvaluator(landscape, sla_ms=sla_ms, noise_cv=noise_cv, seed=seed)
    tuner = Tuner(
        study=study,
        space=landscape.space,
        evaluator=evaluator,
        sla_ms=sla_ms,
        stop_rule=StopRule(),
    )
    tuner.run(n_trials=trials, timeout_s=None)
    done = sorted(
        study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)), key=lambda t: t.number
    )
    true, measured, configs, p99 = [], [], [], []
    for t in done:
        config = TrialConfig.from_dict(t.user_attrs[A.CONFIG])
        configs.append(config)
        value = t.user_attrs.get(A.P99_MS)
        p99.append(float(value) if isinstance(value, int | float) else math.nan)
        true.append(landscape.feasible_rps(config, sla_ms))
        measured.append(float(t.value or 0.0) if is_feasible(t) else 0.0)
    return Trace(
        true_rps=tuple(true),
        measured_rps=tuple(measured),
        deployed=tuple(A.REUSED_FROM not in t.user_attrs for t in done),
        configs=tuple(configs),
        p99_ms=tuple(p99),
        failed=tuple(t.user_attrs.get(A.VERDICT) == "failed" for t in done),
        noise_cv=noise_cv,
        seed=seed,
        missing=len(evaluator.missing),
        seconds=time.perf_counter() - started,
    )


def grid_order(space: SearchSpace) -> list[TrialConfig]:
    """TorchServe's sweep order (see the module docstring): device, precision, graph mode,
    workers, batch size, batch delay, threads; every list in its given (ascending) order."""
    order = []
    for backend in space.backends:  # cpu_fp32, cuda_fp32, cuda_fp16
        device = backend.device
        threads = space.threads_per_worker if device == "cpu" else (0,)
        for (ts, comp), w, b, d, t in itertools.product(
            space.graphs,
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
                    compile=comp,
                    workers=w,
                    batch_size=b,
                    max_batch_delay_ms=d,
                    threads_per_worker=t,
                )
            )
    return order


def grid_trace(
    landscape: Landscape, *, sla_ms: float, noise_cv: float = 0.0, seed: int = 0
) -> Trace:
    """The sweep, measured with the same evaluator (and noise) as the searches."""
    evaluator = TableEvaluator(landscape, sla_ms=sla_ms, noise_cv=noise_cv, seed=seed)
    order = grid_order(landscape.space)
    measured, p99, failed = [], [], []
    for config in order:
        result = evaluator.evaluate(config)
        measured.append(result.throughput_rps if result.verdict == "feasible" else 0.0)
        p99.append(result.p99_ms)
        failed.append(result.verdict == "failed")
    return Trace(
        true_rps=tuple(landscape.feasible_rps(c, sla_ms) for c in order),
        measured_rps=tuple(measured),
        deployed=(True,) * len(order),
        configs=tuple(order),
        p99_ms=tuple(p99),
        failed=tuple(failed),
        noise_cv=noise_cv,
        seed=seed,
        missing=len(evaluator.missing),
    )


def trials_to_reach(throughput_rps: Sequence[float], target_rps: float) -> int | None:
    """The 1-based number of the first trial at or above ``target_rps``; None if none is."""
    for number, value in enumerate(throughput_rps, start=1):
        if value >= target_rps:
            return number
    return None


def random_unbounded_trials(
    landscape: Landscape, *, sla_ms: float, target_rps: float, seed: int
) -> int | None:
    """Trials random search needs to reach ``target_rps`` without a budget: the enqueued seeds,
    then the distinct configurations in a uniform random order (what ``make_sampler("random")``
    draws), one draw of that law per ``seed``. None if no configuration reaches it."""
    study = optuna.create_study(storage=optuna.storages.InMemoryStorage(), direction="maximize")
    enqueue_seeds(study, landscape.space, landscape.hardware())
    seeds = []
    for _ in study.get_trials(deepcopy=False, states=(TrialState.WAITING,)):
        trial = study.ask()
        seeds.append(landscape.space.suggest(trial))
        study.tell(trial, 0.0)
    for number, config in enumerate(seeds, start=1):
        if landscape.feasible_rps(config, sla_ms) >= target_rps:
            return number
    taken = {_deploys_as(c, landscape.space) for c in seeds}
    distinct = dict.fromkeys(_deploys_as(c, landscape.space) for c in landscape.space.configs())
    rest = [c for c in distinct if c not in taken]
    hits = np.array([landscape.feasible_rps(c, sla_ms) >= target_rps for c in rest])
    if not hits.any():
        return None
    order = np.random.default_rng(seed).permutation(len(rest))
    return len(seeds) + int(np.argmax(hits[order])) + 1


def _deploys_as(config: TrialConfig, space: SearchSpace) -> TrialConfig:
    if config.batch_size == 1:
        lowest = space.max_batch_delay_ms[config.device][0]
        return TrialConfig(**{**config.as_dict(), "max_batch_delay_ms": lowest})
    return config


# -- the figures --------------------------------------------------------------------------------


def median_trials(reached: Sequence[int | None]) -> float | None:
    """The median over runs, a run that never reached counting as infinitely many trials;
    None when that makes the median infinite (half or more of the runs missed)."""
    if not reached:
        return None
    value = statistics.median(math.inf if r is None else r for r in reached)
    return None if math.isinf(value) else float(value)


def share_summary(shares: Sequence[float]) -> dict[str, float]:
    """Median, 10th percentile (linear interpolation) and worst of shares of the optimum."""
    arr = np.asarray(shares, dtype=float)
    return {
        "median": round(float(np.median(arr)), 4),
        "p10": round(float(np.percentile(arr, 10)), 4),
        "worst": round(float(arr.min()), 4),
    }


@dataclass(frozen=True, kw_only=True)
class Reach:
    """How one search reached one level (a share of the optimum) over its runs."""

    level: float
    trials: tuple[int | None, ...]  # per run
    within: int  # the budget the share is counted in

    @property
    def median_trials(self) -> float | None:
        return median_trials(self.trials)

    @property
    def share(self) -> float:
        return sum(t is not None and t <= self.within for t in self.trials) / len(self.trials)

    def as_dict(self) -> dict[str, Any]:
        return {"median": self.median_trials, "share_within_trials": round(self.share, 4)}


@dataclass(frozen=True, kw_only=True)
class MethodResult:
    name: str
    sampler: str
    runs: int
    exported: dict[int, tuple[float, ...]]  # trials -> per run, share of the optimum
    exported_unconfirmed: dict[int, tuple[float, ...]]  # the same, search trials alone
    reach: dict[float, Reach]
    trials: int
    seconds: float = 0.0
    missing_lookups: int = 0
    failed_deployments: float = 0.0  # per run, within the budget

    def exported_share(self, trials: int | None = None) -> dict[str, float]:
        return share_summary(self.exported[trials or self.trials])

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "sampler": self.sampler,
            "runs": self.runs,
            "exported_share": self.exported_share(),
            "exported_share_at": {str(k): share_summary(v) for k, v in self.exported.items()},
            "exported_share_unconfirmed": share_summary(self.exported_unconfirmed[self.trials]),
            "exported_share_unconfirmed_at": {
                str(k): share_summary(v) for k, v in self.exported_unconfirmed.items()
            },
            "trials_to": {f"{level:.0%}": r.as_dict() for level, r in self.reach.items()},
            "seconds": round(self.seconds, 2),
            "missing_lookups": self.missing_lookups,
            "failed_deployments_per_run": round(self.failed_deployments, 2),
        }


def summarise(
    name: str,
    sampler: str,
    traces: Sequence[Trace],
    optima: Sequence[float],
    *,
    trials: int,
    export_at: Sequence[int],
    confirm: Confirm | None = None,
) -> MethodResult:
    points = sorted(k for k in {*export_at, trials} if k <= trials)
    pairs = list(zip(traces, optima, strict=True))
    exported = {
        k: tuple(t.exported_rps(k, confirm=confirm) / best for t, best in pairs) for k in points
    }
    unconfirmed = {k: tuple(t.exported_rps(k) / best for t, best in pairs) for k in points}
    reach = {
        level: Reach(
            level=level,
            trials=tuple(
                trials_to_reach(t.true_rps, level * best)
                for t, best in zip(traces, optima, strict=True)
            ),
            within=trials,
        )
        for level in LEVELS
    }
    return MethodResult(
        name=name,
        sampler=sampler,
        runs=len(traces),
        exported=exported,
        exported_unconfirmed=unconfirmed,
        reach=reach,
        trials=trials,
        seconds=sum(t.seconds for t in traces),
        missing_lookups=sum(t.missing for t in traces),
        failed_deployments=statistics.fmean(t.failed_deployments(trials) for t in traces)
        if traces
        else 0.0,
    )


@dataclass(frozen=True, kw_only=True)
class Report:
    source: str
    landscapes: Sequence[str]
    seeds: int
    trials: int
    noise_cv: float
    n_startup_trials: int
    methods: Sequence[MethodResult]
    random_unbounded: dict[float, tuple[int | None, ...]] = field(default_factory=dict)
    confirm: Confirm | None = None

    def method(self, name: str) -> MethodResult | None:
        return next((m for m in self.methods if m.name == name), None)

    def ratio(self, level: float) -> float | None:
        """Random search's median trials (unbounded) over ours: how many times fewer we need."""
        ours = self.method("ours")
        random_median = median_trials(self.random_unbounded.get(level, ()))
        if ours is None or random_median is None:
            return None
        ours_median = ours.reach[level].median_trials
        if ours_median is None or ours_median <= 0:
            return None
        return random_median / ours_median

    def as_dict(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "landscapes": list(self.landscapes),
            "seeds": self.seeds,
            "runs": len(self.landscapes) * self.seeds,
            "trials": self.trials,
            "noise_cv": self.noise_cv,
            "n_startup_trials": self.n_startup_trials,
            "confirm": {
                "top_k": self.confirm.top_k if self.confirm else 0,
                "repeats": self.confirm.repeats if self.confirm else 0,
                "measurements": self.confirm.top_k * self.confirm.repeats if self.confirm else 0,
                "within_trials": False,  # after the search trials, beyond --trials
                "winner": WINNER_RULE,
            },
            "methods": {m.name: m.as_dict() for m in self.methods},
            "random_unbounded_trials_to": {
                f"{level:.0%}": {"median": median_trials(v), "per_run": list(v)}
                for level, v in self.random_unbounded.items()
            },
            "ratio_random_over_ours": {f"{level:.0%}": self.ratio(level) for level in LEVELS},
        }


Progress = Callable[[str], None]


def compare(
    landscapes: Sequence[Landscape],
    *,
    seeds: int,
    trials: int,
    sla_ms: float | None = None,
    noise_cv: float = 0.0,
    export_at: Sequence[int] = (20, 30),
    sampler: str = DEFAULT_SAMPLER,
    n_startup_trials: int = DEFAULT_N_STARTUP_TRIALS,
    include_random: bool = True,
    confirm: Confirm | None = None,
    source: str = "",
    progress: Progress | None = None,
) -> Report:
    """Run every search on every landscape and compute the figures (plain data; :func:`render`
    shows them). ``sla_ms`` None: each landscape's own (its ``sla_ms`` column), else 100 ms."""
    slas, optima = [], []
    for landscape in landscapes:
        sla = sla_ms or landscape.sla_ms or DEFAULT_SLA_MS
        _, best_rps = landscape.best(sla)
        if best_rps <= 0:
            raise LandscapeError(
                f"{landscape.source}: no configuration has goodput with P99 <= {sla:g} ms; "
                "check --sla-ms"
            )
        slas.append(sla)
        optima.append(best_rps)
    runs = [(i, s) for i in range(len(landscapes)) for s in range(seeds)]
    run_optima = [optima[i] for i, _ in runs]
    methods: list[MethodResult] = []
    searches = [("ours", sampler)] + ([("random", "random")] if include_random else [])
    for name, kind in searches:
        factory = sampler_factory(kind, n_startup_trials=n_startup_trials)
        traces = []
        for n, (i, seed) in enumerate(runs, start=1):
            if progress is not None:
                progress(f"{name} ({kind}) run {n}/{len(runs)}")
            landscape = landscapes[i]
            traces.append(
                run_search(
                    landscape,
                    factory(seed, landscape.space),
                    trials=trials,
                    sla_ms=slas[i],
                    noise_cv=noise_cv,
                    seed=seed,
                )
            )
        methods.append(
            summarise(
                name, kind, traces, run_optima, trials=trials, export_at=export_at, confirm=confirm
            )
        )
    sweeps = [
        grid_trace(landscapes[i], sla_ms=slas[i], noise_cv=noise_cv, seed=seed) for i, seed in runs
    ]
    grid = summarise(
        "grid",
        "torchserve-sweep",
        sweeps,
        run_optima,
        trials=trials,
        export_at=export_at,
        confirm=confirm,
    )
    # the sweep's trials to a level are counted without a budget
    methods.append(grid)
    unbounded = {
        level: tuple(
            random_unbounded_trials(
                landscapes[i], sla_ms=slas[i], target_rps=level * optima[i], seed=seed
            )
            for i, seed in runs
        )
        for level in LEVELS
    }
    return Report(
        source=source,
        landscapes=[landscape.source for landscape in landscapes],
        seeds=seeds,
        trials=trials,
        noise_cv=noise_cv,
        n_startup_trials=n_startup_trials,
        methods=methods,
        random_unbounded=unbounded,
        confirm=confirm,
    )


# -- rendering ----------------------------------------------------------------------------------


def _fmt_median(value: float | None, trials: int) -> str:
    return f">{trials}" if value is None else f"{value:g}"


def render(report: Report, console: Console) -> None:
    """The comparison as a table, and the ratio line."""
    console.print(
        f"{report.source}: {len(report.landscapes)} landscape(s) x {report.seeds} seed(s), "
        f"{report.trials} trials, noise CV {report.noise_cv:g}, export after confirming the "
        f"best {report.confirm.top_k if report.confirm else 0}"
    )
    table = Table(
        title="True goodput of the exported configuration (share of the optimum), and trials "
        "until a configuration at 95 % / 99 % was measured"
    )
    table.add_column("search")
    ours = report.method("ours")
    points = sorted(ours.exported) if ours is not None else [report.trials]
    for k in points:
        table.add_column(f"export@{k} median / p10 / worst", justify="right")
    for level in LEVELS:
        table.add_column(f"{level:.0%}: median, share", justify="right")
    table.add_column("seconds", justify="right")
    for method in report.methods:
        name = f"ours ({method.sampler})" if method.name == "ours" else method.name
        cells = [name]
        for k in points:
            s = share_summary(method.exported[k])
            cells.append(f"{s['median']:.1%} / {s['p10']:.1%} / {s['worst']:.1%}")
        for level in LEVELS:
            reach = method.reach[level]
            if method.name == "grid":
                value = reach.median_trials
                cells.append(f"{_fmt_median(value, 10**9)}, {reach.share:.0%}")
            else:
                cells.append(
                    f"{_fmt_median(reach.median_trials, report.trials)}, {reach.share:.0%}"
                )
        cells.append(f"{method.seconds:.1f}" if method.name != "grid" else "-")
        table.add_row(*cells)
    cells = ["random (unbounded)", *("-" for _ in points)]
    for level in LEVELS:
        cells.append(_fmt_median(median_trials(report.random_unbounded.get(level, ())), 10**9))
    table.add_row(*cells, "-")
    console.print(table)
    for level in LEVELS:
        ratio = report.ratio(level)
        shown = "n/a" if ratio is None else f"{ratio:.1f}x"
        console.print(f"to {level:.0%}: random search needs {shown} the trials ours needs")
    missing = sum(m.missing_lookups for m in report.methods if m.name != "grid")
    if missing:
        console.print(
            f"[yellow]{missing} look-ups asked for configurations the landscape lacks; they "
            "counted as failed deployments[/yellow]"
        )


# -- command line -------------------------------------------------------------------------------


def _landscapes(args: argparse.Namespace) -> tuple[list[Landscape], str]:
    if args.landscape is not None:
        files = landscape_files(args.landscape)
        return [read_landscape(f) for f in files], str(args.landscape)
    drawn = landscape_set(args.generated, per_family=args.per_family)
    return [landscape for landscape, _ in drawn], f"generated {args.generated} set"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="How good a configuration the tuner's search exports, and how fast."
    )
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument("--landscape", type=Path, help="a landscape CSV, or a folder of them")
    where.add_argument(
        "--generated",
        choices=SETS,
        help="the generator's tuning or held-out seeds, or the held-out ones in wider ranges",
    )
    parser.add_argument(
        "--per-family", type=int, default=10, help="with --generated: landscapes per family"
    )
    parser.add_argument("--seeds", type=int, default=1, help="replay seeds per landscape")
    parser.add_argument("--trials", type=int, default=30, help="trial budget (default 30)")
    parser.add_argument(
        "--export-at",
        type=int,
        nargs="+",
        default=[20, 30],
        help="also report the export after these many trials (default 20 30)",
    )
    parser.add_argument(
        "--noise", type=float, default=0.0, help="measurement noise, coefficient of variation"
    )
    parser.add_argument(
        "--sla-ms",
        type=float,
        default=None,
        help="P99 SLA (default: each landscape's sla_ms column, else 100)",
    )
    parser.add_argument(
        "--sampler",
        default=DEFAULT_SAMPLER,
        help=f"our sampler: gp, tpe, random, optuna-gp (default {DEFAULT_SAMPLER}, as "
        "autotune run)",
    )
    parser.add_argument(
        "--n-startup-trials",
        type=int,
        default=DEFAULT_N_STARTUP_TRIALS,
        help=f"trials before the model (default {DEFAULT_N_STARTUP_TRIALS}, as autotune run)",
    )
    parser.add_argument(
        "--confirm",
        type=int,
        default=DEFAULT_CONFIRM,
        help=f"confirm the best K after the search, as autotune run (default {DEFAULT_CONFIRM}; "
        "0: export the best measured search trial)",
    )
    parser.add_argument(
        "--repeats",
        type=int,
        default=DEFAULT_REPEATS,
        help=f"re-measurements of each confirmed configuration (default {DEFAULT_REPEATS})",
    )
    parser.add_argument("--no-random", action="store_true", help="skip the random-search runs")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args(argv)
    err = Console(stderr=True)
    for flag, value, low in (
        ("--seeds", args.seeds, 1),
        ("--trials", args.trials, 1),
        ("--per-family", args.per_family, 1),
        ("--confirm", args.confirm, 0),
        ("--repeats", args.repeats, 1),
    ):
        if value < low:
            err.print(f"error: {flag} must be at least {low}, got {value}")
            return 2
    if args.sla_ms is not None and not args.sla_ms > 0:
        err.print(f"error: --sla-ms must be positive, got {args.sla_ms}")
        return 2
    if not 0 <= args.noise < 10:
        err.print(f"error: --noise must be a coefficient of variation >= 0, got {args.noise}")
        return 2

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    # The GP's fits are small: one thread is as fast on an idle host and 2-3x faster on a busy
    # one, where OpenMP threads spin against other processes.
    torch.set_num_threads(1)
    try:
        sampler_factory(args.sampler, n_startup_trials=args.n_startup_trials)
        landscapes, source = _landscapes(args)
        with err.status("searching") as status:
            report = compare(
                landscapes,
                seeds=args.seeds,
                trials=args.trials,
                sla_ms=args.sla_ms,
                noise_cv=args.noise,
                export_at=args.export_at,
                sampler=args.sampler,
                n_startup_trials=args.n_startup_trials,
                include_random=not args.no_random,
                confirm=Confirm(top_k=args.confirm, repeats=args.repeats),
                source=source,
                progress=lambda text: status.update(f"searching: {text}"),
            )
    except AutotuneError as exc:  # LandscapeError, an unknown --sampler
        err.print(f"error: {exc}", highlight=False)
        return 1
    if args.json:
        print(json.dumps(report.as_dict(), indent=2))
    else:
        render(report, Console())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
