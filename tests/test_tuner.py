"""The study loop's logic with a fake evaluator (the real path is in the integration tests)."""

from __future__ import annotations

import math
import os

import numpy as np
import optuna
import pytest
from optuna.trial import TrialState

from autotune.loadgen import GoodputResult, LoadResult
from autotune.loadgen._stats import summarize
from autotune.serving import result_from_goodput
from autotune.space import Hardware, SearchSpace, TrialConfig, builtin_space, load_space
from autotune.study import (
    StopRule,
    TrialResult,
    Tuner,
    best_feasible,
    enqueue_seeds,
    make_sampler,
    recover_interrupted,
)
from autotune.study import schema as A

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
    dist: dict[str, optuna.distributions.BaseDistribution] = {
        "x": optuna.distributions.IntDistribution(0, 10)
    }

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


def _step(offered: float, latencies_ms: list[float], *, mode: str = "open") -> LoadResult:
    lat = np.asarray(latencies_ms, dtype=np.float64)
    summary = summarize(lat)
    failed = int(np.count_nonzero(~np.isfinite(lat)))
    return LoadResult(
        mode=mode, offered_rps=offered, throughput_rps=0.0, sent=lat.size,
        completed=lat.size - failed, errors=failed,
        errors_by_kind={"unfinished": failed} if failed else {},
        p50_ms=summary.p50_ms, p90_ms=summary.p90_ms, p99_ms=summary.p99_ms,
        p999_ms=summary.p999_ms, max_ms=summary.max_ms, mean_ms=summary.mean_ms,
        duration_s=1.0, schedule_lag_p99_ms=0.0, schedule_lag_max_ms=0.0, client_bound=False,
        latencies_ms=lat,
    )  # fmt: skip


def _failed_search(steps: tuple[LoadResult, ...], idle: LoadResult | None) -> GoodputResult:
    return GoodputResult(
        sla_ms=100, goodput_rps=0.0, best=None, steps=steps, verdict="infeasible",
        idle_latency_ms=60.0, requests=50, idle_probe=idle,
    )  # fmt: skip


CONFIG = TrialConfig(device="cpu", workers=1, batch_size=1, max_batch_delay_ms=1)


def test_an_infeasible_trial_reports_its_gentlest_answered_step() -> None:
    inf = math.inf
    steps = (
        _step(20.0, [90.0, 150.0, 400.0, inf]),
        _step(5.0, [inf, inf]),  # nothing answered in time: no percentiles
        _step(10.0, [70.0, 120.0, 130.0]),
    )
    result = result_from_goodput(CONFIG, _failed_search(steps, None), deploy_s=1, measure_s=1)
    assert result.verdict == "over_sla" and result.offered_rps == 10.0
    assert result.p50_ms == 120.0 and result.p99_ms > 100
    assert {A.P50_MS, A.P90_MS, A.P99_MS} <= set(result.user_attrs(100))


def test_when_no_step_got_an_answer_the_idle_probe_gives_lower_bounds() -> None:
    idle = _step(math.nan, [55.0, 60.0, 65.0], mode="closed")
    steps = (_step(10.0, [math.inf] * 3),)
    result = result_from_goodput(CONFIG, _failed_search(steps, idle), deploy_s=1, measure_s=1)
    assert result.p50_ms == 60.0 and 60.0 < result.p99_ms <= 65.0
    assert {A.P50_MS, A.P90_MS, A.P99_MS} <= set(result.user_attrs(100))
    # the steps' errors still count, and the trial still violates the SLA
    assert result.errors_total == 3 and result.constraint(100) > 0


def test_on_trial_end_sees_the_finished_trial_and_a_best_that_counts_it() -> None:
    """The progress line's "best" is read in on_trial_end: it must include the trial just told."""
    seen: list[tuple[int, TrialState, float | None, int | None]] = []
    study = optuna.create_study(
        direction="maximize", sampler=make_sampler("random", seed=0, n_startup_trials=1)
    )
    enqueue_seeds(study, space(), HW)

    def on_end(trial: optuna.trial.FrozenTrial, result: TrialResult) -> None:
        best = best_feasible(study)
        seen.append((trial.number, trial.state, trial.value, best.number if best else None))
        assert trial.user_attrs[A.THROUGHPUT_RPS] == result.throughput_rps

    tuner = Tuner(study=study, space=space(), evaluator=Table(), sla_ms=100, on_trial_end=on_end)
    tuner.run(n_trials=5, timeout_s=None)
    assert [number for number, *_ in seen] == [0, 1, 2, 3, 4]
    assert all(state == TrialState.COMPLETE for _, state, _, _ in seen)
    # the first trial is feasible (Table: batch 1 is 25 ms): the best after it is itself
    assert seen[0][2] is not None and seen[0][2] > 0 and seen[0][3] == 0
    for number, _, value, best in seen:
        trials = study.get_trials(states=(TrialState.COMPLETE,))[: number + 1]
        top = max(trials, key=lambda t: t.value or 0.0)
        assert best == top.number and (value or 0.0) <= (top.value or 0.0)


def test_a_trial_left_running_by_a_dead_process_is_failed_and_retried_once() -> None:
    import socket
    import subprocess
    import sys

    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()  # its pid no longer runs autotune
    study = optuna.create_study(direction="maximize")
    dist: dict[str, optuna.distributions.BaseDistribution] = {
        "x": optuna.distributions.IntDistribution(0, 10)
    }
    study.enqueue_trial({"x": 3})
    orphan = study.ask(dist)
    orphan.set_user_attr(A.HOST, socket.gethostname())
    orphan.set_user_attr(A.PID, dead.pid)
    mine = study.ask(dist)  # this process's own running trial is left alone
    mine.set_user_attr(A.HOST, socket.gethostname())
    mine.set_user_attr(A.PID, os.getpid())

    assert recover_interrupted(study) == [orphan.number]
    states = {t.number: t.state for t in study.get_trials()}
    assert states[orphan.number] == TrialState.FAIL
    assert states[mine.number] == TrialState.RUNNING
    (waiting,) = study.get_trials(states=(TrialState.WAITING,))
    assert waiting.user_attrs[A.RETRY_OF] == orphan.number
    retry = study.ask(dist)  # the enqueued configuration comes next
    assert retry.number == waiting.number and retry.params == {"x": 3}
    assert recover_interrupted(study) == []  # retried once, not again
