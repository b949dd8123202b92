"""The samplers a study can use, built from the CLI's name for them."""

from __future__ import annotations

import optuna

from autotune._errors import ConfigError

SAMPLERS = ("gp", "tpe", "random")


def make_sampler(
    kind: str, *, seed: int | None, n_startup_trials: int
) -> optuna.samplers.BaseSampler:
    if kind == "gp":
        # threads_per_worker is asked on cpu trials only (see autotune._space): on a host with
        # a GPU it is drawn at random by design, which the GP need not log at every trial.
        return optuna.samplers.GPSampler(
            seed=seed,
            n_startup_trials=n_startup_trials,
            deterministic_objective=False,
            warn_independent_sampling=False,
        )
    if kind == "tpe":
        return optuna.samplers.TPESampler(seed=seed, n_startup_trials=n_startup_trials)
    if kind == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    raise ConfigError(f"unknown --sampler {kind!r}; use one of: {', '.join(SAMPLERS)}")
