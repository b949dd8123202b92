"""A TorchServe handler that misbehaves on request, for the fault tests.

It answers every request with a small JSON body after ``SLEEP_MS`` (default 5 ms). The
``AUTOTUNE_TEST_FAULT`` environment variable (inherited by TorchServe's workers) picks a fault:

* ``oom_batch_ge_4``: ``initialize`` raises MemoryError when the batch size is >= 4, as a
  model that does not fit in memory at a large batch would;
* ``crash_after_N``: the worker process exits on its N-th request;
* ``hang_after_N``: the worker sleeps far past the response timeout from its N-th request on.
"""

from __future__ import annotations

import json
import os
import time
from typing import Any


class FaultHandler:
    def __init__(self) -> None:
        self.requests = 0
        self.fault = os.environ.get("AUTOTUNE_TEST_FAULT", "")
        self.sleep_s = float(os.environ.get("AUTOTUNE_TEST_SLEEP_MS", "5")) / 1000

    def initialize(self, context: Any) -> None:
        batch_size = int(context.system_properties.get("batch_size", 1))
        if self.fault == "oom_batch_ge_4" and batch_size >= 4:
            raise MemoryError(f"simulated out of memory at batch size {batch_size}")

    def _after(self, prefix: str) -> int | None:
        if self.fault.startswith(prefix):
            return int(self.fault[len(prefix) :])
        return None

    def handle(self, data: list[dict[str, Any]], context: Any) -> list[str]:
        self.requests += 1
        crash_at = self._after("crash_after_")
        if crash_at is not None and self.requests >= crash_at:
            os._exit(3)
        hang_at = self._after("hang_after_")
        if hang_at is not None and self.requests >= hang_at:
            time.sleep(3600)
        time.sleep(self.sleep_s)
        return [json.dumps({"ok": True, "n": self.requests}) for _ in data]


_service = FaultHandler()


def handle(data: list[dict[str, Any]] | None, context: Any) -> list[str] | None:
    if data is None:
        _service.initialize(context)
        return None
    return _service.handle(data, context)
