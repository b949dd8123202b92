"""The contract every Evaluator keeps (``autotune.testing.check_evaluator``), run against the
table evaluator here and against TorchServeEvaluator on a real TorchServe (integration)."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from autotune.space import TrialConfig
from autotune.testing import Landscape, Row, TableEvaluator, check_evaluator, space_from_configs

SLA_MS = 100.0


def _landscape() -> Landscape:
    rows = {
        TrialConfig(device="cuda", workers=1, batch_size=4, max_batch_delay_ms=5): Row(
            throughput_rps=100.0, p99_ms=90.0
        ),
        TrialConfig(device="cuda", workers=2, batch_size=4, max_batch_delay_ms=5): Row(
            throughput_rps=0.0, p99_ms=300.0
        ),
        TrialConfig(device="cuda", workers=4, batch_size=4, max_batch_delay_ms=5): Row(
            throughput_rps=0.0, p99_ms=math.nan
        ),
    }
    return Landscape(source="contract", rows=rows, space=space_from_configs(rows, source="c"))


@pytest.mark.parametrize("noise_cv", [0.0, 0.15])
def test_table_evaluator_keeps_the_contract(noise_cv: float) -> None:
    landscape = _landscape()
    evaluator = TableEvaluator(landscape, sla_ms=SLA_MS, noise_cv=noise_cv, seed=3)
    absent = TrialConfig(device="cuda", workers=3, batch_size=4, max_batch_delay_ms=5)
    results = check_evaluator(evaluator, [*landscape.rows, absent], sla_ms=SLA_MS)
    assert [r.verdict for r in results] == ["feasible", "over_sla", "failed", "failed"]


def test_the_contract_catches_a_broken_evaluator() -> None:
    class Lying(TableEvaluator):
        def evaluate(self, config: TrialConfig):  # type: ignore[no-untyped-def]
            result = super().evaluate(config)
            return type(result)(config=result.config, verdict="feasible", p99_ms=500.0)

    with pytest.raises(AssertionError, match="feasible with"):
        check_evaluator(Lying(_landscape(), sla_ms=SLA_MS), list(_landscape().rows), sla_ms=SLA_MS)


@pytest.mark.integration
@pytest.mark.measures
@pytest.mark.usefixtures("no_orphans")
def test_torchserve_evaluator_keeps_the_contract(tmp_path: Path) -> None:
    from autotune import RunSettings, prepare
    from autotune.loadgen import GoodputSettings

    settings = RunSettings(
        sla_ms=SLA_MS,
        model="quick",
        storage=f"sqlite:///{tmp_path / 'study.db'}",
        workdir=tmp_path / "work",
        load=GoodputSettings(step_max_s=2.0, max_steps=3, time_budget_s=15.0),
        server_warmup_s=2.0,
    )
    evaluator = prepare(settings).evaluator  # the one autotune run measures with
    configs = [
        TrialConfig(
            device="cpu", workers=1, batch_size=1, max_batch_delay_ms=1, threads_per_worker=1
        ),
        TrialConfig(
            device="cpu", workers=1, batch_size=4, max_batch_delay_ms=1, threads_per_worker=1
        ),
    ]
    try:
        results = check_evaluator(evaluator, configs, sla_ms=SLA_MS)
    finally:
        evaluator.close()
    assert all(r.verdict in ("feasible", "over_sla") for r in results)
    # The first trial on the newly started server warmed it (a closed loop, not measured);
    # the later trials on the same server did not.
    (warmup,) = evaluator.warmups
    # (two full batches per worker of the first configuration: w1 b1)
    assert warmup.concurrency == 2 and warmup.completed > 0 and warmup.duration_s >= 1.9
