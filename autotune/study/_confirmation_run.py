"""Confirmation of the winner, as a run: measure the top configurations again, interleaved.

After the search, the ``top_k`` feasible configurations of highest goodput are measured
``repeats`` more times each, round-robin (every configuration once, then every one again), so
that a slow period of the host falls on all of them rather than on one. Each re-measurement is
its own COMPLETE trial, enqueued with the user attr ``confirmation_of`` = the search trial's
number and measured by the evaluator directly (a fresh registration of the model; never the
trial loop's "already measured -> reuse"). The dashboard shows these trials with that attr.
Confirmations already stored count: a resumed study measures only what is missing.

The winner and its figures then follow from ``autotune.study._confirm`` (the highest geometric
mean of all measurements of a configuration wins; its confirmed figure is the lowest of them),
and are written as the study user attr ``winner``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import optuna
from optuna.trial import FrozenTrial, TrialState

from autotune.space import SearchSpace
from autotune.study import _schema as A
from autotune.study._confirm import (
    RULE,
    WINNER_RULE,
    confirmed_winner,
    is_confirmation,
    replicates,
)
from autotune.study._constraint import is_feasible, set_sla_constraint
from autotune.study._result import TrialResult
from autotune.study._study import owner
from autotune.study._tuner import Evaluator, TrialEnd, TrialStart


@dataclass(frozen=True, kw_only=True)
class ConfirmationPlan:
    """Which search trials get confirmed, and how many measurements each still needs."""

    candidates: tuple[int, ...]  # search trial numbers, best first
    missing: dict[int, int]  # search trial -> confirmations still to measure

    @property
    def total(self) -> int:
        return sum(self.missing.values())


def plan_confirmation(trials: list[FrozenTrial], *, top_k: int, repeats: int) -> ConfirmationPlan:
    """The ``top_k`` feasible search trials of highest goodput (one per configuration, ties to
    the earlier trial) and the confirmations each lacks to reach ``repeats``."""
    if top_k < 0 or repeats < 0:
        raise ValueError(
            f"`top_k >= 0 and repeats >= 0` must hold, but got ({top_k=}, {repeats=})."
        )
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    search = [
        t
        for t in complete
        if not is_confirmation(t) and A.REUSED_FROM not in t.user_attrs and is_feasible(t)
    ]
    search.sort(key=lambda t: (-(t.value or 0.0), t.number))
    chosen: list[FrozenTrial] = []
    seen: set[str] = set()
    for trial in search:
        key = repr(sorted(trial.params.items()))
        if key not in seen and (trial.value or 0.0) > 0:
            seen.add(key)
            chosen.append(trial)
        if len(chosen) >= top_k:
            break
    done: dict[int, int] = {}
    for trial in complete:
        origin = trial.user_attrs.get(A.CONFIRMATION_OF)
        if isinstance(origin, int):
            done[origin] = done.get(origin, 0) + 1
    return ConfirmationPlan(
        candidates=tuple(t.number for t in chosen),
        missing={t.number: max(0, repeats - done.get(t.number, 0)) for t in chosen},
    )


def run_confirmation(
    study: optuna.Study,
    evaluator: Evaluator,
    space: SearchSpace,
    *,
    sla_ms: float,
    top_k: int = 3,
    repeats: int = 2,
    on_trial_start: TrialStart | None = None,
    on_trial_end: TrialEnd | None = None,
    on_result: Callable[[optuna.Trial, TrialResult], None] | None = None,
    fallback: Callable[[optuna.Trial], float] | None = None,
) -> ConfirmationPlan:
    """Measure the plan of ``plan_confirmation`` round-robin; record the winner. Returns the plan.

    A trial the queue hands out that is not ours (a seed the search did not reach) goes to
    ``fallback`` (the trial loop's objective) when given; without one it is measured plainly.
    """
    by_number = {t.number: t for t in study.get_trials(deepcopy=False)}
    plan = plan_confirmation(list(by_number.values()), top_k=top_k, repeats=repeats)
    left = dict(plan.missing)
    while any(left.values()):
        for origin in plan.candidates:
            if left[origin] <= 0:
                continue
            left[origin] -= 1
            _measure_once(
                study, evaluator, space, by_number[origin], sla_ms=sla_ms,
                on_trial_start=on_trial_start, on_trial_end=on_trial_end,
                on_result=on_result, fallback=fallback,
            )  # fmt: skip
    record_winner(study)
    return plan


def _measure_once(
    study: optuna.Study,
    evaluator: Evaluator,
    space: SearchSpace,
    origin: FrozenTrial,
    *,
    sla_ms: float,
    on_trial_start: TrialStart | None,
    on_trial_end: TrialEnd | None,
    on_result: Callable[[optuna.Trial, TrialResult], None] | None,
    fallback: Callable[[optuna.Trial], float] | None,
) -> None:
    study.enqueue_trial(dict(origin.params), user_attrs={A.CONFIRMATION_OF: origin.number})
    results: dict[int, TrialResult] = {}
    ours = [False]

    def measure(trial: optuna.Trial) -> float:
        config = space.suggest(trial)
        for key, value in owner().items():
            trial.set_user_attr(key, value)
        if on_trial_start is not None:
            on_trial_start(trial.number, config)
        result = evaluator.evaluate(config)
        for key, value in result.user_attrs(sla_ms).items():
            trial.set_user_attr(key, value)
        set_sla_constraint(trial, result.constraint(sla_ms))
        if on_result is not None:
            on_result(trial, result)
        results[trial.number] = result
        return result.throughput_rps if result.verdict == "feasible" else 0.0

    def objective(trial: optuna.Trial) -> float:
        if trial.user_attrs.get(A.CONFIRMATION_OF) != origin.number:
            return fallback(trial) if fallback is not None else measure(trial)
        ours[0] = True
        previous = replicates(study.get_trials(deepcopy=False)).get(origin.number)
        value = measure(trial)
        figures = [*(previous.throughput_rps if previous else (_goodput(origin),)), value]
        trial.set_user_attr(A.REPLICATES_RPS, [round(v, 3) for v in figures])
        low, high = min(figures), max(figures)
        if low > 0:
            trial.set_user_attr(A.SPREAD, round(high / low, 4))
        return value

    def ended(_: optuna.Study, frozen: FrozenTrial) -> None:
        result = results.pop(frozen.number, None)
        if result is not None and on_trial_end is not None:
            on_trial_end(frozen, result)

    # A seed the search left waiting comes out of the queue first; ours follows it.
    waiting = len(study.get_trials(deepcopy=False, states=(TrialState.WAITING,)))
    for _ in range(waiting):
        study.optimize(objective, n_trials=1, catch=(), callbacks=[ended], gc_after_trial=False)
        if ours[0]:
            break


def _goodput(trial: FrozenTrial) -> float:
    return float(trial.value or 0.0) if is_feasible(trial) else 0.0


def record_winner(study: optuna.Study) -> None:
    """Write the confirmed winner as the study user attr ``winner`` (nothing without one)."""
    winner = confirmed_winner(study.get_trials(deepcopy=False))
    if winner is None:
        return
    spread = winner.spread
    study.set_user_attr(
        A.STUDY_WINNER,
        {
            "trial": winner.trial,
            "confirmed_rps": round(winner.confirmed_rps, 3),
            "replicates_rps": [round(v, 3) for v in winner.throughput_rps],
            "confirmations": list(winner.confirmations),
            "spread": round(spread, 4) if math.isfinite(spread) else None,
            "rule": f"winner: {WINNER_RULE}; confirmed_rps: {RULE}",
        },
    )
