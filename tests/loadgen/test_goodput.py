"""The goodput search against servers of known capacity."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

import pytest

from autotune._errors import LoadTestError
from autotune.loadgen import (
    GoodputSettings,
    GoodputVerdict,
    LoadResult,
    Target,
    find_goodput,
    run_sync,
)

if TYPE_CHECKING:
    from conftest import Servers


@pytest.mark.slow
def test_goodput_of_a_one_at_a_time_server(servers: Servers) -> None:
    # 10 ms per request, one at a time: capacity about 90 req/s. With a 100 ms SLA the queue
    # (M/D/1) keeps P99 within the SLA up to roughly 75-85 % of the capacity.
    seen: list[LoadResult] = []
    started = time.monotonic()
    result = run_sync(
        find_goodput(
            Target(url=servers.url("/serial?service_ms=10")), sla_ms=100, on_step=seen.append
        )
    )
    elapsed = time.monotonic() - started
    assert result.verdict == GoodputVerdict.FEASIBLE
    assert 50 <= result.goodput_rps <= 95
    assert result.capacity_rps == pytest.approx(90, rel=0.2)
    assert result.best is not None and result.best.errors == 0
    assert result.best.over_sla is not None
    assert result.best.over_sla <= 0.01 * result.best.sent
    assert result.goodput_rps == result.best.throughput_rps
    assert len(result.steps) >= 2
    assert seen == [result.idle_probe, result.capacity_probe, *result.steps]
    assert result.requests == sum(r.requests for r in seen)
    assert result.idle_latency_ms == pytest.approx(10, abs=5)
    assert elapsed < 45


@pytest.mark.slow
def test_503s_from_a_full_queue_are_excluded_from_goodput(servers: Servers) -> None:
    # Past 8 waiting requests this server sheds load with 503 (TorchServe's full job queue);
    # with a 500 ms SLA its latency never fails a step, only the 503s do: the goodput is a rate
    # served without any 503, and the faster steps failed on them.
    result = run_sync(
        find_goodput(
            Target(url=servers.url("/queue?service_ms=10&max_queue=8")),
            sla_ms=500,
            settings=GoodputSettings(step_max_s=4, step_min_s=1),
        )
    )
    assert result.verdict == GoodputVerdict.FEASIBLE
    assert result.best is not None
    assert result.best.errors == 0
    assert 20 <= result.goodput_rps <= 95
    failed = [s for s in result.steps if s.offered_rps > result.best.offered_rps]
    assert failed
    assert all(s.errors_by_kind.get("http_503") for s in failed)


def test_a_server_too_slow_when_idle_is_ruled_out_in_a_few_requests(servers: Servers) -> None:
    started = time.monotonic()
    result = run_sync(find_goodput(Target(url=servers.url("/sleep?ms=300")), sla_ms=100))
    assert result.verdict == GoodputVerdict.OVER_SLA_IDLE
    assert result.goodput_rps == 0.0
    assert result.best is None and result.steps == ()
    assert result.requests == 1 + 3  # warm-up, then a majority of 5 over the SLA
    assert result.idle_latency_ms == pytest.approx(300, rel=0.2)
    assert time.monotonic() - started < 3


def test_a_batching_server_slow_only_when_idle_gets_a_second_chance(servers: Servers) -> None:
    # Batches of 4 leave after 150 ms when idle: 160 ms alone, but 10 ms for a full batch.
    result = run_sync(
        find_goodput(
            Target(url=servers.url("/batch?size=4&delay_ms=150&service_ms=10")),
            sla_ms=100,
            settings=GoodputSettings(max_steps=1, step_max_s=1, step_min_s=0.5),
        )
    )
    assert result.idle_latency_ms > 100
    assert result.burst_probe is not None
    assert result.verdict != GoodputVerdict.OVER_SLA_IDLE
    assert result.capacity_probe is not None


def test_a_server_answering_errors_gets_the_errors_verdict(servers: Servers) -> None:
    result = run_sync(find_goodput(Target(url=servers.url("/share503?p=0.5")), sla_ms=100))
    assert result.verdict == GoodputVerdict.ERRORS
    assert result.goodput_rps == 0.0


def test_an_unreachable_server_raises(closed_port: int) -> None:
    with pytest.raises(LoadTestError):
        run_sync(find_goodput(Target(url=f"http://127.0.0.1:{closed_port}/"), sla_ms=100))


def test_settings_state_their_rule() -> None:
    with pytest.raises(ValueError, match="step_max_s > 0"):
        GoodputSettings(step_max_s=0)
    GoodputSettings(step_max_s=1)  # step_min_s is capped at it
    with pytest.raises(ValueError, match="arrival"):
        GoodputSettings(arrival="bursty")  # type: ignore[arg-type]
    assert GoodputSettings(arrival="constant").arrival == "constant"  # type: ignore[arg-type]
