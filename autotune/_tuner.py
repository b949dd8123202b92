"""One trial end to end: deploy a configuration on TorchServe, measure its goodput, record it.

The study code (``Tuner``) only sees an ``Evaluator``: ``TorchServeEvaluator`` deploys for real
and measures with the load generator; the search-efficiency benchmark plugs in a table look-up.
"""

from __future__ import annotations

import contextlib
import math
import socket
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol

import numpy as np
import optuna
from optuna.trial import FrozenTrial, TrialState

from autotune import _attrs as A
from autotune._archive import build_archive, model_config, rewrite_model_config
from autotune._config import Hardware, TrialConfig
from autotune._errors import AutotuneError, ServerError
from autotune._models import ModelSpec
from autotune._server import ServerSettings, TorchServe
from autotune._space import SearchSpace
from autotune._study import (
    count_complete,
    is_feasible,
    owner,
    set_sla_constraint,
)
from autotune.loadgen import (
    GoodputResult,
    GoodputSettings,
    LoadResult,
    Target,
    find_goodput,
    run_sync,
)

Verdict = Literal["feasible", "over_sla", "failed"]


@dataclass(frozen=True, kw_only=True)
class TrialResult:
    """What one trial measured: plain data, units in the names."""

    config: TrialConfig
    verdict: Verdict
    throughput_rps: float = 0.0
    offered_rps: float = 0.0
    p50_ms: float = math.nan
    p90_ms: float = math.nan
    p99_ms: float = math.nan
    p999_ms: float = math.nan
    mean_ms: float = math.nan
    max_ms: float = math.nan
    idle_latency_ms: float = math.nan
    requests: int = 0
    errors: int = 0
    errors_total: int = 0
    failure: str | None = None
    deploy_s: float = 0.0
    measure_s: float = 0.0
    latencies_ms: np.ndarray[Any, np.dtype[np.float64]] | None = field(default=None, repr=False)

    def user_attrs(self, sla_ms: float) -> dict[str, Any]:
        attrs: dict[str, Any] = {
            A.CONFIG: self.config.as_dict(),
            A.VERDICT: self.verdict,
            A.THROUGHPUT_RPS: self.throughput_rps,
            A.OFFERED_RPS: self.offered_rps,
            A.P50_MS: self.p50_ms,
            A.P90_MS: self.p90_ms,
            A.P99_MS: self.p99_ms,
            A.P999_MS: self.p999_ms,
            A.MEAN_MS: self.mean_ms,
            A.MAX_MS: self.max_ms,
            A.IDLE_LATENCY_MS: self.idle_latency_ms,
            A.REQUESTS: self.requests,
            A.ERRORS: self.errors,
            A.ERRORS_TOTAL: self.errors_total,
            A.SLA_MS: sla_ms,
            A.DEPLOY_S: round(self.deploy_s, 3),
            A.MEASURE_S: round(self.measure_s, 3),
        }
        if self.failure:
            attrs[A.FAILURE] = self.failure
        # JSON has no NaN/inf: leave such figures out, so that the dashboard keeps seeing a
        # numeric attr (a None in one trial makes it non-numeric for the whole study).
        return {
            k: v for k, v in attrs.items() if not (isinstance(v, float) and not math.isfinite(v))
        }

    def constraint(self, sla_ms: float) -> float:
        """``p99_ms - sla_ms``, but violated whenever the trial is not feasible: a trial whose
        only passing P99 came with errors (timeouts, 503s) still misses the SLA."""
        value = A.constraint_value(self.p99_ms, sla_ms, ok=self.verdict != "failed")
        if self.verdict == "feasible":
            return min(value, 0.0)
        return value if value > 0 else A.constraint_value(math.nan, sla_ms, ok=False)


