"""Plain, frozen data shared by every layer: one trial's deployment settings and the hardware."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Literal

Device = Literal["cpu", "cuda"]


@dataclass(frozen=True, kw_only=True)
class TrialConfig:
    """One point of the search space: everything a trial deploys.

    ``threads_per_worker`` 0 means "leave torch's default"; it only applies on cpu.
    ``fp16`` only applies on cuda. ``torchscript`` and ``compile`` (``torch.compile``) are the two
    graph modes besides eager; a configuration has at most one of them.
    """

    device: Device = "cpu"
    fp16: bool = False
    torchscript: bool = False
    compile: bool = False
    workers: int = 1
    batch_size: int = 1
    max_batch_delay_ms: int = 100
    threads_per_worker: int = 0

    def __post_init__(self) -> None:
        if self.device not in ("cpu", "cuda"):
            raise ValueError(f"`device` must be 'cpu' or 'cuda', but got {self.device!r}.")
        for name in ("workers", "batch_size"):
            value = getattr(self, name)
            if value < 1:
                raise ValueError(f"`{name} >= 1` must hold, but got ({name}={value}).")
        if self.max_batch_delay_ms < 0:
            raise ValueError(
                f"`max_batch_delay_ms >= 0` must hold, but got ({self.max_batch_delay_ms=})."
            )
        if self.threads_per_worker < 0:
            raise ValueError(
                f"`threads_per_worker >= 0` must hold, but got ({self.threads_per_worker=})."
            )
        if self.fp16 and self.device != "cuda":
            raise ValueError("`fp16` needs device 'cuda', but got device 'cpu'.")
        if self.torchscript and self.compile:
            raise ValueError("`torchscript` and `compile` exclude each other, but both are set.")

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrialConfig:
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})

    def handler_settings(self) -> dict[str, Any]:
        """The keys the handlers read from the ``handler:`` section of model-config.yaml."""
        return {
            "device": self.device,
            "fp16": self.fp16,
            "torchscript": self.torchscript,
            "compile": self.compile,
            "threads_per_worker": self.threads_per_worker,
        }

    def label(self) -> str:
        precision = "fp16" if self.fp16 else "fp32"
        mode = "ts" if self.torchscript else "compile" if self.compile else "eager"
        threads = f" t{self.threads_per_worker}" if self.device == "cpu" else ""
        return (
            f"{self.device}/{precision}/{mode} w{self.workers} b{self.batch_size} "
            f"d{self.max_batch_delay_ms}ms{threads}"
        )


# The names of a configuration's settings, in order: search-space keys and landscape columns.
PARAMETERS: tuple[str, ...] = tuple(f.name for f in dataclasses.fields(TrialConfig))


@dataclass(frozen=True, kw_only=True)
class Hardware:
    """What the tuner found on this host."""

    cpu_cores: int
    gpus: int = 0
    gpu_names: tuple[str, ...] = ()
