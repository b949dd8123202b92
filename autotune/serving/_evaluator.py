"""The real measurement: deploy a configuration on TorchServe and measure its goodput."""

from __future__ import annotations

import contextlib
import math
import re
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Final

import numpy as np

from autotune._errors import AutotuneError, ConfigError, DeploymentError, ServerError
from autotune.loadgen import (
    GoodputResult,
    GoodputSettings,
    LoadResult,
    Target,
    find_goodput,
    run_closed_loop,
    run_sync,
)
from autotune.serving._answers import answer_difference
from autotune.serving._archive import ModelArchive, model_config, rewrite_model_config
from autotune.serving._knobs import Knobs
from autotune.serving._server import ServerSettings, TorchServe
from autotune.space import Hardware, TrialConfig
from autotune.study import TrialResult, Verdict

# The environment variables that set a worker's threads: torch reads OMP's, MKL its own.
THREAD_ENV: Final = ("OMP_NUM_THREADS", "MKL_NUM_THREADS")
# Answers checked per trial: a batch of identical requests (at most this many), each compared.
_MAX_CHECK_REQUESTS: Final = 8
_MAX_SOCKET_PATH: Final = 100  # AF_UNIX allows 107 bytes; keep a margin
# A compiling trial is warm once a whole warm-up round takes less than this.
_COMPILE_WARM_S: Final = 3.0
_COMPILE_WARMUP_ROUNDS: Final = 4
_FRAME = re.compile(r'^File "([^"]+)", line \d+, in (\S+)')
_ERROR_LINE = re.compile(r"(\b[A-Za-z_.]*(?:Error|Exception)\b: .+)$")


