"""The contract every :class:`~autotune.study.Evaluator` keeps, written once.

``check_evaluator`` asks an evaluator for each configuration it is given and checks what the
study loop relies on; it raises ``AssertionError`` naming the configuration and the rule broken.
The tests run it against :class:`~autotune.testing.TableEvaluator` and, in an integration test,
against :class:`~autotune.serving.TorchServeEvaluator` on a real TorchServe.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence

from autotune.space import TrialConfig
from autotune.study import Evaluator, TrialResult
from autotune.study import schema as A

__all__ = ["CONTRACT", "check_evaluator", "check_result"]

CONTRACT = (
    "the result is for the configuration asked",
    "the verdict is feasible, over_sla or failed",
    "a feasible result has goodput > 0 and a finite P99 <= the SLA",
    "an over_sla or failed result has goodput 0",
    "a failed result says why (failure)",
    "the constraint is <= 0 exactly when the result is feasible",
    "the user attrs are JSON (no NaN) and hold the configuration",
)


def check_result(result: TrialResult, config: TrialConfig, *, sla_ms: float) -> None:
    """Check one result against :data:`CONTRACT`."""
    where = f"{config.label()}: "
    assert isinstance(result, TrialResult), where + f"not a TrialResult: {result!r}"
    assert result.config == config, where + f"result is for {result.config.label()}"
    assert result.verdict in ("feasible", "over_sla", "failed"), where + f"{result.verdict=}"
    if result.verdict == "feasible":
        assert result.throughput_rps > 0, where + f"feasible with {result.throughput_rps=}"
        assert math.isfinite(result.p99_ms), where + f"feasible with {result.p99_ms=}"
        assert result.p99_ms <= sla_ms, where + f"feasible with P99 {result.p99_ms} > {sla_ms}"
    else:
        assert result.throughput_rps == 0, where + f"{result.verdict} with goodput"
    if result.verdict == "failed":
        assert result.failure, where + "failed without a failure message"
    constraint = result.constraint(sla_ms)
    assert (constraint <= 0) == (result.verdict == "feasible"), (
        where + f"constraint {constraint} with verdict {result.verdict}"
    )
    attrs = result.user_attrs(sla_ms)
    json.dumps(attrs, allow_nan=False)
    assert TrialConfig.from_dict(attrs[A.CONFIG]) == config, where + "user attrs: config"


def check_evaluator(
    evaluator: Evaluator, configs: Sequence[TrialConfig], *, sla_ms: float
) -> list[TrialResult]:
    """Evaluate each of ``configs`` once and check every result; returns the results."""
    assert configs, "give at least one configuration"
    results = []
    for config in configs:
        result = evaluator.evaluate(config)
        check_result(result, config, sla_ms=sla_ms)
        results.append(result)
    return results
