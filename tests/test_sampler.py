"""The sampler: never outside the space, never a configuration measured before, and the study's
params are the deployment's own names and values (what the dashboard shows)."""

from __future__ import annotations

from collections.abc import Iterator

import optuna
import pytest

from autotune.space import SearchSpace, TrialConfig
from autotune.study import SAMPLERS, StopRule, Tuner, enqueue_seeds, make_sampler
from autotune.study import schema as A
from autotune.testing import TableEvaluator, generate


@pytest.fixture(autouse=True)
def _quiet() -> Iterator[None]:
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    yield


def _deploys_as(config: TrialConfig, space: SearchSpace) -> TrialConfig:
    if config.batch_size == 1:  # batch 1 ignores the delay
        lowest = space.max_batch_delay_ms[config.device][0]
        return TrialConfig(**{**config.as_dict(), "max_batch_delay_ms": lowest})
    return config


@pytest.mark.parametrize("kind", SAMPLERS)
def test_never_outside_the_space_nor_measured_before(kind: str) -> None:
    landscape, profile = generate("mixed_host", 7)
    space = landscape.space
    sampler = make_sampler(kind, seed=0, n_startup_trials=4, space=space)
    study = optuna.create_study(sampler=sampler, direction="maximize")
    enqueue_seeds(study, space, landscape.hardware())
    tuner = Tuner(
        study=study,
        space=space,
        evaluator=TableEvaluator(landscape, sla_ms=profile.sla_ms, noise_cv=0.15),
        sla_ms=profile.sla_ms,
        stop_rule=StopRule(),
    )
    tuner.run(n_trials=25, timeout_s=None)
    seen = set()
    for t in study.trials:
        config = space.config_from_params(t.params)
        assert space.contains(config)
        assert t.params == space.params_for(config)  # canonical: nothing moved to a neighbour
        assert A.REUSED_FROM not in t.user_attrs
        assert _deploys_as(config, space) not in seen
        seen.add(_deploys_as(config, space))
    assert len(seen) == 25


def test_study_params_are_the_deployments_values() -> None:
    landscape, profile = generate("gpu_detector", 2)
    space = landscape.space
    sampler = make_sampler("gp", seed=0, n_startup_trials=4, space=space)
    study = optuna.create_study(sampler=sampler, direction="maximize")
    for _ in range(6):
        trial = study.ask()
        config = space.suggest(trial)
        study.tell(trial, landscape.feasible_rps(config, profile.sla_ms))
        params = trial.params
        assert params["device"] == config.device
        assert params["batch_size"] == config.batch_size  # 8, not its log2
        assert params["max_batch_delay_ms"] == config.max_batch_delay_ms  # ms, not an index
        assert params["workers"] == config.workers
        assert not any(n.endswith(("_log2", "_index")) or n == "backend" for n in params)


def test_the_space_the_study_stored_is_read_when_none_is_given() -> None:
    landscape, _ = generate("cpu_classifier", 4)
    study = optuna.create_study(sampler=make_sampler("gp", seed=0, n_startup_trials=2))
    study.set_user_attr(A.STUDY_SPACE, landscape.space.to_dict())
    trial = study.ask()
    assert landscape.space.contains(landscape.space.suggest(trial))


def test_an_unknown_kind_is_refused() -> None:
    with pytest.raises(Exception, match="unknown --sampler 'annealing'"):
        make_sampler("annealing", seed=0, n_startup_trials=4)


