"""The one builder of TorchServe's ``config.properties``: for the tuning server, for a trial's
artifact and for an export.

``server_properties`` returns the keys in the order they are written; ``render_properties``
writes them as Java properties, values as TorchServe reads them (booleans lower case, the
``models`` JSON on one line). Secure defaults everywhere: token authorisation is never switched
off here (no ``disable_token_authorization`` key), ``allowed_urls`` is local files only, and
the model API (register/unregister over HTTP) is on only for the tuning server, which needs it.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

LOOPBACK: Final = "127.0.0.1"
# TorchServe reads a batch delay <= 0 as "unset" (then 100 ms): 1 ms is the shortest it honours.
MIN_BATCH_DELAY_MS: Final = 1


@dataclass(frozen=True, kw_only=True)
class Addresses:
    """Where the three HTTP APIs (and, for the tuning server, the two gRPC ones) listen."""

    host: str = LOOPBACK
    inference_port: int = 8080
    management_port: int = 8081
    metrics_port: int = 8082
    grpc_inference_port: int | None = None
    grpc_management_port: int | None = None

    def url(self, port: int) -> str:
        address = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{address}:{port}"


@dataclass(frozen=True, kw_only=True)
class ModelEntry:
    """One model TorchServe loads at start (``load_models`` + the ``models`` JSON)."""

    name: str
    version: str
    archive: str  # the file name in the model store, e.g. ``resnet.mar``
    workers: int
    batch_size: int
    max_batch_delay_ms: int
    response_timeout_s: int

    def json(self) -> dict[str, dict[str, dict[str, int]]]:
        return {
            self.name: {
                self.version: {
                    "minWorkers": self.workers,
                    "maxWorkers": self.workers,
                    "batchSize": self.batch_size,
                    "maxBatchDelay": max(MIN_BATCH_DELAY_MS, self.max_batch_delay_ms),
                    "responseTimeout": self.response_timeout_s,
                }
            }
        }


def server_properties(
    *,
    addresses: Addresses,
    model_store: Path,
    number_of_gpu: int,
    job_queue_size: int = 100,
    default_response_timeout_s: int = 120,
    enable_model_api: bool = False,
    model: ModelEntry | None = None,
    token_expiration_min: int | None = None,
    extra: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The keys of one config.properties, in the order they are written."""
    props: dict[str, Any] = {
        "inference_address": addresses.url(addresses.inference_port),
        "management_address": addresses.url(addresses.management_port),
        "metrics_address": addresses.url(addresses.metrics_port),
    }
    # gRPC cannot be switched off in 0.12 and defaults to fixed ports 7070/7071: a server that
    # shares the host with others gets free loopback ports for it too.
    if addresses.grpc_inference_port is not None:
        props["grpc_inference_address"] = addresses.host
        props["grpc_inference_port"] = addresses.grpc_inference_port
    if addresses.grpc_management_port is not None:
        props["grpc_management_address"] = addresses.host
        props["grpc_management_port"] = addresses.grpc_management_port
    props["model_store"] = str(model_store)
    if model is not None:
        props["load_models"] = model.archive
        props["models"] = model.json()
        props["default_workers_per_model"] = model.workers
    props.update(
        number_of_gpu=number_of_gpu,
        enable_model_api=enable_model_api,
        job_queue_size=job_queue_size,
        default_response_timeout=default_response_timeout_s,
    )
    if token_expiration_min is not None:
        props["token_expiration_min"] = token_expiration_min
    props.update(
        metrics_mode="prometheus",
        disable_system_metrics=True,
        install_py_dep_per_model=False,
        allowed_urls=r"file://.*",
    )
    props.update(extra or {})
    return props


def render_properties(props: Mapping[str, Any]) -> str:
    """A Java properties file, keys in the given order, values as TorchServe reads them."""
    lines = []
    for key, value in props.items():
        if isinstance(value, bool):
            text = "true" if value else "false"
        elif isinstance(value, dict | list):
            text = json.dumps(value, separators=(",", ":"))
        else:
            text = str(value)
        lines.append(f"{key}={text}")
    return "\n".join(lines) + "\n"


def render_env(env: Mapping[str, str]) -> str:
    """``KEY=VALUE`` lines: the format of ``docker --env-file`` and systemd's EnvironmentFile."""
    return "".join(f"{key}={value}\n" for key, value in env.items())


def read_env(path: Path) -> dict[str, str]:
    """The ``KEY=VALUE`` lines of an env file written by :func:`render_env` (comments skipped)."""
    env: dict[str, str] = {}
    for line in path.read_text().splitlines():
        stripped = line.strip()
        if stripped and not stripped.startswith("#"):
            key, _, value = stripped.partition("=")
            env[key.strip()] = value.strip()
    return env
