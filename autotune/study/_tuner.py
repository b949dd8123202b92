"""The study loop: ask a configuration, evaluate it, record it; the seeds and the stop rule.

The study code (``Tuner``) only sees an ``Evaluator``: ``autotune.serving.TorchServeEvaluator``
deploys for real and measures with the load generator; ``autotune.testing.TableEvaluator``
is a table look-up for the search-efficiency benchmark and the tests.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal, Protocol

import optuna
from optuna.trial import FrozenTrial, TrialState

from autotune.space import Hardware, SearchSpace, TrialConfig
from autotune.study import _schema as A
from autotune.study._constraint import is_feasible, set_sla_constraint
from autotune.study._result import TrialResult
from autotune.study._study import count_complete, owner


class Evaluator(Protocol):
    """Turns a configuration into a measured result (deploy + measure, or a table look-up)."""

    def evaluate(self, config: TrialConfig) -> TrialResult: ...


TrialStart = Callable[[int, TrialConfig], None]
# Called from ``study.optimize(callbacks=...)``: the trial is finished (COMPLETE, its value told).
TrialEnd = Callable[[FrozenTrial, TrialResult], None]


@dataclass(frozen=True, kw_only=True)
class StopRule:
    """Stop a study early when the SLA is clearly out of reach on this host.

    After ``min_trials`` completed trials with none feasible, when every one of them was over
    ``factor`` x SLA already for single requests on an idle server, no setting the space offers
    can close that gap (batching and workers add throughput, not single-request speed).
    """

    min_trials: int = 3
    factor: float = 2.0

    def hopeless(self, study: optuna.Study, sla_ms: float) -> bool:
        done = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
        if any(is_feasible(t) for t in done):
            return False
        # Trials whose deployment failed measured nothing: they neither count nor block.
        idle = [t.user_attrs.get(A.IDLE_LATENCY_MS) for t in done]
        measured = [float(v) for v in idle if isinstance(v, int | float)]
        return len(measured) >= self.min_trials and all(v > self.factor * sla_ms for v in measured)


class Tuner:
    """Runs the study: asks a configuration, evaluates it, records the result."""

    def __init__(
        self,
        *,
        study: optuna.Study,
        space: SearchSpace,
        evaluator: Evaluator,
        sla_ms: float,
        on_trial_start: TrialStart | None = None,
        on_trial_end: TrialEnd | None = None,
        on_result: Callable[[optuna.Trial, TrialResult], None] | None = None,
        stop_rule: StopRule | None = StopRule(),
    ) -> None:
        self.study = study
        self.space = space
        self.evaluator = evaluator
        self.sla_ms = sla_ms
        self.on_trial_start = on_trial_start
        self.on_trial_end = on_trial_end
        self.on_result = on_result
        self.stop_rule = stop_rule
        self.stopped_early = False
        self._results: dict[int, TrialResult] = {}  # by trial number, until the trial ends

    def _measured(self, config: TrialConfig) -> FrozenTrial | None:
        for trial in self.study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
            if trial.user_attrs.get(A.CONFIG) == config.as_dict() and A.REUSED_FROM not in (
                trial.user_attrs
            ):
                return trial
        return None

    def objective(self, trial: optuna.Trial) -> float:
        config = self.space.suggest(trial)
        for key, value in owner().items():
            trial.set_user_attr(key, value)
        if self.on_trial_start is not None:
            self.on_trial_start(trial.number, config)
        previous = self._measured(config)
        if previous is not None:
            # The same configuration was measured already: reuse it instead of re-deploying.
            for key, value in previous.user_attrs.items():
                if key not in (A.HOST, A.PID, A.RETRY_OF, A.BASELINE):
                    trial.set_user_attr(key, value)
            trial.set_user_attr(A.REUSED_FROM, previous.number)
            set_sla_constraint(trial, max(previous.constraints.values()))
            result = TrialResult(
                config=config,
                verdict=previous.user_attrs.get(A.VERDICT, "over_sla"),
                throughput_rps=float(previous.value or 0.0),
                p99_ms=previous.user_attrs.get(A.P99_MS) or math.nan,
            )
        else:
            result = self.evaluator.evaluate(config)
            for key, value in result.user_attrs(self.sla_ms).items():
                trial.set_user_attr(key, value)
            set_sla_constraint(trial, result.constraint(self.sla_ms))
            if self.on_result is not None:
                self.on_result(trial, result)
        if self.on_trial_end is not None:
            self._results[trial.number] = result
        return result.throughput_rps if result.verdict == "feasible" else 0.0

    def _trial_ended(self, study: optuna.Study, trial: FrozenTrial) -> None:
        """Optuna's callback after each trial: ``on_trial_end`` sees the finished trial (its
        value and state told, so the study's best already counts it)."""
        result = self._results.pop(trial.number, None)
        if self.on_trial_end is not None and result is not None:
            self.on_trial_end(trial, result)

    def run(self, *, n_trials: int | None, timeout_s: float | None) -> None:
        """Optimise until the study holds ``n_trials`` complete trials (resumes count), the
        timeout passes, or the stop rule fires."""
        callbacks: list[Callable[[optuna.Study, FrozenTrial], None]] = [self._trial_ended]
        if n_trials is not None:
            callbacks.append(
                optuna.study.MaxTrialsCallback(n_trials, states=(TrialState.COMPLETE,))
            )
        if self.stop_rule is not None:
            rule = self.stop_rule

            def _stop_if_hopeless(study: optuna.Study, _: FrozenTrial) -> None:
                if rule.hopeless(study, self.sla_ms):
                    self.stopped_early = True
                    study.stop()

            callbacks.append(_stop_if_hopeless)
        if n_trials is not None and count_complete(self.study) >= n_trials:
            return
        if self.stop_rule is not None and self.stop_rule.hopeless(self.study, self.sla_ms):
            self.stopped_early = True
            return
        self.study.optimize(
            self.objective,
            n_trials=None,
            timeout=timeout_s,
            callbacks=callbacks,
            catch=(),
            gc_after_trial=False,
        )


def enqueue_seeds(study: optuna.Study, space: SearchSpace, hardware: Hardware) -> None:
    """Put the TorchServe-default configuration first, then a latency-first one.

    The latency-first configuration (one worker, batch 1, shortest delay, every core to that
    worker, TorchScript and fp16 where the space has them) answers fast the question whether the
    SLA is reachable at all on this host.
    """
    if study.get_trials(deepcopy=False):
        return
    baseline = space.baseline(hardware)
    study.enqueue_trial(space.params_for(baseline), user_attrs={A.BASELINE: True})
    device: Literal["cpu", "cuda"] = "cuda" if "cuda" in space.devices else "cpu"
    fast = space.nearest(
        TrialConfig(
            device=device,
            fp16=device == "cuda",
            torchscript=True,
            workers=1,
            batch_size=1,
            max_batch_delay_ms=0,
            threads_per_worker=hardware.cpu_cores if device == "cpu" else 0,
        )
    )
    if fast != baseline:
        study.enqueue_trial(space.params_for(fast))
