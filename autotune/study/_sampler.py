"""The samplers a study can use, built from the CLI's name for them.

Every kind is a :class:`SpaceSampler`: a sampler over the search space's *configurations*
(Optuna's ``BaseSampler`` public API). The study's params are the deployment's own names and
values (``batch_size`` 8, ``max_batch_delay_ms`` 5: what the dashboard shows); the sampler
maps them to whatever its model works in, and it never proposes a configuration outside the
space or one the study measured (or is measuring) already. Two configurations that deploy
alike count as one: with batch size 1 the batch delay has no effect (a batch of one is never
waited for), so a batch-1 configuration stands for every delay.

* ``gp`` (the default): a Gaussian process over features of the configuration (device,
  precision, graph mode, log2 workers, log2 batch, the delay where the batch is above 1, on cpu
  log2 of the threads of all workers (workers x threads: what shares the cores) and how far
  they oversubscribe the cores, and log2 workers x batch), fitted to the log of the goodput of
  the feasible trials; the infeasible ones (over the SLA, or a deployment that failed) are
  modelled apart, as constrained Bayesian optimisation does: a second GP, on 0/1, gives the
  chance that a configuration is feasible, and the expected improvement is weighed by it (put
  into the goodput model at a floor instead, they pulled its mean down next to them, where the
  optimum often is: the largest batch that still meets the SLA). Its length scales are a prior
  chosen on the tuning seeds of ``autotune.testing``'s landscape generator, only their common
  scale, a linear trend and the noise are fitted (by marginal likelihood, on a small grid).
  The next configuration is the one of highest expected improvement among all the unmeasured
  ones; every second one is taken next to the configuration of highest posterior mean: its
  deployment settings on another precision or graph mode of its device while none of those is
  measured (what fp16 or TorchScript gains depends on the workers and batch: with one worker
  the CPU part may hide it, with four the GPU is the bottleneck), else among the neighbours
  (one setting one step away, or workers and threads traded) of the configurations of highest
  posterior mean; a local step takes no configuration the classifier gives less than an even
  chance of being feasible (it measured TorchScript again after each new best, when the model
  cannot be scripted). A device out of reach
  (every trial on it that deployed missed the SLA by more than 2x already on the idle server,
  the stop rule's reasoning, while another device met the SLA) weighs 0.05, and so does a
  backend (device, precision, graph mode) that never deployed while one of its failures
  deployed in another graph mode of its precision, or for fp16 in fp32 (a model TorchScript
  cannot script; an fp32 failure where fp16 deployed is a memory cliff, no sign). A cpu trial
  whose workers x threads oversubscribe the cores is no evidence of reach (there the threads
  slow every request: found on a trace of the ``wide`` set, w32 x t32 on 32 cores). The first
  ``n_startup_trials`` trials (the enqueued ones included) are the middle points of each
  device and precision (cuda fp16, cuda fp32, cpu) instead.
* ``tpe``: Optuna's ``TPESampler`` on the encoded form of the space (``backend``,
  ``batch_size_log2``...), through a private in-memory study that mirrors this one.
* ``random``: a configuration drawn uniformly among the unmeasured ones.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

import numpy as np
import optuna
from optuna.distributions import BaseDistribution
from optuna.trial import FrozenTrial, TrialState

from autotune._errors import ConfigError
from autotune.space import SearchSpace, TrialConfig
from autotune.study import _schema as A

__all__ = ["SAMPLERS", "SpaceSampler", "make_sampler"]

SAMPLERS = ("gp", "tpe", "random")

# The GP's prior length scales per feature (features in [0, 1]); see the module docstring.
_LENGTH_SCALES: Final = {
    "cpu": 0.5,
    "fp16": 0.8,
    "torchscript": 1.5,
    "compile": 1.5,
    "workers": 0.5,
    "batch": 0.45,
    "delay": 0.6,
    "threads": 0.6,
    "oversub": 0.5,
    "memory": 0.4,
}
_SCALES: Final = (0.5, 0.75, 1.0, 1.5)  # the fitted common factor of the length scales
_NOISES: Final = (1e-2, 0.05, 0.15, 0.3, 0.6)  # the fitted noise variance (of standardised values)
_LINEAR: tuple[float, ...] = (0.0, 0.1, 0.3)  # the fitted weight of a linear trend
_LOCAL_EVERY: int = 2  # every n-th model trial looks only next to the best ones (0: never)
_COUNTERPART: bool = True  # a local step measures the best one's settings on another backend
_UCB_BETA: float = 0.0  # 0: expected improvement; else upper confidence bound mean + beta sd
_P_MIN: Final = 0.02  # the lowest chance of being feasible the classifier gives
_MAX_CANDIDATES: Final = 20_000
_HOPELESS: float = 2.0  # as StopRule.factor
_HOPELESS_WEIGHT: float = 0.05
_BROKEN_WEIGHT: float = 0.05  # a backend that failed where its counterpart deployed
_LOCAL_P_OK: float = 0.5  # a local step takes no configuration less likely feasible


def _canonical(config: TrialConfig, space: SearchSpace) -> TrialConfig:
    """One representative of the configurations that deploy alike (batch 1: the lowest delay)."""
    if config.batch_size == 1:
        lowest = space.max_batch_delay_ms[config.device][0]
        if config.max_batch_delay_ms != lowest:
            return TrialConfig(**{**config.as_dict(), "max_batch_delay_ms": lowest})
    return config


@dataclass(frozen=True, kw_only=True)
class _Measured:
    config: TrialConfig
    rps: float  # 0: over the SLA, or failed
    failed: bool  # the deployment failed (out of memory, a graph mode that does not work)
    slow: float = 0.0  # over the SLA: the idle latency (batch delay taken out) / the SLA


class _Features:
    """Configurations as points of [0, 1]^d."""

    def __init__(self, space: SearchSpace) -> None:
        self.space = space
        workers = space.workers.union()
        batch = space.batch_size.union()
        delay = space.max_batch_delay_ms.union()
        threads = [t for t in space.threads_per_worker if t > 0] or [1]
        self.cores = max([*threads, *space.workers["cpu"]]) if "cpu" in space.devices else 1

        def span(values: Sequence[int]) -> tuple[float, float]:
            lo, hi = math.log2(max(values[0], 1)), math.log2(max(values[-1], 1))
            return lo, max(hi - lo, 1e-9)

        self.w, self.b = span(workers), span(batch)
        self.wt = span([workers[0] * threads[0], workers[-1] * threads[-1]])
        self.m = span([workers[0] * batch[0], workers[-1] * batch[-1]])
        self.d = math.log1p(delay[-1]) or 1.0
        self.names = list(_LENGTH_SCALES)

    def __call__(self, c: TrialConfig) -> list[float]:
        cpu = c.device == "cpu"
        threads = max(c.threads_per_worker, 1) if cpu else 1
        oversub = max(0.0, math.log2(c.workers * threads / self.cores)) / 4 if cpu else 0.0
        return [
            float(cpu),
            float(c.fp16),
            float(c.torchscript),
            float(c.compile),
            (math.log2(c.workers) - self.w[0]) / self.w[1],
            (math.log2(c.batch_size) - self.b[0]) / self.b[1],
            math.log1p(c.max_batch_delay_ms) / self.d if c.batch_size > 1 else 0.0,
            (math.log2(c.workers * threads) - self.wt[0]) / self.wt[1] if cpu else 0.0,
            oversub,
            (math.log2(c.workers * c.batch_size) - self.m[0]) / self.m[1],
        ]


def _matern52(x: np.ndarray, y: np.ndarray, ls: np.ndarray) -> np.ndarray:
    diff = (x[:, None, :] - y[None, :, :]) / ls
    r = np.sqrt(np.maximum((diff * diff).sum(-1), 0.0)) * math.sqrt(5.0)
    k: np.ndarray = (1.0 + r + r * r / 3.0) * np.exp(-r)
    return k


def _expected_improvement(mean: np.ndarray, sd: np.ndarray, best: float) -> np.ndarray:
    z = (mean - best) / sd
    cdf = 0.5 * (1.0 + _erf(z / math.sqrt(2.0)))
    pdf = np.exp(-0.5 * z * z) / math.sqrt(2.0 * math.pi)
    ei: np.ndarray = (mean - best) * cdf + sd * pdf
    return ei


_erf = np.vectorize(math.erf, otypes=[float])


class _GP:
    """A small GP with fixed relative length scales; common scale and noise by likelihood."""

    def __init__(
        self, x: np.ndarray, y: np.ndarray, base: np.ndarray, *, standardise: bool = True
    ) -> None:
        self.x = x
        self.mu, self.sd = (float(y.mean()), float(y.std()) or 1.0) if standardise else (0.0, 1.0)
        z = (y - self.mu) / self.sd
        self.center = x.mean(0)
        xc = x - self.center
        lin = xc @ xc.T
        best: tuple[float, Any] | None = None
        for scale in _SCALES:
            k0 = _matern52(x, x, base * scale)
            for weight in _LINEAR if standardise else (0.0,):
                k = k0 + weight * lin
                for noise in _NOISES:
                    try:
                        chol = np.linalg.cholesky(k + noise * np.eye(len(x)))
                    except np.linalg.LinAlgError:
                        continue
                    alpha = np.linalg.solve(chol.T, np.linalg.solve(chol, z))
                    nll = 0.5 * float(z @ alpha) + float(np.log(np.diag(chol)).sum())
                    if best is None or nll < best[0]:
                        best = (nll, (base * scale, weight, chol, alpha, noise))
        assert best is not None
        self.ls, self.linear, self.chol, self.alpha, self.noise = best[1]

    def predict(self, xs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Posterior mean and standard deviation of the latent (noise-free) value."""
        ks = _matern52(xs, self.x, self.ls)
        xc = xs - self.center
        prior = 1.0 + self.linear * (xc * xc).sum(1)
        if self.linear:
            ks = ks + self.linear * xc @ (self.x - self.center).T
        mean = ks @ self.alpha
        v = np.linalg.solve(self.chol, ks.T)
        var = np.maximum(prior - (v * v).sum(0), 1e-12)
        return self.mu + self.sd * mean, self.sd * np.sqrt(var)


