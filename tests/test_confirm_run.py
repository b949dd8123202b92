"""Confirmation of the winner on a noisy table: the lucky first measurement does not repeat,
and the confirmed winner is the configuration that holds its figure."""

from __future__ import annotations

from collections import defaultdict

import optuna
import pytest
from optuna.trial import TrialState

from autotune.space import Hardware, SearchSpace, TrialConfig, builtin_space, load_space
from autotune.study import (
    Replicates,
    TrialResult,
    Tuner,
    confirmed_winner,
    is_confirmation,
    make_sampler,
    plan_confirmation,
    run_confirmation,
)
from autotune.study import schema as A
from autotune.study._confirm import RULE, WINNER_RULE, best_replicates

HW = Hardware(cpu_cores=2)


def cpu(workers: int, batch_size: int) -> TrialConfig:
    return TrialConfig(
        device="cpu", fp16=False, torchscript=True, workers=workers, batch_size=batch_size,
        max_batch_delay_ms=1, threads_per_worker=1,
    )  # fmt: skip


LUCKY, STEADY, SLOW, OVER = cpu(1, 1), cpu(2, 4), cpu(2, 1), cpu(1, 16)
# The goodput each measurement of a configuration gives, in order (the last one repeats).
MEASURED = {
    LUCKY: [300.0, 150.0, 160.0, 155.0],  # a lucky first measurement: the host was quiet
    STEADY: [200.0, 195.0, 205.0, 198.0],
    SLOW: [100.0, 101.0, 99.0],
    OVER: [0.0],
}


class Noisy:
    """Evaluator: the next figure of ``MEASURED`` for the configuration (OVER misses the SLA)."""

    def __init__(self) -> None:
        self.calls: list[TrialConfig] = []
        self.seen: dict[TrialConfig, int] = defaultdict(int)

    def evaluate(self, config: TrialConfig) -> TrialResult:
        self.calls.append(config)
        figures = MEASURED[config]
        value = figures[min(self.seen[config], len(figures) - 1)]
        self.seen[config] += 1
        if value <= 0:
            return TrialResult(config=config, verdict="over_sla", p99_ms=400.0)
        return TrialResult(config=config, verdict="feasible", throughput_rps=value, p99_ms=60.0)


def space() -> SearchSpace:
    return load_space(builtin_space("quick")).filtered(HW)


def searched(evaluator: Noisy) -> tuple[optuna.Study, Tuner]:
    study = optuna.create_study(
        direction="maximize", sampler=make_sampler("random", seed=0, n_startup_trials=1)
    )
    for config in (LUCKY, STEADY, SLOW, OVER):
        study.enqueue_trial(space().params_for(config))
    tuner = Tuner(study=study, space=space(), evaluator=evaluator, sla_ms=100, stop_rule=None)
    tuner.run(n_trials=4, timeout_s=None)
    return study, tuner


def test_the_lucky_first_measurement_does_not_win_once_confirmed() -> None:
    evaluator = Noisy()
    study, _ = searched(evaluator)
    numbers = {evaluator.calls[i]: i for i in range(4)}  # trial number of each configuration
    assert study.best_trial.number == numbers[LUCKY]  # the search alone picks the lucky one

    plan = run_confirmation(study, evaluator, space(), sla_ms=100, top_k=2, repeats=2)
    assert plan.candidates == (numbers[LUCKY], numbers[STEADY])  # best first; SLOW not top-2
    # Every confirmation is a fresh measurement (no reuse), interleaved round-robin.
    assert evaluator.calls[4:] == [LUCKY, STEADY, LUCKY, STEADY]
    trials = study.get_trials(states=(TrialState.COMPLETE,))
    confirmations = [t for t in trials if is_confirmation(t)]
    assert [t.user_attrs[A.CONFIRMATION_OF] for t in confirmations] == [
        numbers[LUCKY], numbers[STEADY], numbers[LUCKY], numbers[STEADY]
    ]  # fmt: skip
    last_lucky = confirmations[2]
    assert last_lucky.user_attrs[A.REPLICATES_RPS] == [300.0, 150.0, 160.0]
    assert last_lucky.user_attrs[A.SPREAD] == pytest.approx(2.0)
    assert last_lucky.user_attrs[A.CONFIG] == LUCKY.as_dict()
    assert A.REUSED_FROM not in last_lucky.user_attrs

    winner = confirmed_winner(trials)
    assert winner is not None and winner.trial == numbers[STEADY]
    assert winner.confirmed_rps == 195.0
    stored = study.user_attrs[A.STUDY_WINNER]
    assert stored["trial"] == numbers[STEADY] and stored["confirmed_rps"] == 195.0
    assert stored["replicates_rps"] == [200.0, 195.0, 205.0]