def result_from_goodput(
    config: TrialConfig, goodput: GoodputResult, *, deploy_s: float, measure_s: float
) -> TrialResult:
    """Map the load generator's verdict onto a trial result.

    The reported step is the best passing one; when none passed, the gentlest step (lowest offered
    rate) that got answers, so that P99 says how far from the SLA the configuration is even under
    light load; when no step got an answer in time (every request errored or was still pending),
    the idle probe's sequential requests, whose figures are then lower bounds.
    """
    step: LoadResult | None = goodput.best
    if step is None:
        answered = [s for s in goodput.steps if math.isfinite(s.p50_ms)]
        if answered:
            step = min(answered, key=lambda s: s.offered_rps)
        elif goodput.idle_probe is not None and math.isfinite(goodput.idle_probe.p50_ms):
            step = goodput.idle_probe
        elif goodput.steps:
            step = min(goodput.steps, key=lambda s: s.offered_rps)
        else:
            step = goodput.idle_probe
    verdict: Verdict = "feasible" if goodput.verdict == "feasible" else "over_sla"
    probes = (goodput.idle_probe, goodput.capacity_probe, goodput.burst_probe)
    errors_total = sum(s.errors for s in (*goodput.steps, *probes) if s is not None)
    failure = None
    if goodput.verdict == "errors":
        failure = "every load step had errors: " + _error_kinds(step)
    if step is None:
        return TrialResult(
            config=config,
            verdict=verdict,
            idle_latency_ms=goodput.idle_latency_ms,
            p99_ms=goodput.idle_latency_ms,
            requests=goodput.requests,
            errors_total=errors_total,
            failure=failure,
            deploy_s=deploy_s,
            measure_s=measure_s,
        )
    # A step whose every request was still unanswered at its end has no percentile: its idle
    # latency (a lower bound) says how far over the SLA it is.
    p99_ms = step.p99_ms if math.isfinite(step.p99_ms) else goodput.idle_latency_ms
    return TrialResult(
        config=config,
        verdict=verdict,
        throughput_rps=goodput.goodput_rps,
        offered_rps=step.offered_rps,
        p50_ms=step.p50_ms,
        p90_ms=step.p90_ms,
        p99_ms=p99_ms,
        p999_ms=step.p999_ms,
        mean_ms=step.mean_ms,
        max_ms=step.max_ms,
        idle_latency_ms=goodput.idle_latency_ms,
        requests=goodput.requests,
        errors=step.errors,
        errors_total=errors_total,
        failure=failure,
        deploy_s=deploy_s,
        measure_s=measure_s,
        latencies_ms=np.asarray(step.latencies_ms, dtype=np.float64),
    )


def _error_kinds(step: LoadResult | None) -> str:
    if step is None or not step.errors_by_kind:
        return "unknown"
    return ", ".join(f"{k} x{v}" for k, v in step.errors_by_kind.items() if v)


class Evaluator(Protocol):
    """Turns a configuration into a measured result (deploy + measure, or a table look-up)."""

    def evaluate(self, config: TrialConfig) -> TrialResult: ...


