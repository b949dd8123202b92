"""Server-side time from TorchServe's metrics endpoint (``metrics_mode=prometheus``).

TorchServe keeps cumulative counters and no histograms, so only means come from the server:
scraped before and after a step, the mean time a request spent in TorchServe is
``Δts_inference_latency_microseconds / Δts_inference_requests_total`` and its mean time in the
queue ``Δts_queue_latency_microseconds / Δts_inference_requests_total``. Percentiles are measured
client-side. Any failure to scrape gives None: the metrics are optional.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping

import aiohttp

REQUESTS = "ts_inference_requests_total"
LATENCY_US = "ts_inference_latency_microseconds"
QUEUE_US = "ts_queue_latency_microseconds"
_NAMES = (REQUESTS, LATENCY_US, QUEUE_US)
_LINE = re.compile(r"^([A-Za-z_:][A-Za-z0-9_:]*)(\{[^}]*\})?\s+(\S+)")
_MODEL = re.compile(r'model_name="([^"]*)"')


def parse_counters(text: str, *, model: str | None = None) -> dict[str, float]:
    """Sums of TorchServe's three request counters in a Prometheus text page."""
    sums = dict.fromkeys(_NAMES, 0.0)
    for line in text.splitlines():
        match = _LINE.match(line)
        if match is None or match.group(1) not in sums:
            continue
        if model is not None:
            label = _MODEL.search(match.group(2) or "")
            if label is None or label.group(1) != model:
                continue
        try:
            value = float(match.group(3))
        except ValueError:
            continue
        if math.isfinite(value):
            sums[match.group(1)] += value
    return sums


async def scrape(url: str, *, model: str | None = None, timeout_s: float = 2.0) -> dict[str, float]:
    """The counters now, or {} when the endpoint cannot be read."""
    try:
        timeout = aiohttp.ClientTimeout(total=timeout_s)
        async with (
            aiohttp.ClientSession(timeout=timeout) as session,
            session.get(url, params=[("name[]", name) for name in _NAMES]) as response,
        ):
            if response.status != 200:
                return {}
            text = await response.text()
    except (aiohttp.ClientError, TimeoutError, UnicodeDecodeError):
        return {}
    return parse_counters(text, model=model)


def server_means(
    before: Mapping[str, float], after: Mapping[str, float]
) -> tuple[float | None, float | None]:
    """(mean latency ms, mean queue ms) of the requests between two scrapes."""
    if not before or not after:
        return None, None
    count = after[REQUESTS] - before[REQUESTS]
    if count <= 0:
        return None, None
    latency_ms = (after[LATENCY_US] - before[LATENCY_US]) / count / 1000.0
    queue_ms = (after[QUEUE_US] - before[QUEUE_US]) / count / 1000.0
    return latency_ms, queue_ms
