"""What a load test hits: one URL, one payload, a few headers."""

from __future__ import annotations

import enum
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass, field


class Arrival(enum.StrEnum):
    """How the open loop spaces its intended send times."""

    POISSON = "poisson"
    """Exponential gaps (a Poisson process), as real independent clients and MLPerf Server."""
    CONSTANT = "constant"
    """Equal gaps, as wrk2 and perf_analyzer's default."""

    @classmethod
    def parse(cls, value: str) -> Arrival:
        try:
            return cls(value)
        except ValueError:
            names = ", ".join(repr(a.value) for a in cls)
            raise ValueError(f"`arrival` must be one of {names}, but got ({value=}).") from None


@dataclass(frozen=True, kw_only=True)
class Target:
    """One HTTP endpoint and the request sent to it, the same bytes every time.

    ``method`` is POST by default (TorchServe's predictions API); a GET sends no body.
    ``metrics_url`` (TorchServe's ``http://host:8082/metrics`` with ``metrics_mode=prometheus``)
    adds the server-side mean queue and inference time of each measured step; ``metrics_model``
    keeps only that model's series.
    """

    url: str
    payload: bytes = b""
    headers: Mapping[str, str] = field(default_factory=dict)
    timeout_s: float = 30.0
    method: str = "POST"
    metrics_url: str | None = None
    metrics_model: str | None = None

    def __post_init__(self) -> None:
        parts = urllib.parse.urlsplit(self.url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"`url` must be an absolute http(s) URL, but got ({self.url=}).")
        if not self.timeout_s > 0:
            raise ValueError(f"`timeout_s > 0` must hold, but got ({self.timeout_s=}).")
        if not self.method.isalpha():
            raise ValueError(f"`method` must be an HTTP method name, but got ({self.method=}).")
        for name, value in self.headers.items():
            if not name or any(c in name for c in ":\r\n ") or any(c in value for c in "\r\n"):
                raise ValueError(
                    f"Header names need no ':', space or line break and values no line break, "
                    f"but got ({name!r}: {value!r})."
                )