class TorchServeEvaluator:
    """Deploys each configuration on a real TorchServe and measures its goodput.

    The server is started once and reused; it is restarted only when it died or a server-level
    setting changes. The model is archived once (no-archive format); each trial rewrites the
    archive's model-config.yaml and registers it with the trial's batch size, delay and workers.
    """

    def __init__(
        self,
        *,
        spec: ModelSpec,
        workdir: Path,
        hardware: Hardware,
        payload: bytes,
        sla_ms: float,
        load_settings: GoodputSettings,
        handler_extra: dict[str, Any] | None = None,
        startup_timeout_s: int = 300,
    ) -> None:
        self.spec = spec
        self.workdir = workdir
        self.hardware = hardware
        self.payload = payload
        self.sla_ms = sla_ms
        self.load_settings = load_settings
        self.handler_extra = dict(handler_extra or {})
        self.handler_extra.setdefault("torchscript_cache_dir", str(workdir / "torchscript-cache"))
        self.startup_timeout_s = startup_timeout_s
        self.model_name = spec.name
        self.store = workdir / "model-store"
        self._archive: Path | None = None
        self._server: TorchServe | None = None

    def server_settings(self, config: TrialConfig) -> ServerSettings:
        # Every GPU stays visible to the server: a cpu trial pins deviceType: cpu in its YAML,
        # so switching device needs no restart.
        return ServerSettings(
            number_of_gpu=self.hardware.gpus,
            default_response_timeout_s=self.spec.response_timeout_s,
        )

    def _ensure_server(self, config: TrialConfig) -> TorchServe:
        wanted = self.server_settings(config)
        server = self._server
        if server is not None and (server.settings != wanted or not server.is_alive()):
            server.stop()
            server = None
        if server is None:
            server = TorchServe(
                workdir=self.workdir / "server", model_store=self.store, settings=wanted
            )
            server.start()
            self._server = server
        return server

    def _ensure_archive(self, config: TrialConfig) -> Path:
        if self._archive is None or not self._archive.is_dir():
            self._archive = build_archive(
                self.spec,
                self.store,
                model_name=self.model_name,
                initial_config=model_config(self.spec, config, extra_handler=self.handler_extra),
            )
        return self._archive

    @contextlib.contextmanager
    def deployed(self, config: TrialConfig) -> Iterator[Target]:
        """Register the configuration; yields the load target; always unregisters."""
        archive = self._ensure_archive(config)
        rewrite_model_config(
            archive, model_config(self.spec, config, extra_handler=self.handler_extra)
        )
        server = self._ensure_server(config)
        server.unregister(self.model_name)  # leftovers of an interrupted trial
        try:
            server.register(
                model_name=self.model_name,
                url=archive.name,
                batch_size=config.batch_size,
                max_batch_delay_ms=config.max_batch_delay_ms,
                workers=config.workers,
                response_timeout_s=self.spec.response_timeout_s,
                startup_timeout_s=self.startup_timeout_s,
            )
            yield Target(
                url=server.prediction_url(self.model_name),
                payload=self.payload,
                headers=server.inference_headers(),
                timeout_s=float(self.spec.response_timeout_s),
                metrics_url=f"{server.metrics_url}/metrics",
                metrics_model=self.model_name,
            )
        finally:
            if server.is_alive():
                server.unregister(self.model_name)

    def evaluate(self, config: TrialConfig) -> TrialResult:
        started = time.monotonic()
        try:
            with self.deployed(config) as target:
                deploy_s = time.monotonic() - started
                goodput = run_sync(
                    find_goodput(target, sla_ms=self.sla_ms, settings=self.load_settings)
                )
                measure_s = time.monotonic() - started - deploy_s
                server_died = self._server is None or not self._server.is_alive()
            if server_died:
                raise ServerError("TorchServe died during the measurement")
        except AutotuneError as exc:
            return TrialResult(
                config=config,
                verdict="failed",
                failure=_failure_reason(exc, self._server),
                deploy_s=time.monotonic() - started,
            )
        return result_from_goodput(config, goodput, deploy_s=deploy_s, measure_s=measure_s)

    def close(self) -> None:
        if self._server is not None:
            self._server.stop()
            self._server = None


def _failure_reason(exc: Exception, server: TorchServe | None) -> str:
    reason = str(exc)
    if server is not None:
        tail = server.log_tail(200)
        for marker, what in (
            ("OutOfMemoryError", "out of memory"),
            ("CUDA out of memory", "CUDA out of memory"),
            ("MemoryError", "out of memory"),
            ("Backend worker process died", "worker process died"),
            ("Load model failed", "model load failed"),
        ):
            if marker in tail:
                return f"{reason} ({what}; see {server.log_dir})"
    return reason


TrialStart = Callable[[int, TrialConfig], None]
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
            self.on_trial_end(self.study._storage.get_trial(trial._trial_id), result)
        return result.throughput_rps if result.verdict == "feasible" else 0.0

    def run(self, *, n_trials: int | None, timeout_s: float | None) -> None:
        """Optimise until the study holds ``n_trials`` complete trials (resumes count), the
        timeout passes, or the stop rule fires."""
        callbacks: list[Callable[[optuna.Study, FrozenTrial], None]] = []
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


def host_label() -> str:
    return socket.gethostname()


__all__ = [
    "Evaluator",
    "StopRule",
    "TorchServeEvaluator",
    "TrialResult",
    "Tuner",
    "enqueue_seeds",
]
