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