def thread_env(config: TrialConfig, knobs: Knobs) -> dict[str, str]:
    """The server environment that gives each worker ``config``'s threads (cpu, environment)."""
    if config.device != "cpu" or config.threads_per_worker <= 0:
        return {}
    if knobs.threads_via != "environment":
        return {}
    return dict.fromkeys(THREAD_ENV, str(config.threads_per_worker))


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
    """Deploys each configuration of one archive on a real TorchServe and measures its goodput.

    The server is started once and reused; it is restarted only when it died or a server-level
    setting changes (the GPU count, the threads in its environment). The archive is unpacked
    once (``open_archive``); each trial rewrites its model-config.yaml and registers it with the
    trial's batch size, delay and workers. Before the measured window each trial answers the
    sample input (a batch of identical requests), which also runs a compiling configuration's
    first, compiling calls; the answers are compared with the reference answer
    (:meth:`check_model`), and a difference is kept in :meth:`answer_change`.
    """

    def __init__(
        self,
        *,
        archive: ModelArchive,
        knobs: Knobs,
        workdir: Path,
        hardware: Hardware,
        payload: bytes,
        sla_ms: float,
        load_settings: GoodputSettings,
        handler_extra: Mapping[str, Any] | None = None,
        response_timeout_s: int | None = None,
        startup_timeout_s: int = 300,
        server_warmup_s: float = 0.0,
    ) -> None:
        self.archive = archive
        self.knobs = knobs
        self.workdir = workdir
        self.hardware = hardware
        self.payload = payload
        self.sla_ms = sla_ms
        self.load_settings = load_settings
        self.handler_extra = dict(handler_extra or {})
        self.response_timeout_s = response_timeout_s
        self.startup_timeout_s = startup_timeout_s
        self.server_warmup_s = server_warmup_s
        self._warmed: TorchServe | None = None  # the server the warm-up load ran on
        self.warmups: list[LoadResult] = []
        """The warm-up loads run so far (one per server started), for benchmarks and tests."""
        self.model_name = archive.model_name
        self.store = archive.directory.parent
        self.reference: bytes | None = None
        self._answer_changes: dict[TrialConfig, str | None] = {}
        self._server: TorchServe | None = None
        self._short_dir: Path | None = None
        self.last_goodput: GoodputResult | None = None
        """The goodput search of the latest ``evaluate`` (its steps), for benchmarks."""

    # -- configuration ---------------------------------------------------------------------

    def model_config(self, config: TrialConfig) -> dict[str, Any]:
        return model_config(
            self.archive,
            self.knobs,
            config,
            handler_extra=self.handler_extra,
            response_timeout_s=self.response_timeout_s,
        )

    def server_settings(self, config: TrialConfig) -> ServerSettings:
        # Every GPU stays visible to the server: a cpu trial pins deviceType: cpu in its YAML,
        # so switching device needs no restart; a thread count in the environment does.
        return ServerSettings(
            number_of_gpu=self.hardware.gpus,
            default_response_timeout_s=self.archive.response_timeout_s(),
            env=thread_env(config, self.knobs),
        )

    def server_for(self, config: TrialConfig) -> TorchServe:
        """The running server that ``config`` is measured on (started or restarted as needed)."""
        return self._ensure_server(config)

    def _ensure_server(self, config: TrialConfig) -> TorchServe:
        wanted = self.server_settings(config)
        server = self._server
        if server is not None and (server.settings != wanted or not server.is_alive()):
            server.stop()
            server = None
        if server is None:
            server = TorchServe(workdir=self._server_dir(), model_store=self.store, settings=wanted)
            server.start()
            self._server = server
        return server

    def _server_dir(self) -> Path:
        """The server's folder: under the run's, unless that path is too long for the workers'
        unix sockets (``<dir>/tmp/.ts.sock.<port>``, at most 107 bytes); then a short one in
        the system's temporary folder (its path is in every error message)."""
        wanted = self.workdir / "server"
        if len(str(wanted / "tmp" / ".ts.sock.65535")) <= _MAX_SOCKET_PATH:
            return wanted
        if self._short_dir is None:
            self._short_dir = Path(tempfile.mkdtemp(prefix="autotune-server-"))
        return self._short_dir

    # -- deployment ------------------------------------------------------------------------

    @contextlib.contextmanager
    def deployed(self, config: TrialConfig) -> Iterator[Target]:
        """Register the configuration; yields the load target; always unregisters."""
        content = self.model_config(config)
        rewrite_model_config(self.archive, content)
        server = self._ensure_server(config)
        server.unregister(self.model_name)  # leftovers of an interrupted trial
        timeout_s = int(content.get("responseTimeout") or self.archive.response_timeout_s())
        try:
            try:
                server.register(
                    model_name=self.model_name,
                    url=self.archive.url,
                    batch_size=config.batch_size,
                    max_batch_delay_ms=config.max_batch_delay_ms,
                    workers=config.workers,
                    response_timeout_s=timeout_s,
                    startup_timeout_s=self.startup_timeout_s,
                )
            except DeploymentError as exc:
                error = worker_error(server)
                if error:
                    raise DeploymentError(f"{exc}; the worker said: {error}") from exc
                raise
            yield Target(
                url=server.prediction_url(self.model_name),
                payload=self.payload,
                headers=server.inference_headers(),
                timeout_s=float(timeout_s),
                metrics_url=f"{server.metrics_url}/metrics",
                metrics_model=self.model_name,
            )
        finally:
            if server.is_alive():
                server.unregister(self.model_name)

    def _answers(self, target: Target, count: int) -> list[tuple[int, bytes]]:
        """``count`` identical requests sent together (so that they can form one batch)."""

        def one(_: int) -> tuple[int, bytes]:
            headers = {**target.headers, "Content-Type": "application/octet-stream"}
            request = urllib.request.Request(
                target.url, data=target.payload, method="POST", headers=headers
            )
            try:
                with urllib.request.urlopen(request, timeout=target.timeout_s) as response:
                    return int(response.status), bytes(response.read())
            except urllib.error.HTTPError as exc:
                return exc.code, exc.read()
            except (urllib.error.URLError, OSError) as exc:
                return 0, str(exc).encode()

        with ThreadPoolExecutor(max_workers=count) as pool:
            return list(pool.map(one, range(count)))

    def check_model(self, config: TrialConfig) -> bytes:
        """Deploy ``config`` and answer the sample input once, before any trial: the model's
        own failure (a handler that does not import, weights that do not load, an input it
        refuses) ends the run here with the worker's error, instead of failing every trial.
        The answer becomes the reference every trial's answers are compared with."""
        try:
            with self.deployed(config) as target:
                status, body = self._answers(target, 1)[0]
        except DeploymentError as exc:
            raise DeploymentError(
                f"the model in {self.archive.source} does not load: {_cause(exc)}"
            ) from None
        if status != 200:
            text = body[:300].decode(errors="replace").strip().replace("\n", " ")
            raise ConfigError(
                f"the model answered the --input sample with HTTP {status}: {text}; "
                "give an --input the handler accepts"
            )
        self.reference = body
        return body

    def answer_change(self, config: TrialConfig) -> str | None:
        """How ``config``'s answers differed from the reference, or None (same, or unchecked)."""
        return self._answer_changes.get(config)

    def _check_answers(self, target: Target, config: TrialConfig) -> None:
        count = max(1, min(config.batch_size, _MAX_CHECK_REQUESTS))
        change: str | None = None
        for status, body in self._answers(target, count):
            if status == 200 and self.reference is not None and change is None:
                change = answer_difference(self.reference, body)
        self._answer_changes[config] = change
        if config.compile:
            self._warm_compiled(target, config)

    def _warm_compiled(self, target: Target, config: TrialConfig) -> None:
        """Every worker compiles on its own first calls, again for a batch of another size:
        send single requests, full batches and every worker's batch at once until a whole
        round is quick (at most ``_COMPILE_WARMUP_ROUNDS``), outside the measured window."""
        sizes = sorted({1, config.batch_size, min(config.workers * config.batch_size, 32)})
        for _ in range(_COMPILE_WARMUP_ROUNDS):
            started = time.monotonic()
            for size in sizes:
                self._answers(target, size)
            if time.monotonic() - started < _COMPILE_WARM_S:
                return

    def _warm_server(self, target: Target, config: TrialConfig) -> None:
        """The first trial on a newly started server first drives it for ``server_warmup_s``
        (closed loop, not measured): its frontend serves less over its first minute of load, so
        the first trials would be measured on a slower server. Two full batches per worker are
        kept in flight (at most the capacity probe's clients): enough to keep every worker busy,
        and what is still in flight when it ends is answered within two batches' time (32
        clients on a detector of 5 s a request would leave minutes of queue)."""
        server = self._server
        if self.server_warmup_s <= 0 or server is None or server is self._warmed:
            return
        clients = min(
            self.load_settings.capacity_concurrency, 2 * config.workers * config.batch_size
        )
        warmup = run_sync(
            run_closed_loop(target, concurrency=max(1, clients), duration_s=self.server_warmup_s)
        )
        self.warmups.append(warmup)
        self._warmed = server

    def evaluate(self, config: TrialConfig) -> TrialResult:
        started = time.monotonic()
        self.last_goodput = None
        try:
            with self.deployed(config) as target:
                self._check_answers(target, config)
                deploy_s = time.monotonic() - started
                self._warm_server(target, config)  # neither deployment nor measurement
                measure_started = time.monotonic()
                goodput = run_sync(
                    find_goodput(target, sla_ms=self.sla_ms, settings=self.load_settings)
                )
                self.last_goodput = goodput
                measure_s = time.monotonic() - measure_started
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