class SpaceSampler(optuna.samplers.BaseSampler):
    """A sampler over the configurations of ``space`` (see the module docstring).

    Without ``space`` it reads the space the study stored (``autotune run`` stores it in the
    study's user attrs); a study without one gets Optuna's random sampling.
    """

    def __init__(
        self,
        space: SearchSpace | None = None,
        *,
        kind: str = "gp",
        seed: int | None = None,
        n_startup_trials: int = 4,
    ) -> None:
        if kind not in SAMPLERS:
            raise ConfigError(f"unknown --sampler {kind!r}; use one of: {', '.join(SAMPLERS)}")
        if n_startup_trials < 0:
            raise ConfigError(f"--n-startup-trials must be >= 0, got {n_startup_trials}")
        self._space = space
        self.kind = kind
        self.n_startup_trials = n_startup_trials
        self._seed = seed
        self._rng = np.random.default_rng(seed)
        self._fallback = optuna.samplers.RandomSampler(seed=seed)
        self._shadow: optuna.Study | None = None
        self._mirrored: set[int] = set()
        self._candidates: list[TrialConfig] | None = None

    # -- what the study holds -------------------------------------------------------------

    def space_of(self, study: optuna.Study) -> SearchSpace | None:
        if self._space is None:
            stored = study.user_attrs.get(A.STUDY_SPACE)
            if isinstance(stored, Mapping):
                self._space = SearchSpace.from_dict(stored)
        return self._space

    def candidates(self, space: SearchSpace) -> list[TrialConfig]:
        """The distinct deployments of the space (one configuration each)."""
        if self._candidates is None:
            seen: dict[TrialConfig, None] = {}
            for config in space.configs():
                seen.setdefault(_canonical(config, space), None)
                if len(seen) > _MAX_CANDIDATES:
                    break
            self._candidates = list(seen)
        return self._candidates

    @staticmethod
    def _config(space: SearchSpace, trial: FrozenTrial) -> TrialConfig | None:
        stored = trial.user_attrs.get(A.CONFIG)
        # an enqueued trial that has not started holds its params as fixed_params
        fixed = (
            trial.system_attrs.get("fixed_params") if trial.state == TrialState.WAITING else None
        )
        try:
            if isinstance(stored, Mapping):
                return TrialConfig.from_dict(dict(stored))
            if trial.params:
                return space.config_from_params(trial.params)
            if isinstance(fixed, Mapping):
                return space.config_from_params(fixed)
        except (ConfigError, TypeError, ValueError):
            return None
        return None

    def _history(
        self, study: optuna.Study, space: SearchSpace
    ) -> tuple[list[_Measured], set[TrialConfig]]:
        """(measured configurations with their goodput, every configuration taken)."""
        measured: dict[TrialConfig, _Measured] = {}
        taken: set[TrialConfig] = set()
        for t in study.get_trials(deepcopy=False):
            config = self._config(space, t)
            if config is None:
                continue
            config = _canonical(config, space)
            if t.state == TrialState.COMPLETE:
                if A.REUSED_FROM in t.user_attrs or config in measured:
                    continue
                failed = t.user_attrs.get(A.VERDICT) == "failed"
                rps = float(t.value or 0.0) if t.values else 0.0
                measured[config] = _Measured(
                    config=config, rps=rps, failed=failed, slow=_slowness(t, config)
                )
                taken.add(config)
            elif t.state in (TrialState.RUNNING, TrialState.WAITING):
                taken.add(config)
        return list(measured.values()), taken

    # -- BaseSampler ------------------------------------------------------------------------

    def infer_relative_search_space(
        self, study: optuna.Study, trial: FrozenTrial
    ) -> dict[str, BaseDistribution]:
        space = self.space_of(study)
        if space is None:
            return {}
        return space.distributions()

    def sample_relative(
        self, study: optuna.Study, trial: FrozenTrial, search_space: dict[str, BaseDistribution]
    ) -> dict[str, Any]:
        space = self.space_of(study)
        if space is None or not search_space:
            return {}
        measured, taken = self._history(study, space)
        free = [c for c in self.candidates(space) if c not in taken]
        if not free:  # every configuration measured: the tuner reuses one
            free = self.candidates(space)
        config = self.choose(study, space, measured, free)
        return space.params_for(config)

    def sample_independent(
        self,
        study: optuna.Study,
        trial: FrozenTrial,
        param_name: str,
        param_distribution: BaseDistribution,
    ) -> Any:
        return self._fallback.sample_independent(study, trial, param_name, param_distribution)

    def reseed_rng(self) -> None:
        self._rng = np.random.default_rng()
        self._fallback.reseed_rng()

    # -- the choice ---------------------------------------------------------------------------

    def choose(
        self,
        study: optuna.Study,
        space: SearchSpace,
        measured: Sequence[_Measured],
        free: Sequence[TrialConfig],
    ) -> TrialConfig:
        """The next configuration among ``free``."""
        if self.kind == "random":
            return free[int(self._rng.integers(len(free)))]
        if self.kind == "tpe":
            return self._tpe(study, space, free)
        features = _Features(space)
        xs = np.array([features(c) for c in free])
        jitter = 1e-9 * self._rng.random(len(free))
        if len(measured) < self.n_startup_trials:
            design = _design(space, free)
            if design is not None:
                return design
            if sum(m.rps > 0 for m in measured) < 2:  # too little for the model
                return free[self._farthest(features, measured, xs)]
        base = np.array([_LENGTH_SCALES[n] for n in features.names])
        # Constrained BO: the goodput model sees the feasible trials only; a classifier (a GP on
        # 0/1) gives the chance that a configuration is feasible (deploys and meets the SLA).
        # Put into the goodput model at a floor, the infeasible trials pulled its mean down
        # next to them, and the optimum is often next to them (the largest batch that still
        # meets the SLA, the most workers that still fit).
        p_ok = np.ones(len(free))
        if any(m.rps <= 0 for m in measured):
            x_all = np.array([features(m.config) for m in measured])
            out = np.array([float(m.rps <= 0) for m in measured])
            out_gp = _GP(x_all, out, base, standardise=False)
            p_ok = np.clip(1.0 - out_gp.predict(xs)[0], _P_MIN, 1.0)
        p_ok = p_ok * _reach(measured, free, cores=features.cores) * _broken(measured, free, space)
        ok = [m for m in measured if m.rps > 0]
        if len(ok) < 2:
            return free[self._farthest(features, measured, xs, weight=p_ok)]
        x = np.array([features(m.config) for m in ok])
        y = np.log([m.rps for m in ok])
        gp = _GP(x, y, base)
        mean, sd = gp.predict(xs)
        if _UCB_BETA:
            ucb = mean + _UCB_BETA * sd
            ei = (ucb - ucb.min() + 1e-9) * p_ok
        else:
            incumbent = float(gp.predict(x)[0].max())
            ei = _expected_improvement(mean, sd, incumbent) * p_ok
        if _LOCAL_EVERY and len(measured) % _LOCAL_EVERY == 1:
            # Next to the configurations of highest posterior mean: first the best one's settings
            # on its device's other backends (while none is measured), else one setting moved.
            fitted = gp.predict(x)[0]
            index = {c: i for i, c in enumerate(free)}
            if _COUNTERPART:
                top = ok[int(np.argmax(fitted))].config
                others = _counterparts(top, space)
                done = {m.config for m in measured}
                if not any(c in done for c in others):
                    near = [
                        index[c] for c in others if c in index and p_ok[index[c]] >= _LOCAL_P_OK
                    ]
                    if near:
                        return free[max(near, key=lambda i: ei[i] + jitter[i])]
            for j in np.argsort(-fitted)[:3]:
                near = [
                    index[c]
                    for c in _neighbours(ok[int(j)].config, space)
                    if c in index and p_ok[index[c]] >= _LOCAL_P_OK
                ]
                if near:
                    return free[max(near, key=lambda i: ei[i] + jitter[i])]
        return free[int(np.argmax(ei + jitter))]

    def _farthest(
        self,
        features: _Features,
        measured: Sequence[_Measured],
        xs: np.ndarray,
        weight: np.ndarray | None = None,
    ) -> int:
        """The free configuration farthest from every measured one (ties at random)."""
        jitter = 1e-9 * self._rng.random(len(xs))
        if not measured:
            return int(np.argmax(jitter))
        x = np.array([features(m.config) for m in measured])
        d = ((xs[:, None, :] - x[None, :, :]) ** 2).sum(-1).min(1)
        if weight is not None:
            d = d * weight
        return int(np.argmax(d + jitter))

    def _tpe(
        self, study: optuna.Study, space: SearchSpace, free: Sequence[TrialConfig]
    ) -> TrialConfig:
        """Optuna's TPE on the encoded form, through a mirror study (public API only)."""
        if self._shadow is None:
            self._shadow = optuna.create_study(
                storage=optuna.storages.InMemoryStorage(),
                sampler=optuna.samplers.TPESampler(
                    seed=self._seed, n_startup_trials=self.n_startup_trials
                ),
                direction="maximize",
            )
        dists = space.encoded_distributions()
        for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
            config = self._config(space, t)
            if t.number in self._mirrored or config is None:
                continue
            params = space.encoded_params_for(config)
            self._shadow.add_trial(
                optuna.trial.create_trial(
                    params=params,
                    distributions={k: dists[k] for k in params},
                    value=float(t.value or 0.0),
                )
            )
            self._mirrored.add(t.number)
        ask = self._shadow.ask()
        asked: dict[str, Any] = {}
        for name, dist in dists.items():
            if name.startswith("threads_per_worker") and asked["backend"] != "cpu_fp32":
                continue
            asked[name] = _suggest(ask, name, dist)
        self._shadow.tell(ask, state=TrialState.FAIL)
        config = _canonical(space.config_from_params(asked), space)
        if config in free:
            return config
        return free[int(self._rng.integers(len(free)))]


