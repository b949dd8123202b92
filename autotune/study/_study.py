"""The Optuna study of a run: create or resume it by name, and recover crashed trials."""

from __future__ import annotations

import json
import os
import socket
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import optuna
import psutil
from optuna.storages import BaseStorage
from optuna.trial import FrozenTrial, TrialState

from autotune._errors import ConfigError, StorageError
from autotune.study import _schema as A
from autotune.study._storage import open_storage, redact


def default_study_name(model: str, sla_ms: float) -> str:
    return f"{model}-p99-{sla_ms:g}ms"


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
            # skip_if_finished: another host may have closed it (heartbeat) meanwhile.
            study.tell(trial.number, state=TrialState.FAIL, skip_if_finished=True)
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


def load_study(storage: str, name: str | None = None) -> optuna.Study:
    """The study ``name`` in ``storage`` (a URL), or its only study when ``name`` is None.

    StorageError when the storage cannot be read or holds no study, ConfigError when ``name``
    is not there or is needed (several studies); each names what to pass instead.
    """
    check_sqlite_file(storage)
    opened = open_storage(storage)
    try:
        names = optuna.get_all_study_names(opened)
    except Exception as exc:  # SQLAlchemy raises many kinds; all mean the same to a user
        raise StorageError(f"cannot read studies from {redact(storage)}: {exc}") from exc
    if name is None:
        if not names:
            raise StorageError(
                f"no study in {redact(storage)}; run `autotune run` first or pass --storage"
            )
        if len(names) > 1:
            raise ConfigError(
                f"{redact(storage)} holds {len(names)} studies; pick one with --study: "
                + ", ".join(sorted(names))
            )
        name = names[0]
    elif name not in names:
        known = ", ".join(sorted(names)) or "none"
        raise ConfigError(f"no study {name!r} in {redact(storage)}; studies there: {known}")
    return optuna.load_study(study_name=name, storage=opened)


def check_sqlite_file(storage: str) -> None:
    """StorageError when ``storage`` is a SQLite URL whose file does not exist (reading it would
    create an empty database instead of failing)."""
    prefix = "sqlite:///"
    if storage.startswith(prefix) and storage != prefix + ":memory:":
        path = Path(storage[len(prefix) :].split("?", 1)[0])
        if not path.is_file():
            raise StorageError(
                f"no database file {path} for --storage {storage}; "
                "run `autotune run` first or pass the right --storage"
            )
