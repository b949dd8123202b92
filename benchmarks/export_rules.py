"""Which configuration to export after a noisy search: confirmation rules replayed side by side.

Runs the default search (``benchmarks/search_efficiency.py``'s ``run_search``: the study code
``autotune run`` uses) once per landscape and replay seed, then applies every rule below to the
same trace and the same re-measurement noise (``autotune.testing.noise_factor``, a draw per
configuration, seed and repeat), and prints the true goodput of what each rule exports as a
share of the optimum (median, 10th percentile, worst, runs under 90 %). ``best measured`` is
the bound no rule can pass: the best configuration the search measured at all.

* ``top 3 x 2`` (what ships: ``--confirm 3 --repeats 2``): the 3 feasible search trials of
  highest measured goodput, 2 more measurements each, the highest geometric mean of all three;
* ``top 3 x 2, repeats only``: the same candidates, judged on the 2 new measurements alone;
* ``top 3 x 2, first at half weight``: the first measurement counts half in the mean;
* ``top 6 x 1`` / ``top 5 x 2``: more candidates (6 and 10 measurements);
* ``halving K -> J``: the top K once more, then the best J of those (by the geometric mean of
  both measurements) once more (K + J measurements);
* ``top 5 x 4`` / ``top 8 x 8``: how far more measurements go (20 and 64);
* ``truly best of the top K (bound)``: what a confirmation of the top K that never erred would
  export.

    python benchmarks/export_rules.py --generated tuning [--per-family 20] [--seeds 2]
        [--noise 0.15] [--trials 30] [--jobs 2] [--traces FILE]

``--traces FILE`` keeps the searches' traces in FILE (a pickle, written when it does not exist,
read when it does), so that rules can be compared again without searching again; a file written
with other ``--generated``, ``--per-family``, ``--seeds``, ``--noise`` or ``--trials`` is refused.
"""

from __future__ import annotations

import argparse
import functools
import math
import pickle
import sys
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import optuna
from rich.console import Console
from rich.table import Table

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # run as a script from a checkout
    sys.path.insert(0, str(ROOT))

from autotune.testing import SETS, Landscape, Profile, landscape_set, noise_factor  # noqa: E402
from benchmarks.search_efficiency import (  # noqa: E402
    DEFAULT_N_STARTUP_TRIALS,
    DEFAULT_SAMPLER,
    Trace,
    run_search,
    sampler_factory,
)

Measure = Callable[[int, int], float]  # (trial index, repeat) -> measured goodput
Rule = Callable[[Sequence[int], Measure], int]  # (candidates best first, measure) -> winner


def _log_mean(values: Sequence[float], weights: Sequence[float] | None = None) -> float:
    if min(values) <= 0:
        return -math.inf
    w = weights or [1.0] * len(values)
    return sum(wi * math.log(v) for wi, v in zip(w, values, strict=True)) / sum(w)


def top(k: int, repeats: int, *, first: float = 1.0) -> Rule:
    """The top ``k`` by measurement, ``repeats`` more each; the first measurement weighs
    ``first`` in the geometric mean (0: the repeats alone)."""

    def rule(ranked: Sequence[int], measure: Measure) -> int:
        def score(i: int) -> float:
            values = [measure(i, r) for r in range(repeats + 1)]
            weights = [first] + [1.0] * repeats
            if first == 0:
                values, weights = values[1:], weights[1:]
            return _log_mean(values, weights)

        return max(ranked[:k], key=score)

    return rule


def halving(first: int, second: int) -> Rule:
    """The top ``first`` once more, then the best ``second`` of them once more."""

    def rule(ranked: Sequence[int], measure: Measure) -> int:
        stage = sorted(ranked[:first], key=lambda i: -_log_mean([measure(i, 0), measure(i, 1)]))
        return max(stage[:second], key=lambda i: _log_mean([measure(i, r) for r in range(3)]))

    return rule


RULES: dict[str, Rule] = {
    "top 3 x 2 (ships)": top(3, 2),
    "top 3 x 2, repeats only": top(3, 2, first=0.0),
    "top 3 x 2, first at half weight": top(3, 2, first=0.5),
    "top 6 x 1": top(6, 1),
    "top 5 x 2": top(5, 2),
    "halving 4 -> 2": halving(4, 2),
    "top 4 x 2": top(4, 2),
    "halving 6 -> 2": halving(6, 2),
    "halving 6 -> 3": halving(6, 3),
    "halving 8 -> 3": halving(8, 3),
    "top 5 x 4": top(5, 4),
    "top 8 x 8": top(8, 8),
}
ORACLES = (3, 8)  # the truly best of the top K by measurement: what a perfect confirmation gets


