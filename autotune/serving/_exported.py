"""TorchServe started from an export folder exactly as a user starts it, always stopped."""

from __future__ import annotations

import json
import urllib.parse
from pathlib import Path
from typing import Any, Final

from autotune._errors import ConfigError, DeploymentError
from autotune.serving._process import wait_until
from autotune.serving._properties import read_env
from autotune.serving._server import ServerSettings, TorchServe, torchserve_executable

CONFIG_PROPERTIES_FILE: Final = "config.properties"
MODEL_STORE_DIR: Final = "model-store"
# The environment TorchServe must start with (threads per worker), KEY=VALUE lines.
ENV_FILE: Final = "torchserve.env"


def read_properties(path: Path) -> dict[str, str]:
    """The ``key=value`` lines of a config.properties we wrote (comments skipped)."""
    props: dict[str, str] = {}
    for line in path.read_text().splitlines():
        stripped = line.strip()
        if not stripped or stripped[0] in "#!":
            continue
        key, sep, value = stripped.partition("=")
        if not sep:
            raise ConfigError(f"{path}: line {line!r} is not key=value")
        props[key.strip()] = value.strip()
    return props


class ExportedServer(TorchServe):
    """TorchServe started from an export's config.properties as is; always stopped.

    Only ``--start --foreground --ncs --ts-config`` is passed: the model store, the model, its
    workers and batching, the addresses and the security settings all come from the file. The
    export's ``torchserve.env``, when there is one, is the server's environment, as in the
    start command the export prints (``env $(cat torchserve.env) torchserve --start ...``).
    """

    def __init__(self, export_dir: Path, *, workdir: Path, startup_timeout_s: float = 180.0):
        self.export_dir = export_dir.resolve()
        self.config_path = self.export_dir / CONFIG_PROPERTIES_FILE
        self.properties = read_properties(self.config_path)
        for key in ("inference_address", "management_address", "metrics_address"):
            if key not in self.properties:
                raise ConfigError(f"{self.config_path} has no {key}")
        env_path = self.export_dir / ENV_FILE
        host = urllib.parse.urlsplit(self.properties["inference_address"]).hostname or "127.0.0.1"
        super().__init__(
            workdir=workdir,
            model_store=Path(self.properties.get("model_store", self.export_dir / MODEL_STORE_DIR)),
            settings=ServerSettings(
                host=host, env=read_env(env_path) if env_path.is_file() else {}
            ),
            startup_timeout_s=startup_timeout_s,
            port_attempts=1,
        )

    @property
    def inference_url(self) -> str:
        return self.properties["inference_address"]

    @property
    def management_url(self) -> str:
        return self.properties["management_address"]

    @property
    def metrics_url(self) -> str:
        return self.properties["metrics_address"]

    def config_properties(self) -> dict[str, Any]:
        return dict(self.properties)

    def _assign_ports(self) -> None:
        """The ports are the export's own: nothing to choose."""

    def _command(self) -> list[str]:
        # Only the export's config.properties: model store, model, workers, batching,
        # addresses and security settings all come from the file, as in production.
        return [
            torchserve_executable(),
            "--start",
            "--foreground",
            "--ncs",
            "--ts-config",
            str(self.config_path),
        ]

    def wait_model_ready(self, model_name: str, *, timeout_s: float = 180.0) -> dict[str, Any]:
        """Wait until every worker of the model loaded at start-up is READY; its description."""
        states: list[Any] = []

        def ready() -> dict[str, Any] | None:
            described = self.describe(model_name)[0]
            workers = described.get("workers", [])
            states[:] = [w.get("status") for w in workers]
            wanted = int(described.get("minWorkers", 1))
            if len(workers) >= wanted and all(w.get("status") == "READY" for w in workers):
                return described
            return None

        try:
            return wait_until(
                ready, timeout_s=timeout_s, what=f"{model_name}: workers not ready",
                first_delay_s=0.2, max_delay_s=2.0, error=DeploymentError,
            )  # fmt: skip
        except DeploymentError as exc:
            raise DeploymentError(f"{exc} ({json.dumps(states)}); see {self.log_dir}") from None