def worker_error(server: TorchServe) -> str | None:
    """The error a worker died of, from ``model_log.log`` since the server started: the last
    exception chain's root cause (not TorchServe's fallback to a stock handler of the same
    name), with the handler-side function it was raised in."""
    if not (server.log_dir / "model_log.log").is_file():
        return None
    chain: list[tuple[str, str | None]] = []  # (error line, the frame it was raised in)
    frame: str | None = None
    chained = False
    for line in server.log_tail(600).splitlines():
        if "MODEL_LOG - " not in line:
            continue
        message = line.split("MODEL_LOG - ", 1)[1].strip()
        if message.startswith("Traceback (most recent call last)"):
            if not chained:
                chain = []
            chained, frame = False, None
            continue
        if message.startswith("During handling of the above exception") or message.startswith(
            "The above exception was the direct cause"
        ):
            chained = True
            continue
        found = _FRAME.match(message)
        if found and ("/ts/" in found.group(1) or "site-packages" not in found.group(1)):
            frame = f"in {found.group(2)}, {Path(found.group(1)).name}"
        match = _ERROR_LINE.search(message)
        if match and not message.startswith("File "):
            chain.append((match.group(1), frame))
    causes = [c for c in chain if "No module named 'ts.torch_handler." not in c[0]] or chain
    if not causes:
        return None
    error, where = causes[0]
    if len(error) > 160 and ". " in error:  # the first sentence names it
        error = error.split(". ", 1)[0] + "."
    return (f"{error} ({where})" if where else error)[:300]


def _cause(exc: Exception) -> str:
    text = str(exc)
    return text.split("; the worker said: ", 1)[-1] if "; the worker said: " in text else text


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
