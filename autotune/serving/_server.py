"""One TorchServe process of our own: generated config, own folder, own pid, always stopped.

``TorchServe`` starts ``torchserve --start --foreground`` as a child in its own session, in a
private working folder (``key_file.json``, ``logs/`` and TorchServe's pid file live there: its
``$TMPDIR`` is private too), waits for ``/ping`` with a deadline, and stops the whole process
group by our own pid: never ``torchserve --stop``, which stops whatever server the global pid
file names. Token authorisation stays on; the tokens are read from the generated key file.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, Self

from autotune._errors import ConfigError, DeploymentError, ServerError
from autotune.serving._java import find_java_home
from autotune.serving._process import ChildProcess, find_executable, wait_until
from autotune.serving._properties import Addresses, render_properties, server_properties

LOOPBACK = "127.0.0.1"
KEY_FILE = "key_file.json"
_live: set[TorchServe] = set()
_live_lock = threading.Lock()


@dataclass(frozen=True, kw_only=True)
class ServerSettings:
    """Server-level settings: changing one needs a restart (per-model ones do not)."""

    number_of_gpu: int = 0
    job_queue_size: int = 100
    host: str = LOOPBACK
    token_expiration_min: int = 24 * 60
    default_response_timeout_s: int = 120
    extra: Mapping[str, str] = field(default_factory=dict)
    # The environment of the server, which its workers inherit: threads per worker on cpu
    # (OMP_NUM_THREADS, MKL_NUM_THREADS) for handlers that do not set them themselves.
    env: Mapping[str, str] = field(default_factory=dict)


def free_port(host: str = LOOPBACK) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        port: int = s.getsockname()[1]
        return port


def _distinct_free_ports(host: str, count: int) -> tuple[int, ...]:
    ports: list[int] = []
    while len(ports) < count:
        port = free_port(host)
        if port not in ports:
            ports.append(port)
    return tuple(ports)


def torchserve_executable() -> str:
    return find_executable("torchserve") or "torchserve"


class TorchServe:
    """A TorchServe process owned by this object. Use it as a context manager."""

    def __init__(
        self,
        *,
        workdir: Path,
        model_store: Path,
        settings: ServerSettings = ServerSettings(),
        startup_timeout_s: float = 120.0,
        port_attempts: int = 3,
    ) -> None:
        self.workdir = workdir
        self.model_store = model_store
        self.settings = settings
        self.startup_timeout_s = startup_timeout_s
        self.port_attempts = port_attempts
        self._child: ChildProcess | None = None
        # inference, management, metrics, gRPC inference, gRPC management
        self._ports: tuple[int, ...] = (0, 0, 0, 0, 0)
        self._keys: dict[str, str] = {}
        self._log_offsets: dict[str, int] = {}
        self.starts = 0

    # -- addresses and tokens -------------------------------------------------------------
    @property
    def inference_url(self) -> str:
        return f"http://{self.settings.host}:{self._ports[0]}"

    @property
    def management_url(self) -> str:
        return f"http://{self.settings.host}:{self._ports[1]}"

    @property
    def metrics_url(self) -> str:
        return f"http://{self.settings.host}:{self._ports[2]}"

    @property
    def log_dir(self) -> Path:
        return self.workdir / "logs"

    @property
    def pid(self) -> int | None:
        return self._child.pid if self._child is not None else None

    def inference_headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self._keys['inference']}"} if self._keys else {}

    def management_headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self._keys['management']}"} if self._keys else {}

    def prediction_url(self, model_name: str) -> str:
        return f"{self.inference_url}/predictions/{urllib.parse.quote(model_name)}"

    # -- lifecycle ------------------------------------------------------------------------
    def config_properties(self) -> dict[str, Any]:
        s = self.settings
        return server_properties(
            addresses=Addresses(
                host=s.host,
                inference_port=self._ports[0],
                management_port=self._ports[1],
                metrics_port=self._ports[2],
                grpc_inference_port=self._ports[3],
                grpc_management_port=self._ports[4],
            ),
            model_store=self.model_store,
            number_of_gpu=s.number_of_gpu,
            job_queue_size=s.job_queue_size,
            default_response_timeout_s=s.default_response_timeout_s,
            enable_model_api=True,
            token_expiration_min=s.token_expiration_min,
            extra=s.extra,
        )

    def start(self) -> None:
        if self.is_alive():
            return
        last_error: ServerError | None = None
        for _ in range(self.port_attempts):
            try:
                self._start_once()
                return
            except _PortTakenError as exc:
                last_error = exc
        assert last_error is not None
        raise last_error

    def _assign_ports(self) -> None:
        self._ports = _distinct_free_ports(self.settings.host, 5)

    def _command(self) -> list[str]:
        """Write the generated config.properties; the command that starts TorchServe on it."""
        config_path = self.workdir / "config.properties"
        config_path.write_text(render_properties(self.config_properties()))
        return [
            torchserve_executable(),
            "--start",
            "--foreground",
            "--ncs",
            "--ts-config",
            str(config_path),
            "--model-store",
            str(self.model_store),
        ]

    def _start_once(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True, mode=0o700)
        os.chmod(self.workdir, 0o700)
        tmp = self.workdir / "tmp"
        tmp.mkdir(exist_ok=True)
        self.log_dir.mkdir(exist_ok=True)
        (self.workdir / KEY_FILE).unlink(missing_ok=True)
        self._log_offsets = {
            p.name: p.stat().st_size for p in self.log_dir.iterdir() if p.is_file()
        }
        self._assign_ports()
        env = dict(os.environ)
        env.update(
            JAVA_HOME=str(find_java_home()),
            TMPDIR=str(tmp),
            TEMP=str(tmp),
            LOG_LOCATION=str(self.log_dir),
            METRICS_LOCATION=str(self.log_dir),
        )
        env.update(self.settings.env)
        env.pop("TS_CONFIG_FILE", None)  # it would beat --ts-config
        cmd = self._command()
        self._child = ChildProcess(
            cmd,
            name="torchserve",
            cwd=self.workdir,
            env=env,
            log_path=self.log_dir / "torchserve.out",
        )
        self._child.start()
        with _live_lock:
            _live.add(self)
        self.starts += 1
        try:
            self._wait_ready()
        except BaseException:
            self.stop()
            raise

    def _wait_ready(self) -> None:
        def answers() -> bool:
            if not self.is_alive():
                tail = self.log_tail()
                if "Address already in use" in tail or "BindException" in tail:
                    raise _PortTakenError("TorchServe could not bind its ports: already in use")
                raise ServerError(
                    f"TorchServe exited during start-up; see {self.log_dir}: {_last_line(tail)}"
                )
            key_path = self.workdir / KEY_FILE
            if key_path.exists() and not self._keys:
                self._keys = _read_keys(key_path)
            return bool(self._keys) and self.ping()

        wait_until(
            answers,
            timeout_s=self.startup_timeout_s,
            what=f"TorchServe did not answer /ping (see the logs in {self.log_dir})",
        )

    def is_alive(self) -> bool:
        return self._child is not None and self._child.is_alive()

    def stop(self, timeout_s: float = 30.0) -> None:
        """Stop the server and every process it started (workers included). Idempotent."""
        child = self._child
        if child is None:
            return
        child.stop(timeout_s)
        self._child = None
        self._keys = {}
        (self.workdir / KEY_FILE).unlink(missing_ok=True)
        with _live_lock:
            _live.discard(self)

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def log_tail(self, lines: int = 40) -> str:
        """The last lines each log got since the latest start."""
        chunks = []
        for name in ("torchserve.out", "ts_log.log", "model_log.log"):
            path = self.log_dir / name
            if path.exists():
                with path.open("rb") as f:
                    f.seek(0, os.SEEK_END)
                    f.seek(max(self._log_offsets.get(name, 0), f.tell() - 16_000))
                    text = f.read().decode(errors="replace")
                chunks.append("\n".join(text.splitlines()[-lines:]))
        return "\n".join(chunks)

    # -- REST -----------------------------------------------------------------------------
    def ping(self) -> bool:
        try:
            status, _ = self._request(
                "GET", f"{self.inference_url}/ping", inference=True, timeout=5
            )
        except ServerError:
            return False
        return status == 200

    def register(
        self,
        *,
        model_name: str,
        url: str,
        batch_size: int,
        max_batch_delay_ms: int,
        workers: int,
        response_timeout_s: int,
        startup_timeout_s: int = 300,
    ) -> float:
        """Register synchronously; returns the seconds it took. DeploymentError on failure."""
        query = urllib.parse.urlencode(
            {
                "url": url,
                "model_name": model_name,
                "batch_size": batch_size,
                # TorchServe reads a delay <= 0 as "not given"; 1 ms is the smallest it honours.
                "max_batch_delay": max(1, max_batch_delay_ms),
                "initial_workers": workers,
                "synchronous": "true",
                "response_timeout": response_timeout_s,
                "startup_timeout": startup_timeout_s,
            }
        )
        started = time.monotonic()
        try:
            status, body = self._request(
                "POST", f"{self.management_url}/models?{query}", timeout=startup_timeout_s + 30
            )
        except ServerError as exc:
            raise DeploymentError(f"registering {model_name} failed: {exc}") from exc
        if status != 200:
            raise DeploymentError(
                f"registering {model_name} failed with HTTP {status}: {_message(body)}"
            )
        return time.monotonic() - started

    def unregister(self, model_name: str, *, timeout_s: float = 120) -> None:
        with contextlib.suppress(ServerError):
            self._request(
                "DELETE",
                f"{self.management_url}/models/{urllib.parse.quote(model_name)}",
                timeout=timeout_s,
            )

    def describe(self, model_name: str) -> list[dict[str, Any]]:
        status, body = self._request(
            "GET", f"{self.management_url}/models/{urllib.parse.quote(model_name)}", timeout=30
        )
        if status != 200:
            raise ServerError(
                f"describing {model_name} failed with HTTP {status}: {_message(body)}"
            )
        result: list[dict[str, Any]] = json.loads(body)
        return result

    def _request(
        self, method: str, url: str, *, inference: bool = False, timeout: float = 30
    ) -> tuple[int, bytes]:
        headers = self.inference_headers() if inference else self.management_headers()
        request = urllib.request.Request(url, method=method, headers=headers)
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                return int(response.status), bytes(response.read())
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read()
        except (urllib.error.URLError, OSError) as exc:
            raise ServerError(f"{method} {url.split('?')[0]} failed: {exc}") from exc


class _PortTakenError(ServerError):
    pass


def _keys_in(text: str) -> dict[str, str]:
    """The tokens of a key file's text, by kind (``inference``, ``management``); only the kinds
    that hold a non-empty key (none for a file that is not one, or not yet written whole)."""
    try:
        data = json.loads(text)
    except ValueError:
        return {}
    keys: dict[str, str] = {}
    for kind in ("inference", "management"):
        section = data.get(kind) if isinstance(data, dict) else None
        key = section.get("key") if isinstance(section, dict) else None
        if isinstance(key, str) and key:
            keys[kind] = key
    return keys


def _read_keys(path: Path) -> dict[str, str]:
    """The tokens of the key file; empty while TorchServe is still writing it."""
    os.chmod(path, 0o600)
    keys = _keys_in(path.read_text())
    return keys if len(keys) == 2 else {}


def inference_key(path: Path) -> str:
    """The inference token of a key file TorchServe wrote (``key_file.json``, in the folder it
    was started from, while token authorisation is on): what a client sends as
    ``Authorization: Bearer <key>``."""
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigError(f"cannot read the key file {path}: {exc.strerror or exc}") from exc
    key = _keys_in(text).get("inference")
    if key is None:
        raise ConfigError(
            f"{path} is not a TorchServe key file (no inference key): give the {KEY_FILE} "
            "TorchServe wrote in the folder it was started from"
        )
    return key


def _message(body: bytes) -> str:
    try:
        return str(json.loads(body).get("message", body[:200].decode(errors="replace")))
    except (ValueError, AttributeError):
        return body[:200].decode(errors="replace")


def _last_line(text: str) -> str:
    lines = [line for line in text.splitlines() if line.strip()]
    return lines[-1][:300] if lines else "no output"


def stop_all() -> None:
    """Stop every server this process started (the CLI calls it on exit and on signals)."""
    with _live_lock:
        servers = list(_live)
    for server in servers:
        server.stop()