def test_startup_measures_the_middle_of_each_device_and_precision() -> None:
    landscape, profile = generate("mixed_host", 3)
    space = landscape.space
    study = optuna.create_study(
        sampler=make_sampler("gp", seed=0, n_startup_trials=5, space=space), direction="maximize"
    )
    enqueue_seeds(study, space, landscape.hardware())
    tuner = Tuner(
        study=study,
        space=space,
        evaluator=TableEvaluator(landscape, sla_ms=profile.sla_ms),
        sla_ms=profile.sla_ms,
        stop_rule=None,
    )
    tuner.run(n_trials=5, timeout_s=None)
    startup = [space.config_from_params(t.params) for t in study.trials[2:]]
    assert [(c.device, c.fp16) for c in startup] == [
        ("cuda", True),
        ("cuda", False),
        ("cpu", False),
    ]
    middle = space.batch_size["cuda"][len(space.batch_size["cuda"]) // 2]
    assert startup[0].batch_size == middle and startup[0].workers == space.workers["cuda"][1]
    positive = [d for d in space.max_batch_delay_ms["cuda"] if d > 0]
    assert startup[0].max_batch_delay_ms == positive[(len(positive) - 1) // 2]
    assert not startup[0].torchscript and not startup[0].compile
    cpu = startup[2]
    assert cpu.workers == space.workers["cpu"][1]  # the cores split between two workers


def test_a_local_step_measures_the_best_settings_on_the_other_backends_first() -> None:
    """fp16 at one worker may gain nothing (the CPU part hides it) and double four workers: the
    local step tries the best configuration's own settings on its device's other precisions
    and graph modes before it moves any setting, and never one measured or outside the space."""
    from autotune.study._sampler import SpaceSampler, _counterparts, _Measured, _neighbours

    landscape, _ = generate("gpu_detector", 16)
    space = landscape.space
    sampler = SpaceSampler(space, seed=0, n_startup_trials=0)
    study = optuna.create_study(sampler=sampler, direction="maximize")
    base = TrialConfig(device="cuda", fp16=False, workers=2, batch_size=8, max_batch_delay_ms=5)
    measured = [
        _Measured(config=c, rps=rps, failed=False)
        for c, rps in [
            (base, 200.0),
            (TrialConfig(**{**base.as_dict(), "batch_size": 4}), 150.0),
            (TrialConfig(**{**base.as_dict(), "workers": 1}), 120.0),
        ]
    ]
    taken = {m.config for m in measured}
    free = [c for c in sampler.candidates(space) if c not in taken]
    pick = sampler.choose(study, space, measured, free)  # 3 measured: a local step
    assert pick in _counterparts(base, space)
    assert pick in free and space.contains(pick)
    assert (pick.workers, pick.batch_size, pick.max_batch_delay_ms) == (2, 8, 5)
    # Once one counterpart of the best is measured, a local step may move any setting.
    more = [*measured, _Measured(config=pick, rps=100.0, failed=False)]
    extra = TrialConfig(**{**base.as_dict(), "workers": 4})
    more.append(_Measured(config=extra, rps=90.0, failed=False))
    free = [c for c in free if c not in (pick, extra)]
    nxt = sampler.choose(study, space, more, free)  # 5 measured: a local step again
    assert nxt in free and space.contains(nxt)
    assert any(nxt in _neighbours(m.config, space) for m in more)  # next to a measured one


def test_workers_and_threads_that_fill_the_cores_alike_are_neighbours_for_the_model() -> None:
    """On cpu the model sees the threads of all workers (workers x threads), so w1 t8 and
    w2 t4 differ only in workers: the ridge where workers x threads = cores is smooth."""
    from autotune.study._sampler import _Features

    landscape, _ = generate("cpu_classifier", 4)
    features = _Features(landscape.space)
    base = TrialConfig(device="cpu", workers=1, batch_size=4, max_batch_delay_ms=5,
                       threads_per_worker=8)  # fmt: skip
    traded = TrialConfig(**{**base.as_dict(), "workers": 2, "threads_per_worker": 4})
    more = TrialConfig(**{**base.as_dict(), "workers": 2})
    f0, f1, f2 = features(base), features(traded), features(more)
    i = features.names.index("threads")
    assert f0[i] == f1[i] < f2[i]
    assert all(0.0 <= v <= 1.0 for v in (*f0, *f1, *f2))


def test_a_device_out_of_reach_is_left_once_another_meets_the_sla() -> None:
    """A cpu trial within the cores that missed the SLA by more than twice already on the idle
    server (batch delay taken out), on a host whose cuda trials met it: the cpu configurations
    weigh little."""
    from autotune.study._sampler import _Measured, _reach

    gpu = TrialConfig(device="cuda", workers=1, batch_size=4, max_batch_delay_ms=5)
    cpu = TrialConfig(device="cpu", workers=2, batch_size=4, max_batch_delay_ms=5,
                      threads_per_worker=4)  # fmt: skip
    free = [
        TrialConfig(**{**gpu.as_dict(), "workers": 2}),
        TrialConfig(**{**cpu.as_dict(), "workers": 1}),
    ]
    fast = _Measured(config=gpu, rps=100.0, failed=False)
    slow_cpu = _Measured(config=cpu, rps=0.0, failed=False, slow=5.0)
    near_cpu = _Measured(config=cpu, rps=0.0, failed=False, slow=1.5)
    assert list(_reach([fast, slow_cpu], free, cores=8)) == [1.0, pytest.approx(0.05)]
    assert list(_reach([fast, near_cpu], free, cores=8)) == [1.0, 1.0]  # threads might close 1.5x
    assert list(_reach([slow_cpu], free, cores=8)) == [1.0, 1.0]  # nothing met the SLA
    # 2 workers x 4 threads on 4 cores: the threads oversubscribe the cores and slow every
    # request, so its idle latency says nothing of what the cpu can do within them
    assert list(_reach([fast, slow_cpu], free, cores=4)) == [1.0, 1.0]
    within = _Measured(config=TrialConfig(**{**cpu.as_dict(), "workers": 1}), rps=0.0,
                       failed=False, slow=5.0)  # fmt: skip
    assert list(_reach([fast, slow_cpu, within], free, cores=4)) == [1.0, pytest.approx(0.05)]


def test_a_backend_that_fails_where_its_counterpart_deploys_is_left() -> None:
    """TorchScript that cannot script the model fails on every configuration: once a
    TorchScript deployment failed where the same settings deployed eager (and none of it
    worked), TorchScript weighs little; a failure that eager shares (a memory cliff) is no
    sign, nor is one TorchScript trial that worked."""
    from autotune.study._sampler import _broken, _Measured

    landscape, _ = generate("cpu_classifier", 1001)
    space = landscape.space
    assert (True, False) in space.graphs
    eager = TrialConfig(device="cpu", workers=2, batch_size=8, max_batch_delay_ms=2,
                        threads_per_worker=8)  # fmt: skip
    ts = TrialConfig(**{**eager.as_dict(), "torchscript": True})
    free = [
        TrialConfig(**{**eager.as_dict(), "workers": 4}),
        TrialConfig(**{**ts.as_dict(), "workers": 4}),
    ]
    deployed = _Measured(config=eager, rps=100.0, failed=False)
    over_sla = _Measured(config=eager, rps=0.0, failed=False)  # deployed, too slow
    failed_ts = _Measured(config=ts, rps=0.0, failed=True)
    failed_eager = _Measured(config=eager, rps=0.0, failed=True)
    worked_ts = _Measured(config=free[1], rps=50.0, failed=False)
    assert list(_broken([deployed, failed_ts], free, space)) == [1.0, pytest.approx(0.05)]
    assert list(_broken([over_sla, failed_ts], free, space)) == [1.0, pytest.approx(0.05)]
    assert list(_broken([failed_eager, failed_ts], free, space)) == [1.0, 1.0]
    assert list(_broken([failed_ts], free, space)) == [1.0, 1.0]
    assert list(_broken([deployed, failed_ts, worked_ts], free, space)) == [1.0, 1.0]


def test_fp16_that_fails_where_fp32_deploys_is_left_but_not_the_reverse() -> None:
    """fp16 needs less memory than fp32: an fp32 failure where fp16 deployed is a memory cliff,
    no sign that fp32 is broken; an fp16 failure where fp32 deployed is."""
    from autotune.study._sampler import _broken, _Measured

    landscape, _ = generate("gpu_detector", 16)
    space = landscape.space
    fp32 = TrialConfig(device="cuda", fp16=False, workers=4, batch_size=16, max_batch_delay_ms=5)
    fp16 = TrialConfig(**{**fp32.as_dict(), "fp16": True})
    assert space.contains(fp32) and space.contains(fp16)
    free = [
        TrialConfig(**{**fp32.as_dict(), "workers": 1}),
        TrialConfig(**{**fp16.as_dict(), "workers": 1}),
    ]
    fp32_failed = _Measured(config=fp32, rps=0.0, failed=True)
    fp16_failed = _Measured(config=fp16, rps=0.0, failed=True)
    fp32_ok = _Measured(config=fp32, rps=80.0, failed=False)
    fp16_ok = _Measured(config=fp16, rps=120.0, failed=False)
    assert list(_broken([fp16_ok, fp32_failed], free, space)) == [1.0, 1.0]
    assert list(_broken([fp32_ok, fp16_failed], free, space)) == [1.0, pytest.approx(0.05)]


def test_a_search_on_a_model_torchscript_cannot_script_stops_trying_it() -> None:
    """Tuning landscape 9 of the CPU classifier fails every TorchScript deployment: the search
    (30 trials, noise CV 0.15, as the benchmark runs it) deploys TorchScript twice for these
    seeds, where it did 7-8 times before, once per new best configuration (the broken-backend
    weight alone: 6-8; the local step's feasibility filter does most of it; the weight's own
    cases are tested above)."""
    landscape, profile = generate("cpu_classifier", 9)
    assert profile.broken_graph == "torchscript"
    tried = []
    for seed in range(3):
        study = optuna.create_study(
            sampler=make_sampler("gp", seed=seed, n_startup_trials=4, space=landscape.space),
            direction="maximize",
        )
        enqueue_seeds(study, landscape.space, landscape.hardware())
        evaluator = TableEvaluator(landscape, sla_ms=profile.sla_ms, noise_cv=0.15, seed=seed)
        Tuner(
            study=study,
            space=landscape.space,
            evaluator=evaluator,
            sla_ms=profile.sla_ms,
            stop_rule=StopRule(),
        ).run(n_trials=30, timeout_s=None)
        configs = [TrialConfig.from_dict(t.user_attrs[A.CONFIG]) for t in study.trials]
        assert len(configs) == 30
        tried.append(sum(c.torchscript for c in configs))
    assert max(tried) <= 4, tried