def _suggest(trial: optuna.Trial, name: str, dist: BaseDistribution) -> Any:
    if isinstance(dist, optuna.distributions.CategoricalDistribution):
        return trial.suggest_categorical(name, dist.choices)
    assert isinstance(dist, optuna.distributions.IntDistribution)
    return trial.suggest_int(name, dist.low, dist.high, log=dist.log)


def _neighbours(config: TrialConfig, space: SearchSpace) -> list[TrialConfig]:
    """The configurations one step away: one setting moved to a neighbouring value (or another
    graph mode / precision), or workers and threads traded (twice the workers, half the
    threads, and back)."""
    device = config.device
    out: list[TrialConfig] = []

    def moved(name: str, values: Sequence[int]) -> None:
        value = getattr(config, name)
        if value not in values:
            return
        i = values.index(value)
        for j in (i - 1, i + 1):
            if 0 <= j < len(values):
                out.append(TrialConfig(**{**config.as_dict(), name: values[j]}))

    moved("workers", space.workers[device])
    moved("batch_size", space.batch_size[device])
    if config.batch_size > 1:
        moved("max_batch_delay_ms", space.max_batch_delay_ms[device])
    if device == "cpu":
        threads = space.threads_per_worker
        moved("threads_per_worker", threads)
        workers = space.workers[device]
        for w, t in ((config.workers * 2, config.threads_per_worker // 2),
                     (config.workers // 2, config.threads_per_worker * 2)):  # fmt: skip
            if w in workers and t in threads:
                out.append(
                    TrialConfig(**{**config.as_dict(), "workers": w, "threads_per_worker": t})
                )
    for ts, comp in space.graphs:
        if (ts, comp) != (config.torchscript, config.compile):
            out.append(TrialConfig(**{**config.as_dict(), "torchscript": ts, "compile": comp}))
    if device == "cuda":
        for b in space.backends:
            if b.device == "cuda" and b.fp16 != config.fp16:
                out.append(TrialConfig(**{**config.as_dict(), "fp16": b.fp16}))
    return [_canonical(c, space) for c in out if space.contains(c)]


def _counterparts(config: TrialConfig, space: SearchSpace) -> list[TrialConfig]:
    """The same deployment settings on the other precisions and graph modes of its device."""
    out: list[TrialConfig] = []
    for b in space.backends:
        if b.device != config.device:
            continue
        for ts, comp in space.graphs:
            if (b.fp16, ts, comp) != (config.fp16, config.torchscript, config.compile):
                c = TrialConfig(
                    **{**config.as_dict(), "fp16": b.fp16, "torchscript": ts, "compile": comp}
                )
                if space.contains(c):
                    out.append(_canonical(c, space))
    return out


def _design(space: SearchSpace, free: Sequence[TrialConfig]) -> TrialConfig | None:
    """A prior design point: the middle point of the first device and precision (fp16, fp32 on
    cuda, then cpu) whose middle point is still free: the middle batch size, eager, two
    workers (the second fewest), on cuda the middle delay above 0 (a batch fills at a moderate
    rate only with time to gather), on cpu the lowest delay above 0 and the cores split
    between the two workers.
    The seeds are corners (the default, the latency-first one); the middle points are where
    the model learns most, where a far corner would often miss the SLA or run out of memory.
    None when every middle point is taken."""
    order = sorted(space.backends, key=lambda b: (b.device != "cuda", not b.fp16))
    for backend in order:
        device = backend.device
        batch = space.batch_size[device]
        delays = space.max_batch_delay_ms[device]
        workers = space.workers[device]
        threads = [t for t in space.threads_per_worker if t > 0]
        positive = [d for d in delays if d > 0] or list(delays)
        delay = positive[0]
        w = workers[min(1, len(workers) - 1)]
        t = 0
        if device == "cuda":
            delay = positive[(len(positive) - 1) // 2]
        else:
            cores = max([*threads, *workers]) if threads else 1
            t = min(threads, key=lambda v: abs(v * w - cores)) if threads else 0
        config = space.nearest(
            TrialConfig(
                device=device,
                fp16=backend.fp16,
                workers=w,
                batch_size=batch[len(batch) // 2],
                max_batch_delay_ms=delay,
                threads_per_worker=t,
            )
        )
        config = _canonical(config, space)
        if config in free:
            return config
    return None


def _slowness(trial: FrozenTrial, config: TrialConfig) -> float:
    """How far a trial over the SLA missed it already on the idle server: its idle latency
    without the batch delay (which a single request waits for) over the SLA; 0 if feasible or
    unknown."""
    if trial.values and (trial.value or 0.0) > 0:
        return 0.0
    idle, sla = trial.user_attrs.get(A.IDLE_LATENCY_MS), trial.user_attrs.get(A.SLA_MS)
    if not isinstance(idle, int | float) or not isinstance(sla, int | float) or sla <= 0:
        return 0.0
    delay = config.max_batch_delay_ms if config.batch_size > 1 else 0
    return max(0.0, float(idle) - delay) / float(sla)


def _reach(measured: Sequence[_Measured], free: Sequence[TrialConfig], *, cores: int) -> np.ndarray:
    """A weight per free configuration: small on a device out of reach, where every trial
    that deployed missed the SLA by more than ``_HOPELESS`` x already on the idle server
    (as the stop rule reasons: batching and workers add throughput, not single-request speed)
    while another device met it; 1 elsewhere. A cpu trial whose threads oversubscribe the
    ``cores`` (workers x threads above them) is no evidence: there the threads slow every
    request, and a configuration within the cores can be many times faster. ``cores`` is the
    space's own bound (the most workers or threads per worker it offers; a space is cut to the
    host's cores), never above the host's, so the rule errs towards keeping the cpu."""
    weight = np.ones(len(free))
    if not _HOPELESS or not any(m.rps > 0 for m in measured):
        return weight
    for device in ("cpu", "cuda"):
        deployed = [
            m
            for m in measured
            if m.config.device == device and not m.failed and not _oversubscribed(m.config, cores)
        ]
        if deployed and all(m.rps <= 0 and m.slow > _HOPELESS for m in deployed):
            weight[[c.device == device for c in free]] = _HOPELESS_WEIGHT
    return weight


def _oversubscribed(config: TrialConfig, cores: int) -> bool:
    return config.device == "cpu" and config.workers * max(config.threads_per_worker, 1) > cores


def _backend(config: TrialConfig) -> tuple[str, bool, bool, bool]:
    return (config.device, config.fp16, config.torchscript, config.compile)


def _broken(
    measured: Sequence[_Measured], free: Sequence[TrialConfig], space: SearchSpace
) -> np.ndarray:
    """A weight per free configuration: ``_BROKEN_WEIGHT`` on a backend (device, precision,
    graph mode) none of whose deployments worked while one of them failed where the same
    settings deployed in another graph mode of its precision, or, for fp16, in fp32 (which
    needs more memory): a model TorchScript cannot script, a compile or an fp16 that does not
    work for it fails on every configuration. An fp32 failure where fp16 deployed is no sign
    (fp16 needs less memory: a memory cliff), nor a failure every backend shares; 1
    elsewhere. One such failure is enough (it may have been a server that died): the weight
    leaves the backend to the expected improvement's last resort, and one of its deployments
    that works lifts it."""
    weight = np.ones(len(free))
    if not _BROKEN_WEIGHT:
        return weight
    deployed = {m.config for m in measured if not m.failed}
    by_backend: dict[tuple[str, bool, bool, bool], list[_Measured]] = {}
    for m in measured:
        by_backend.setdefault(_backend(m.config), []).append(m)
    for backend, ms in by_backend.items():
        if all(m.failed for m in ms) and any(
            other in deployed and (other.fp16 == m.config.fp16 or m.config.fp16)
            for m in ms
            for other in _counterparts(m.config, space)
        ):
            weight[[_backend(c) == backend for c in free]] = _BROKEN_WEIGHT
    return weight


def make_sampler(
    kind: str,
    *,
    seed: int | None,
    n_startup_trials: int,
    space: SearchSpace | None = None,
) -> optuna.samplers.BaseSampler:
    """The sampler ``autotune run --sampler KIND`` uses (see the module docstring)."""
    return SpaceSampler(space, kind=kind, seed=seed, n_startup_trials=n_startup_trials)
