"""The Optuna study: storage, sampler, the SLA constraint, resume by name, crash recovery."""

from __future__ import annotations

import json
import os
import random
import re
import socket
import time
import warnings
from collections.abc import Mapping
from typing import Any

import optuna
import psutil
from optuna.storages import BaseStorage
from optuna.trial import FrozenTrial, TrialState

from autotune import _attrs as A
from autotune._errors import ConfigError, StorageError

DEFAULT_STORAGE = "sqlite:///autotune.db"
SAMPLERS = ("gp", "tpe", "random")


def default_study_name(model: str, sla_ms: float) -> str:
    return f"{model}-p99-{sla_ms:g}ms"


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


def make_sampler(
    kind: str, *, seed: int | None, n_startup_trials: int
) -> optuna.samplers.BaseSampler:
    if kind == "gp":
        # threads_per_worker is asked on cpu trials only (see autotune._space): on a host with
        # a GPU it is drawn at random by design, which the GP need not log at every trial.
        return optuna.samplers.GPSampler(
            seed=seed,
            n_startup_trials=n_startup_trials,
            deterministic_objective=False,
            warn_independent_sampling=False,
        )
    if kind == "tpe":
        return optuna.samplers.TPESampler(seed=seed, n_startup_trials=n_startup_trials)
    if kind == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    raise ConfigError(f"unknown --sampler {kind!r}; use one of: {', '.join(SAMPLERS)}")


def _canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True, default=str)


def create_or_resume(
    storage: BaseStorage,
    *,
    name: str,
    sampler: optuna.samplers.BaseSampler,
    identity: Mapping[str, Any],
    attrs: Mapping[str, Any],
) -> tuple[optuna.Study, bool]:
    """Create the study, or resume it when its identity (SLA, model, space) matches.

    Returns ``(study, resumed)``. A mismatch raises ConfigError before anything is written.
    """
    existing = {s.study_name: s for s in optuna.get_all_study_summaries(storage)}
    if name in existing:
        stored = existing[name].user_attrs
        for key, want in identity.items():
            have = stored.get(key)
            if have is not None and _canonical(have) != _canonical(want):
                flag = {"sla_ms": "--sla-ms", "model": "--model", "space": "--space"}.get(key, key)
                shown = have if key != "space" else "another search space"
                raise ConfigError(
                    f"study {name!r} already exists with {key} = {shown}; "
                    f"resume it with the same {flag}, or start a new one with --study NEW_NAME"
                )
        study = optuna.load_study(study_name=name, storage=storage, sampler=sampler)
        return study, True
    study = optuna.create_study(
        study_name=name,
        storage=storage,
        sampler=sampler,
        direction="maximize",
        load_if_exists=True,  # another host may create it at the same moment
    )
    if not study.user_attrs:
        for key, value in {**identity, **attrs}.items():
            study.set_user_attr(key, value)
    return study, False


def set_sla_constraint(trial: optuna.Trial, value: float) -> None:
    """Store the SLA constraint in the legacy list form.

    Optuna 5 reads it (as key "0") and optuna-dashboard 0.21 shows feasibility only from this
    form; ``Trial.set_constraint`` writes a key the dashboard ignores.
    """
    trial.storage.set_trial_system_attr(trial._trial_id, A.CONSTRAINTS_SYSTEM_ATTR, (value,))


def trial_constraint(trial: FrozenTrial) -> float | None:
    values = list(trial.constraints.values())
    return max(values) if values else None


def is_feasible(trial: FrozenTrial) -> bool:
    value = trial_constraint(trial)
    return trial.state == TrialState.COMPLETE and value is not None and value <= 0


def best_feasible(study: optuna.Study) -> FrozenTrial | None:
    try:
        best = study.best_trial
    except ValueError:
        return None
    return best if is_feasible(best) else None


def owner() -> dict[str, Any]:
    return {A.HOST: socket.gethostname(), A.PID: os.getpid()}


def _owner_gone(trial: FrozenTrial) -> bool:
    if trial.user_attrs.get(A.HOST) != socket.gethostname():
        return False  # another host's trial: its heartbeat (PostgreSQL) handles it
    pid = trial.user_attrs.get(A.PID)
    if not isinstance(pid, int) or pid == os.getpid():
        return False
    try:
        proc = psutil.Process(pid)
        return "autotune" not in " ".join(proc.cmdline())
    except psutil.Error:
        return True


def recover_interrupted(study: optuna.Study) -> list[int]:
    """Close trials left RUNNING by a dead process of this host and re-enqueue every
    interrupted trial's configuration once. Returns the numbers of the trials retried."""
    trials = study.get_trials(deepcopy=False)
    retried = {t.user_attrs.get(A.RETRY_OF) for t in trials}
    to_retry: list[FrozenTrial] = []
    for trial in trials:
        if trial.state == TrialState.RUNNING and _owner_gone(trial):
            study._storage.set_trial_state_values(trial._trial_id, TrialState.FAIL)
            to_retry.append(trial)
        elif trial.state == TrialState.FAIL and trial.params:
            to_retry.append(trial)
    numbers = []
    for trial in to_retry:
        if trial.number in retried or trial.user_attrs.get(A.RETRY_OF) is not None:
            continue
        study.enqueue_trial(trial.params, user_attrs={A.RETRY_OF: trial.number})
        numbers.append(trial.number)
    return numbers


def count_complete(study: optuna.Study) -> int:
    return len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)))