def exported_shares(trace: Trace, optimum: float, *, trials: int) -> dict[str, float]:
    """Per rule, the true goodput of what it exports from ``trace``, over ``optimum``."""
    feasible = [
        i for i in range(min(trials, len(trace.configs)))
        if trace.deployed[i] and trace.measured_rps[i] > 0
    ]  # fmt: skip
    ranked = sorted(feasible, key=lambda i: (-trace.measured_rps[i], i))

    def measure(i: int, repeat: int) -> float:
        if repeat == 0:
            return trace.measured_rps[i]
        factor = noise_factor(trace.configs[i], cv=trace.noise_cv, seed=trace.seed, repeat=repeat)
        return trace.true_rps[i] * factor

    shares = {
        name: (trace.true_rps[rule(ranked, measure)] / optimum if ranked else 0.0)
        for name, rule in RULES.items()
    }
    for k in ORACLES:
        best = max(trace.true_rps[i] for i in ranked[:k]) if ranked else 0.0
        shares[f"truly best of the top {k} (bound)"] = best / optimum
    shares["best measured (bound)"] = max(trace.true_rps[:trials], default=0.0) / optimum
    return shares


@functools.cache
def _landscapes(which: str, per_family: int) -> list[tuple[Landscape, Profile]]:
    """The set, drawn once per worker process (drawing it is most of a short search's time)."""
    return landscape_set(which, per_family=per_family)


def _search(job: tuple[str, int, int, int, float, int]) -> tuple[Trace, float]:
    """One search (run in a worker process): landscape ``index`` of the set, replay ``seed``."""
    which, per_family, index, seed, noise, trials = job
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    landscape, profile = _landscapes(which, per_family)[index]
    factory = sampler_factory(DEFAULT_SAMPLER, n_startup_trials=DEFAULT_N_STARTUP_TRIALS)
    trace = run_search(
        landscape,
        factory(seed, landscape.space),
        trials=trials,
        sla_ms=profile.sla_ms,
        noise_cv=noise,
        seed=seed,
    )
    return trace, landscape.best(profile.sla_ms)[1]


def _traces(args: argparse.Namespace) -> list[tuple[Trace, float]]:
    """Every (trace, optimum) of the set: read from ``--traces`` when that file exists, else
    searched (``--jobs`` processes) and written there."""
    cache: Path | None = args.traces
    key = {
        "generated": args.generated, "per_family": args.per_family, "seeds": args.seeds,
        "noise": args.noise, "trials": args.trials,
    }  # fmt: skip
    if cache is not None and cache.exists():
        with cache.open("rb") as f:
            stored = pickle.load(f)
        held = stored.get("key") if isinstance(stored, dict) else None
        if held != key:
            raise SystemExit(
                f"--traces {cache} holds the searches of {held}, not of {key}: "
                "give another file, or delete this one to search again"
            )
        loaded: list[tuple[Trace, float]] = stored["traces"]
        return loaded
    count = len(landscape_set(args.generated, per_family=args.per_family))
    jobs = [
        (args.generated, args.per_family, index, seed, args.noise, args.trials)
        for index in range(count)
        for seed in range(args.seeds)
    ]
    with ProcessPoolExecutor(max_workers=args.jobs) as pool:
        traces = list(pool.map(_search, jobs))
    if cache is not None:
        with cache.open("wb") as f:
            pickle.dump({"key": key, "traces": traces}, f)
    return traces


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--generated", choices=SETS, default="tuning")
    parser.add_argument("--per-family", type=int, default=20)
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--noise", type=float, default=0.15)
    parser.add_argument("--trials", type=int, default=30)
    parser.add_argument("--jobs", type=int, default=1, help="search processes side by side")
    parser.add_argument("--traces", type=Path, help="keep the traces in this file (a pickle)")
    args = parser.parse_args(argv)
    traces = _traces(args)
    shares: dict[str, list[float]] = {}
    for trace, optimum in traces:
        for name, share in exported_shares(trace, optimum, trials=args.trials).items():
            shares.setdefault(name, []).append(share)
    runs = len(next(iter(shares.values()), []))
    table = Table(
        title=f"{args.generated} set, {runs} runs, noise CV {args.noise:g}, {args.trials} trials: "
        "true goodput of the export, share of the optimum"
    )
    for column in ("rule", "median", "p10", "worst", "runs < 90 %"):
        table.add_column(column, justify="left" if column == "rule" else "right")
    for name, values in shares.items():
        arr = np.asarray(values)
        table.add_row(
            name,
            f"{np.median(arr):.1%}",
            f"{np.percentile(arr, 10):.1%}",
            f"{arr.min():.1%}",
            f"{int((arr < 0.9).sum())}/{runs}",
        )
    Console().print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