def test_a_resumed_study_measures_only_the_confirmations_it_lacks() -> None:
    evaluator = Noisy()
    study, _ = searched(evaluator)
    run_confirmation(study, evaluator, space(), sla_ms=100, top_k=2, repeats=1)
    assert len(evaluator.calls) == 4 + 2
    again = run_confirmation(study, evaluator, space(), sla_ms=100, top_k=2, repeats=1)
    assert again.total == 0 and len(evaluator.calls) == 6  # nothing redone
    more = run_confirmation(study, evaluator, space(), sla_ms=100, top_k=3, repeats=2)
    # top 3 by search goodput: LUCKY and STEADY lack one each, SLOW lacks two
    assert more.total == 4
    assert evaluator.calls[6:] == [LUCKY, STEADY, SLOW, SLOW]


def test_a_seed_left_waiting_by_the_search_is_measured_and_confirmation_goes_on() -> None:
    evaluator = Noisy()
    study, tuner = searched(evaluator)
    study.enqueue_trial(space().params_for(cpu(1, 4)))  # e.g. the search hit its timeout
    MEASURED[cpu(1, 4)] = [50.0]
    try:
        run_confirmation(
            study, evaluator, space(), sla_ms=100, top_k=1, repeats=1, fallback=tuner.objective
        )
    finally:
        del MEASURED[cpu(1, 4)]
    assert evaluator.calls[4:] == [cpu(1, 4), LUCKY]
    assert not study.get_trials(states=(TrialState.WAITING,))
    assert sum(is_confirmation(t) for t in study.get_trials()) == 1


def test_the_plan_skips_infeasible_and_reused_trials_and_states_its_rule() -> None:
    evaluator = Noisy()
    study, _ = searched(evaluator)
    plan = plan_confirmation(study.get_trials(), top_k=10, repeats=2)
    assert len(plan.candidates) == 3  # OVER missed the SLA
    assert plan.total == 6
    with pytest.raises(ValueError, match="top_k >= 0"):
        plan_confirmation(study.get_trials(), top_k=-1, repeats=2)


def _reps(trial: int, *rps: float) -> Replicates:
    return Replicates(trial=trial, throughput_rps=rps, p99_ms=(50.0,) * len(rps), confirmations=())


def test_the_winner_has_the_highest_geometric_mean_and_reports_its_lowest() -> None:
    # The lowest measurement would pick STEADY_LOW (98 > 96); the mean of all three picks the
    # configuration that is better on the whole (about 104.5 against 99).
    steady_low = _reps(1, 100.0, 98.0, 99.0)
    better = _reps(2, 110.0, 96.0, 108.0)
    winner = best_replicates([steady_low, better])
    assert winner is better
    assert better.mean_rps == pytest.approx((110.0 * 96.0 * 108.0) ** (1 / 3))
    assert better.confirmed_rps == 96.0  # the figure reported stays the conservative one
    # A configuration with a measurement over the SLA (0) is out, whatever its mean.
    assert best_replicates([_reps(3, 500.0, 0.0, 500.0), steady_low]) is steady_low
    assert best_replicates([_reps(3, 500.0, 0.0, 500.0)]) is None
    # Ties go to the lower median P99, then to the earlier trial.
    fast = Replicates(trial=5, throughput_rps=(100.0,), p99_ms=(40.0,), confirmations=())
    assert best_replicates([_reps(4, 100.0), fast]) is fast
    assert best_replicates([_reps(7, 100.0), _reps(6, 100.0)]).trial == 6  # type: ignore[union-attr]
    assert "geometric mean" in WINNER_RULE and "lowest" in RULE
