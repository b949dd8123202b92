"""Where studies live: an Optuna RDB storage (SQLite by default, PostgreSQL to scale out)."""

from __future__ import annotations

import random
import re
import time
import warnings
from typing import Any

import optuna
from optuna.storages import BaseStorage

from autotune._errors import StorageError

DEFAULT_STORAGE = "sqlite:///autotune.db"


def redact(url: str) -> str:
    """The storage URL without its password, for messages."""
    return re.sub(r"(://[^:/@]+):[^@]*@", r"\1:***@", url)


def open_storage(url: str, *, attempts: int = 3) -> BaseStorage:
    """An RDB storage (SQLite or PostgreSQL URL); StorageError with the fix when unusable."""
    if "://" not in url:
        raise StorageError(
            f"--storage {url!r} is not a database URL; use e.g. sqlite:///autotune.db or "
            "postgresql://user:password@host/db"
        )
    kwargs: dict[str, Any] = {}
    if url.startswith("sqlite"):
        kwargs["engine_kwargs"] = {"connect_args": {"timeout": 60}}
    else:
        kwargs["heartbeat_interval"] = 30
        kwargs["grace_period"] = 120
    last: Exception | None = None
    for attempt in range(attempts):
        if attempt:
            # Several hosts starting at once race to create the tables: the loser retries and
            # finds them made.
            time.sleep(0.5 + random.random())
        try:
            with warnings.catch_warnings():
                # Heartbeats are "experimental" in Optuna 5 but are what brings a crashed
                # host's trial back; the warning means nothing to a user.
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                if "heartbeat_interval" in kwargs:
                    kwargs["heartbeat_stale_trial_callback"] = (
                        optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=1)
                    )
                return optuna.storages.RDBStorage(url, **kwargs)
        except Exception as exc:  # SQLAlchemy raises many kinds; all mean the same to a user
            last = exc
    assert last is not None
    text = str(last).strip()
    reason = text.splitlines()[0] if text else type(last).__name__
    raise StorageError(
        f"cannot open storage {redact(url)}: {reason[:200]}; check --storage "
        "(for PostgreSQL: server running, database created, credentials)"
    ) from last
