"""The load generator: open-loop P99 without coordinated omission, and goodput under an SLA.

``run_open_loop`` sends at a planned rate and measures latency from each request's intended
send time; ``run_closed_loop`` keeps a fixed number of requests in flight (Apache Bench's model);
``find_goodput`` searches the highest rate a server answers with P99 <= SLA and no errors.
They are coroutines: from plain code call ``run_sync(find_goodput(...))``.
"""

from autotune.loadgen._closed_loop import run_closed_loop
from autotune.loadgen._goodput import (
    GoodputSettings,
    find_goodput,
    slow_model_settings,
    step_passes,
)
from autotune.loadgen._loop import run_sync
from autotune.loadgen._open_loop import run_open_loop
from autotune.loadgen._result import GoodputResult, GoodputVerdict, LoadResult, Mode
from autotune.loadgen._schedule import arrival_times
from autotune.loadgen._stats import (
    LatencySummary,
    Verdict,
    fail_min_over,
    pass_min_samples,
    sla_verdict,
    summarize,
)
from autotune.loadgen._target import Arrival, Target

__all__ = [
    "Arrival",
    "GoodputResult",
    "GoodputSettings",
    "GoodputVerdict",
    "LatencySummary",
    "LoadResult",
    "Mode",
    "Target",
    "Verdict",
    "arrival_times",
    "fail_min_over",
    "find_goodput",
    "pass_min_samples",
    "run_closed_loop",
    "run_open_loop",
    "run_sync",
    "sla_verdict",
    "slow_model_settings",
    "step_passes",
    "summarize",
]
