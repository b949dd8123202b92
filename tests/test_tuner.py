"""The study loop's logic with a fake evaluator (the real path is in the integration tests)."""

from __future__ import annotations

import math

import optuna
import pytest
from optuna.trial import TrialState

from autotune import _attrs as A
from autotune._config import Hardware, TrialConfig
from autotune._space import SearchSpace, builtin_space, load_space
from autotune._study import best_feasible, make_sampler
from autotune._tuner import StopRule, TrialResult, Tuner, enqueue_seeds

HW = Hardware(cpu_cores=2)


class Table:
    """Evaluator: latency falls with batch size, throughput grows with workers * batch."""

    def __init__(self, idle_ms: float = 20.0) -> None:
        self.idle_ms = idle_ms
        self.calls: list[TrialConfig] = []

    def evaluate(self, config: TrialConfig) -> TrialResult:
        self.calls.append(config)
        p99 = self.idle_ms * (1 + config.batch_size / 4)
        feasible = p99 <= 100
        return TrialResult(
            config=config,
            verdict="feasible" if feasible else "over_sla",
            throughput_rps=10.0 * config.workers * config.batch_size if feasible else 0.0,
            p99_ms=p99,
            idle_latency_ms=self.idle_ms,
        )


def space() -> SearchSpace:
    return load_space(builtin_space("quick")).filtered(HW)


def run(evaluator: Table, n_trials: int) -> Tuner:
    study = optuna.create_study(
        direction="maximize", sampler=make_sampler("random", seed=0, n_startup_trials=1)
    )
    enqueue_seeds(study, space(), HW)
    tuner = Tuner(study=study, space=space(), evaluator=evaluator, sla_ms=100, stop_rule=StopRule())
    tuner.run(n_trials=n_trials, timeout_s=None)
    return tuner


def test_baseline_runs_first_and_every_trial_carries_the_sla_constraint() -> None:
    table = Table()
    tuner = run(table, n_trials=6)
    trials = tuner.study.get_trials(states=(TrialState.COMPLETE,))
    assert len(trials) == 6
    assert trials[0].user_attrs[A.BASELINE] is True
    assert table.calls[0] == space().baseline(HW)
    for trial in trials:
        (constraint,) = trial.system_attrs[A.CONSTRAINTS_SYSTEM_ATTR]
        assert constraint == pytest.approx(min(trial.user_attrs[A.P99_MS] - 100, 1000))
        feasible = trial.user_attrs[A.VERDICT] == "feasible"
        assert (trial.value or 0) > 0 if feasible else trial.value == 0
    best = best_feasible(tuner.study)
    assert best is not None and best.user_attrs[A.P99_MS] <= 100


def test_a_measured_configuration_is_reused_not_deployed_again() -> None:
    table = Table()
    tuner = run(table, n_trials=30)
    configs = [TrialConfig.from_dict(t.user_attrs[A.CONFIG]) for t in tuner.study.trials]
    assert len(table.calls) == len(set(table.calls)), "a configuration was measured twice"
    reused = [t for t in tuner.study.trials if A.REUSED_FROM in t.user_attrs]
    assert len(configs) - len(set(configs)) == len(reused)
    for trial in reused:
        source = tuner.study.trials[trial.user_attrs[A.REUSED_FROM]]
        assert trial.value == source.value and trial.constraints == source.constraints


def test_the_study_stops_early_when_even_idle_requests_are_far_over_the_sla() -> None:
    tuner = run(Table(idle_ms=450.0), n_trials=20)
    assert tuner.stopped_early
    assert len(tuner.study.trials) == StopRule().min_trials


def test_failed_trials_neither_count_nor_block_the_stop_rule() -> None:
    study = optuna.create_study(direction="maximize")
    dist = {"x": optuna.distributions.IntDistribution(0, 10)}

    def add(x: int, attrs: dict[str, object], constraint: float) -> None:
        study.add_trial(
            optuna.trial.create_trial(
                params={"x": x}, distributions=dist, value=0.0, user_attrs=attrs,
                system_attrs={A.CONSTRAINTS_SYSTEM_ATTR: (constraint,)},
            )
        )  # fmt: skip

    add(0, {A.VERDICT: "failed", A.FAILURE: "out of memory"}, 1000.0)
    add(1, {A.IDLE_LATENCY_MS: 900.0}, 800.0)
    add(2, {A.IDLE_LATENCY_MS: 1200.0}, 1000.0)
    rule = StopRule(min_trials=3, factor=2.0)
    assert not rule.hopeless(study, 100)
    add(3, {A.IDLE_LATENCY_MS: 650.0}, 600.0)
    assert rule.hopeless(study, 100)
    add(4, {A.IDLE_LATENCY_MS: 40.0}, -20.0)  # a feasible trial ends the question
    assert not rule.hopeless(study, 100)


def test_constraint_is_capped_and_failures_get_the_cap() -> None:
    assert A.constraint_value(150.0, 100.0, ok=True) == 50.0
    assert A.constraint_value(5000.0, 100.0, ok=True) == 1000.0
    assert A.constraint_value(math.nan, 100.0, ok=True) == 1000.0
    assert A.constraint_value(20.0, 100.0, ok=False) == 1000.0


def test_a_trial_that_errored_violates_the_sla_even_with_a_low_p99() -> None:
    config = TrialConfig()
    errored = TrialResult(config=config, verdict="over_sla", p99_ms=20.0)
    assert errored.constraint(100.0) > 0
    slow = TrialResult(config=config, verdict="over_sla", p99_ms=180.0)
    assert slow.constraint(100.0) == pytest.approx(80.0)
    assert TrialResult(config=config, verdict="feasible", p99_ms=60.0).constraint(100.0) == -40.0
    assert TrialResult(config=config, verdict="failed").constraint(100.0) == 1000.0
