"""What a load test returns: plain frozen data, units in the names."""

from __future__ import annotations

import dataclasses
import enum
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from autotune.loadgen._stats import FloatArray


class Mode(enum.StrEnum):
    OPEN = "open"
    """Requests leave at planned times whatever the server does (real independent clients)."""
    CLOSED = "closed"
    """A fixed number of clients, each sending its next request when its answer arrives."""


class GoodputVerdict(enum.StrEnum):
    FEASIBLE = "feasible"
    """Some offered rate passed: ``goodput_rps`` is its throughput."""
    OVER_SLA_IDLE = "over_sla_idle"
    """Single requests on an idle server already take longer than the SLA."""
    OVER_SLA = "over_sla"
    """The idle server answers within the SLA, but no rate tried keeps P99 within it."""
    ERRORS = "errors"
    """The server answers with errors even without load, or at every rate tried."""


def _json_value(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, Mapping):
        return {str(k): _json_value(v) for k, v in value.items()}
    if isinstance(value, tuple | list):
        return [_json_value(v) for v in value]
    return value


@dataclass(frozen=True, kw_only=True)
class LoadResult:
    """One measured step (warm-up excluded).

    Latencies count from each request's *intended* send time (open loop: its planned time;
    closed loop: when its client sent it), so a stall of the server or of the generator shows.
    The percentiles cover the successful requests; every error (``errors_by_kind``: ``http_503``,
    ``http_500``, ``timeout``, ``connection``, ``malformed``, ``unfinished`` = still unanswered
    when the drain ended) is +inf in ``latencies_ms``, and counts in ``over_sla``.
    ``throughput_rps`` counts the successful answers that arrived inside the measured window, per
    second of it. ``schedule_lag_*`` say how late the generator sent against its plan;
    ``client_bound`` flags a run where that lag is large enough to matter (p99 over
    ``max(2 ms, 2 % of the SLA)``): the figures then describe the generator, not the server.
    """

    mode: str
    offered_rps: float
    throughput_rps: float
    sent: int
    completed: int
    errors: int
    errors_by_kind: Mapping[str, int]
    p50_ms: float
    p90_ms: float
    p99_ms: float
    p999_ms: float
    max_ms: float
    mean_ms: float
    duration_s: float
    schedule_lag_p99_ms: float
    schedule_lag_max_ms: float
    client_bound: bool
    latencies_ms: FloatArray = field(repr=False, compare=False)
    warmup_requests: int = 0
    concurrency: int | None = None
    sla_ms: float | None = None
    over_sla: int | None = None
    verdict: str | None = None
    stopped_early: bool = False
    server_latency_ms_mean: float | None = None
    server_queue_ms_mean: float | None = None

    @property
    def requests(self) -> int:
        """Requests sent, warm-up included."""
        return self.sent + self.warmup_requests

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready: every field but the raw latencies; NaN and inf become None."""
        data = {
            f.name: getattr(self, f.name)
            for f in dataclasses.fields(self)
            if f.name != "latencies_ms"
        }
        return {k: _json_value(v) for k, v in data.items()}


@dataclass(frozen=True, kw_only=True)
class GoodputResult:
    """The goodput search of one configuration: the highest rate it serves within the SLA.

    ``steps`` are the open-loop steps in the order run; ``best`` is the step the goodput rests
    on (its verification window, see ``_goodput``) and ``goodput_rps`` its offered rate, the
    arrival rate answered in full within the SLA (0.0 when none passed). ``requests`` counts
    every request sent, warm-up and probes included. The probes (closed loop) are kept apart:
    ``idle_probe`` (sequential requests), ``burst_probe`` (only for a server slower than the SLA
    when idle, see ``_goodput``) and ``capacity_probe``.
    """

    sla_ms: float
    goodput_rps: float
    best: LoadResult | None
    steps: tuple[LoadResult, ...]
    verdict: str
    idle_latency_ms: float
    requests: int
    capacity_rps: float = math.nan
    idle_probe: LoadResult | None = None
    capacity_probe: LoadResult | None = None
    burst_probe: LoadResult | None = None
    elapsed_s: float = 0.0

    @property
    def decided(self) -> bool:
        """False when the best step reached its time cap undecided and passed on its point
        estimate (see ``_goodput``): the goodput then rests on ``samples`` requests only."""
        return self.best is None or self.best.verdict != "undecided"

    @property
    def samples(self) -> int:
        """Requests of the best step: the sample behind the goodput's verdict (0 without)."""
        return self.best.sent if self.best is not None else 0

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready summary: the search's figures, then each step without raw latencies."""
        return {
            "sla_ms": self.sla_ms,
            "goodput_rps": self.goodput_rps,
            "verdict": str(self.verdict),
            "decided": self.decided,
            "samples": self.samples,
            "idle_latency_ms": _json_value(self.idle_latency_ms),
            "capacity_rps": _json_value(self.capacity_rps),
            "requests": self.requests,
            "elapsed_s": self.elapsed_s,
            "best": None if self.best is None else self.best.as_dict(),
            "steps": [step.as_dict() for step in self.steps],
        }
