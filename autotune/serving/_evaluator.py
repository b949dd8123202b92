"""The real measurement: deploy a configuration on TorchServe and measure its goodput."""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from autotune._errors import AutotuneError, ServerError
from autotune.loadgen import (
    GoodputResult,
    GoodputSettings,
    LoadResult,
    Target,
    find_goodput,
    run_sync,
)
from autotune.serving._archive import build_archive, model_config, rewrite_model_config
from autotune.serving._models import ModelSpec
from autotune.serving._server import ServerSettings, TorchServe
from autotune.space import Hardware, TrialConfig
from autotune.study import TrialResult, Verdict


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
