"""The search space: what a study may deploy, read from YAML and told to Optuna.

YAML format (``search_spaces/*.yaml``)::

    parameters:                                   # required
      device: {choices: [cpu, cuda]}              # required
      fp16: {choices: [false, true]}              # cuda only; absent: [false]
      torchscript: {choices: [false, true]}       # absent: [false]
      compile: {choices: [false, true]}           # torch.compile; absent: [false]
      workers: {low: 1, high: 4}                  # required
      batch_size: {choices: [1, 2, 4, 8, 16]}     # required
      max_batch_delay_ms: {choices: [1, 5, 10, 25, 50, 100]}   # required
      threads_per_worker: {low: 1, high: 4}       # cpu only; absent: torch's default (0)
    baseline: {workers: 2}                        # optional, see below

An integer parameter is ``{choices: [...]}`` or ``{low: L, high: H}`` (every integer from L to
H). ``workers``, ``batch_size`` and ``max_batch_delay_ms`` may also be given per device:
``{cpu: {low: 1, high: 4}, cuda: {choices: [1, 2]}}``, with an entry for every device in
``device``. Bounds: workers >= 1, batch_size >= 1, max_batch_delay_ms >= 0,
threads_per_worker >= 1. ``baseline`` overrides fields of TorchServe's default configuration
(keys and meaning as in :class:`~autotune._config.TrialConfig`) for the baseline trial.
Any error raises :class:`~autotune._errors.ConfigError` with one line naming the file, the key
and the rule.

Representation in Optuna (what the dashboard shows)
---------------------------------------------------
A study's params are the deployment's own names and values, so the dashboard's trial table and
importance chart read ``batch_size: 8``, ``max_batch_delay_ms: 5``:

* ``device``: categorical over the devices of the space; ``fp16``: categorical, asked on cuda
  trials only (fp16 on cpu cannot arise).
* ``torchscript``: categorical ``False``/``True``, when the space offers no ``compile``;
  otherwise ``graph``: categorical over the graph modes ``eager``, ``torchscript``,
  ``compile`` that the space holds (a configuration has at most one of TorchScript and compile).
* ``workers``, ``batch_size``, ``max_batch_delay_ms``, ``threads_per_worker``: integers over the
  range of their values (log-scaled when the values are powers of two), moved to the nearest
  value of the trial's device where the values differ per device.
* ``threads_per_worker`` is asked on cpu trials only; a cuda configuration gets 0 ("not
  applicable") and its trial has no such parameter.

How a sampler models them (features, encodings) is the sampler's business
(``autotune/study/_sampler.py``), not the study's. Params of the encoded form that earlier
studies stored (``backend``, ``batch_size_log2``, ``max_batch_delay_ms_index``) are still read.

Several parameter sets may give one configuration (clamped workers);
:meth:`SearchSpace.params_for` returns the canonical one, and ``TrialConfig`` equality tells
the study that a configuration was measured already.

The baseline
------------
:meth:`SearchSpace.baseline` starts from TorchServe's defaults (:func:`torchserve_default`:
batch 1, fp32, eager, 100 ms delay, torch's threads, one worker per GPU or per logical CPU)
with the YAML's ``baseline`` overrides, and moves every field to the nearest value in the
space, so that the baseline can be enqueued as ordinary parameters: an enqueued value outside
its distribution makes Optuna warn and hands the sampler a point outside its space. "Torch's
default threads" (0) is resolved first to the count torch picks, one per core, when the space
has a threads range.
"""

from __future__ import annotations

import dataclasses
import enum
import importlib.resources
import itertools
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, Literal, NoReturn, get_args

import optuna
import yaml
from optuna.distributions import BaseDistribution, CategoricalDistribution, IntDistribution

from autotune._errors import ConfigError
from autotune.space._config import PARAMETERS, Device, Hardware, TrialConfig

__all__ = [
    "MAX_WORKERS_PER_GPU",
    "Backend",
    "PerDevice",
    "SearchSpace",
    "builtin_space",
    "load_space",
    "torchserve_default",
]

DEVICES: Final[tuple[Device, ...]] = get_args(Device)

# A generous bound on workers per GPU: they share its memory and the host's CPU-side pre- and
# post-processing. The Animated Drawings article searched 1..16 workers on one GPU.
MAX_WORKERS_PER_GPU: Final = 16

# A parameter with more values than this is almost certainly a typo (``high: 100000``).
_MAX_VALUES: Final = 10_000

_SPACE_FORMAT: Final = 1

_PARAMETERS: Final = PARAMETERS
_REQUIRED: Final = ("device", "workers", "batch_size", "max_batch_delay_ms")
_PER_DEVICE: Final = ("workers", "batch_size", "max_batch_delay_ms")
_MINIMUM: Final = {"workers": 1, "batch_size": 1, "max_batch_delay_ms": 0, "threads_per_worker": 1}


class Backend(enum.StrEnum):
    """Device and precision as one categorical choice: fp16 exists on cuda only."""

    CPU_FP32 = "cpu_fp32"
    CUDA_FP32 = "cuda_fp32"
    CUDA_FP16 = "cuda_fp16"

    @property
    def device(self) -> Device:
        return "cpu" if self is Backend.CPU_FP32 else "cuda"

    @property
    def fp16(self) -> bool:
        return self is Backend.CUDA_FP16

    @classmethod
    def of(cls, device: Device, fp16: bool) -> Backend:
        if device == "cpu":
            return cls.CPU_FP32
        return cls.CUDA_FP16 if fp16 else cls.CUDA_FP32


@dataclass(frozen=True, kw_only=True)
class PerDevice:
    """The sorted values an integer parameter takes on each device (empty: device absent)."""

    cpu: tuple[int, ...] = ()
    cuda: tuple[int, ...] = ()

    @classmethod
    def same(cls, values: Sequence[int], devices: Sequence[Device] = DEVICES) -> PerDevice:
        return cls(**{d: tuple(values) for d in devices})

    def __getitem__(self, device: Device) -> tuple[int, ...]:
        return self.cpu if device == "cpu" else self.cuda

    def union(self) -> tuple[int, ...]:
        return tuple(sorted({*self.cpu, *self.cuda}))

    def to_dict(self) -> dict[str, list[int]]:
        return {d: list(self[d]) for d in DEVICES if self[d]}


@dataclass(frozen=True)
class _Ordinal:
    """How an integer parameter's sorted values map to one Optuna ``IntDistribution``."""

    name: str
    values: tuple[int, ...]

    @property
    def kind(self) -> Literal["value", "log2", "index"]:
        lo, hi = self.values[0], self.values[-1]
        if self.values == tuple(range(lo, hi + 1)):
            return "value"
        exponents = range(lo.bit_length() - 1, hi.bit_length())
        if lo >= 1 and self.values == tuple(2**e for e in exponents):
            return "log2"
        return "index"

    @property
    def param(self) -> str:
        kind = self.kind
        return self.name if kind == "value" else f"{self.name}_{kind}"

    def distribution(self) -> IntDistribution:
        return IntDistribution(self.encode(self.values[0]), self.encode(self.values[-1]))

    def encode(self, value: int) -> int:
        kind = self.kind
        if kind == "value":
            return value
        if kind == "log2":
            return value.bit_length() - 1
        return self.values.index(value)

    def decode(self, x: int) -> int:
        kind = self.kind
        if kind == "value":
            return x
        if kind == "log2":
            return int(2**x)
        return self.values[x]


def _nearest(values: Sequence[int], target: int) -> int:
    """The value closest to ``target``; the lower one on a tie."""
    return min(values, key=lambda v: (abs(v - target), v))


@dataclass(frozen=True, kw_only=True)
class SearchSpace:
    """The configurations a study may deploy; see the module docstring for the representation.

    Build one with :func:`load_space`, then :meth:`filtered` by the host's hardware.
    """

    backends: tuple[Backend, ...]
    torchscript: tuple[bool, ...] = (False,)
    compile: tuple[bool, ...] = (False,)
    workers: PerDevice
    batch_size: PerDevice
    max_batch_delay_ms: PerDevice
    threads_per_worker: tuple[int, ...] = (0,)
    baseline_override: Mapping[str, Any] = field(default_factory=dict, hash=False)
    source: str = field(default="<search space>", compare=False)

    def __post_init__(self) -> None:
        if not self.backends or len(set(self.backends)) != len(self.backends):
            raise ValueError(f"`backends` must be non-empty and unique, got {self.backends}.")
        object.__setattr__(self, "backends", tuple(b for b in Backend if b in self.backends))
        _check_sorted("torchscript", self.torchscript)
        _check_sorted("compile", self.compile)
        if not self.graphs:
            raise ValueError("`torchscript` and `compile` leave no graph mode: one must be False.")
        _check_sorted("threads_per_worker", self.threads_per_worker)
        for name in _PER_DEVICE:
            per_device: PerDevice = getattr(self, name)
            for device in DEVICES:
                values = per_device[device]
                if device in self.devices:
                    _check_sorted(f"{name}.{device}", values)
                elif values:
                    raise ValueError(f"`{name}.{device}` given, but {device} is not a device.")

    # -- what the space holds -------------------------------------------------------------

    @property
    def devices(self) -> tuple[Device, ...]:
        return tuple(d for d in DEVICES if any(b.device == d for b in self.backends))

    @property
    def graphs(self) -> tuple[tuple[bool, bool], ...]:
        """The ``(torchscript, compile)`` pairs of the space: at most one of them is True."""
        return tuple((ts, c) for ts in self.torchscript for c in self.compile if not (ts and c))

    def _threads(self, device: Device) -> tuple[int, ...]:
        return self.threads_per_worker if device == "cpu" else (0,)

    def size(self) -> int:
        """The number of distinct configurations."""
        return sum(
            len(self.graphs)
            * len(self.workers[b.device])
            * len(self.batch_size[b.device])
            * len(self.max_batch_delay_ms[b.device])
            * len(self._threads(b.device))
            for b in self.backends
        )

    def configs(self) -> Iterator[TrialConfig]:
        """Every configuration, each once (``size()`` of them)."""
        for backend in self.backends:
            device = backend.device
            for (ts, c), w, b, d, t in itertools.product(
                self.graphs,
                self.workers[device],
                self.batch_size[device],
                self.max_batch_delay_ms[device],
                self._threads(device),
            ):
                yield TrialConfig(
                    device=device,
                    fp16=backend.fp16,
                    torchscript=ts,
                    compile=c,
                    workers=w,
                    batch_size=b,
                    max_batch_delay_ms=d,
                    threads_per_worker=t,
                )

    def contains(self, config: TrialConfig) -> bool:
        """Whether ``config`` is one of :meth:`configs` (threads 0 on cuda)."""
        device = config.device
        return (
            Backend.of(device, config.fp16) in self.backends
            and (config.torchscript, config.compile) in self.graphs
            and config.workers in self.workers[device]
            and config.batch_size in self.batch_size[device]
            and config.max_batch_delay_ms in self.max_batch_delay_ms[device]
            and config.threads_per_worker in self._threads(device)
        )

    def nearest(self, config: TrialConfig) -> TrialConfig:
        """The configuration of this space closest to ``config``, field by field."""
        devices = self.devices
        device = config.device if config.device in devices else devices[0]
        wanted = Backend.of(device, config.fp16)
        backend = wanted if wanted in self.backends else self._backends_on(device)[0]
        wanted_graph = (config.torchscript, config.compile)
        ts, c = wanted_graph if wanted_graph in self.graphs else self.graphs[0]
        return TrialConfig(
            device=device,
            fp16=backend.fp16,
            torchscript=ts,
            compile=c,
            workers=_nearest(self.workers[device], config.workers),
            batch_size=_nearest(self.batch_size[device], config.batch_size),
            max_batch_delay_ms=_nearest(self.max_batch_delay_ms[device], config.max_batch_delay_ms),
            threads_per_worker=_nearest(self._threads(device), config.threads_per_worker),
        )

    def _backends_on(self, device: Device) -> list[Backend]:
        return [b for b in self.backends if b.device == device]

    def baseline(self, hw: Hardware) -> TrialConfig:
        """TorchServe's default configuration on ``hw`` with the YAML's overrides, moved into
        the space (see the module docstring)."""
        override = dict(self.baseline_override)
        devices = self.devices
        device: Device = override.pop("device", "cuda" if hw.gpus > 0 else "cpu")
        if device not in devices:
            device = devices[0]
        if device == "cpu":
            override.pop("fp16", None)
        config = dataclasses.replace(torchserve_default(hw, device=device), **override)
        if device == "cpu" and config.threads_per_worker == 0 and 0 not in self.threads_per_worker:
            config = dataclasses.replace(config, threads_per_worker=hw.cpu_cores)
        return self.nearest(config)

    # -- hardware ---------------------------------------------------------------------------

    def filtered(self, hw: Hardware) -> SearchSpace:
        """The part of the space this hardware can run: cuda only with a GPU, at most
        ``hw.cpu_cores`` workers and threads per worker on cpu, at most
        ``MAX_WORKERS_PER_GPU`` workers per GPU on cuda."""
        where = self.source
        backends = tuple(b for b in self.backends if hw.gpus > 0 or b.device == "cpu")
        if not backends:
            raise ConfigError(
                f"{where}: parameters.device: only cuda is allowed, but this host has no GPU "
                "(nvidia-smi found none); add cpu to the choices"
            )
        devices = [d for d in DEVICES if any(b.device == d for b in backends)]
        limits: dict[Device, tuple[int, str]] = {
            "cpu": (hw.cpu_cores, f"the {hw.cpu_cores} CPU cores of this host"),
            "cuda": (
                MAX_WORKERS_PER_GPU * hw.gpus,
                f"{MAX_WORKERS_PER_GPU} per GPU x {hw.gpus} GPU(s) on this host",
            ),
        }
        workers: dict[str, tuple[int, ...]] = {}
        for device in devices:
            limit, why = limits[device]
            kept = tuple(v for v in self.workers[device] if v <= limit)
            if not kept:
                raise ConfigError(
                    f"{where}: parameters.workers: no {device} value is at most {why} "
                    f"(lowest is {self.workers[device][0]})"
                )
            workers[device] = kept
        threads = self.threads_per_worker
        if "cpu" not in devices:
            threads = (0,)
        elif threads != (0,):  # (0,): torch's default, nothing to bound
            threads = tuple(v for v in threads if v <= hw.cpu_cores)
            if not threads:
                raise ConfigError(
                    f"{where}: parameters.threads_per_worker: no value is at most the "
                    f"{hw.cpu_cores} CPU cores of this host "
                    f"(lowest is {self.threads_per_worker[0]})"
                )

        def keep(per_device: PerDevice) -> PerDevice:
            return PerDevice(**{d: per_device[d] for d in devices})

        return dataclasses.replace(
            self,
            backends=backends,
            workers=PerDevice(**workers),
            batch_size=keep(self.batch_size),
            max_batch_delay_ms=keep(self.max_batch_delay_ms),
            threads_per_worker=threads,
        )

    # -- Optuna ---------------------------------------------------------------------------------

    def _ordinals(self) -> dict[str, _Ordinal]:
        return {
            "workers": _Ordinal("workers", self.workers.union()),
            "batch_size": _Ordinal("batch_size", self.batch_size.union()),
            "max_batch_delay_ms": _Ordinal("max_batch_delay_ms", self.max_batch_delay_ms.union()),
            "threads_per_worker": _Ordinal("threads_per_worker", self.threads_per_worker),
        }

    def _fp16_choices(self) -> list[bool]:
        return [b.fp16 for b in self.backends if b.device == "cuda"]

    def distributions(self) -> dict[str, BaseDistribution]:
        """The Optuna parameters, in the order :meth:`suggest` asks for them: the deployment's
        own names and values (see the module docstring)."""
        dists: dict[str, BaseDistribution] = {
            "device": CategoricalDistribution(list(self.devices)),
        }
        if "cuda" in self.devices:
            dists["fp16"] = CategoricalDistribution(self._fp16_choices())
        if self.compile == (False,):
            dists["torchscript"] = CategoricalDistribution(list(self.torchscript))
        else:
            dists["graph"] = CategoricalDistribution([_graph_name(g) for g in self.graphs])
        for name, ordinal in self._ordinals().items():
            values = ordinal.values
            log = ordinal.kind == "log2" and len(values) > 2
            dists[name] = IntDistribution(values[0], values[-1], log=log)
        return dists

    def applies(self, param: str, device: str) -> bool:
        """Whether ``param`` is asked on a trial of ``device`` (fp16: cuda only; threads: cpu
        only). ``device`` may also be a :class:`Backend` value."""
        if device in {b.value for b in Backend}:
            device = Backend(device).device
        if param == "fp16":
            return device == "cuda"
        return param != "threads_per_worker" or device == "cpu"

    def suggest(self, trial: optuna.trial.BaseTrial) -> TrialConfig:
        """Ask ``trial`` for one configuration of this space."""
        params: dict[str, Any] = {}
        for name, dist in self.distributions().items():
            if name != "device" and not self.applies(name, params["device"]):
                continue
            if isinstance(dist, CategoricalDistribution):
                params[name] = trial.suggest_categorical(name, dist.choices)
            else:
                assert isinstance(dist, IntDistribution)
                params[name] = trial.suggest_int(name, dist.low, dist.high, log=dist.log)
        return self.config_from_params(params)

    def config_from_params(self, params: Mapping[str, Any]) -> TrialConfig:
        """The configuration that Optuna ``params`` (of :meth:`distributions`) stand for; a
        value between two of the device's values moves to the nearest one. Params of the
        encoded form that studies stored before (``backend``, ``batch_size_log2``...) are read
        too."""
        if "backend" in params:
            return self._legacy_config(params)
        dists = self.distributions()
        device_value = params.get("device")
        if device_value in self.devices:
            dists = {n: d for n, d in dists.items() if self.applies(n, device_value)}
        self._check_params(params, dists)
        device: Device = params["device"]
        fp16 = bool(params.get("fp16", False))
        values = {
            name: 0
            if name == "threads_per_worker" and device != "cpu"
            else _nearest(self._values(name, device), params[name])
            for name in self._ordinals()
        }
        if "graph" in params:
            ts, c = _GRAPH_MODES[params["graph"]]
        else:
            ts, c = bool(params["torchscript"]), False
        return TrialConfig(device=device, fp16=fp16, torchscript=ts, compile=c, **values)

    def _values(self, name: str, device: Device) -> tuple[int, ...]:
        if name == "threads_per_worker":
            return self._threads(device)
        per_device: PerDevice = getattr(self, name)
        return per_device[device]

    def _check_params(
        self, params: Mapping[str, Any], dists: Mapping[str, BaseDistribution]
    ) -> None:
        if set(params) != set(dists):
            raise ConfigError(
                f"{self.source}: parameters {sorted(params)} do not match this search space's "
                f"{sorted(dists)}; the space changed since the trial was made"
            )
        for name, dist in dists.items():
            value = params[name]
            if isinstance(dist, IntDistribution):
                contained = _is_int(value) and dist.low <= value <= dist.high
            else:
                assert isinstance(dist, CategoricalDistribution)
                contained = any(type(value) is type(c) and value == c for c in dist.choices)
            if not contained:
                raise ConfigError(
                    f"{self.source}: parameter {name}={value!r} is outside this search space's "
                    f"{dist}; the space changed since the trial was made"
                )

    def params_for(self, config: TrialConfig) -> dict[str, Any]:
        """The canonical Optuna params of ``config`` (for ``study.enqueue_trial``); inverse of
        :meth:`config_from_params`. Raises :class:`ConfigError` if the space lacks ``config``."""
        if not self.contains(config):
            raise ConfigError(
                f"{self.source}: configuration {config.label()} is not in this search space"
            )
        params: dict[str, Any] = {"device": config.device}
        if config.device == "cuda":
            params["fp16"] = config.fp16
        if self.compile == (False,):
            params["torchscript"] = config.torchscript
        else:
            params["graph"] = _graph_name((config.torchscript, config.compile))
        for name in self._ordinals():
            if self.applies(name, config.device):
                params[name] = getattr(config, name)
        return params

    # The encoding studies stored before the params became the deployment's own values: one
    # categorical backend (device and precision), and integer parameters as themselves, as the
    # exponent of consecutive powers of two (``batch_size_log2``) or as an index into the sorted
    # values (``max_batch_delay_ms_index``). Read for resumed studies, and used by samplers
    # that model that encoding (``autotune.study.make_sampler``).

    def encoded_distributions(self) -> dict[str, BaseDistribution]:
        """The encoded form's distributions (see the comment above)."""
        dists: dict[str, BaseDistribution] = {
            "backend": CategoricalDistribution([b.value for b in self.backends]),
        }
        if self.compile == (False,):
            dists["torchscript"] = CategoricalDistribution(list(self.torchscript))
        else:
            dists["graph"] = CategoricalDistribution([_graph_name(g) for g in self.graphs])
        for ordinal in self._ordinals().values():
            dists[ordinal.param] = ordinal.distribution()
        return dists

    def encoded_params_for(self, config: TrialConfig) -> dict[str, Any]:
        """``config`` in the encoded form (threads only on cpu)."""
        params: dict[str, Any] = {"backend": Backend.of(config.device, config.fp16).value}
        if self.compile == (False,):
            params["torchscript"] = config.torchscript
        else:
            params["graph"] = _graph_name((config.torchscript, config.compile))
        for name, ordinal in self._ordinals().items():
            if name != "threads_per_worker" or config.device == "cpu":
                params[ordinal.param] = ordinal.encode(getattr(config, name))
        return params

    def _legacy_config(self, params: Mapping[str, Any]) -> TrialConfig:
        dists = self.encoded_distributions()
        backend_value = params.get("backend")
        if backend_value in {b.value for b in self.backends}:
            dists = {n: d for n, d in dists.items() if self.applies(n, backend_value)}
            threads = self._ordinals()["threads_per_worker"].param
            if Backend(backend_value).device != "cpu":
                dists.pop(threads, None)
        self._check_params(params, dists)
        backend = Backend(params["backend"])
        device = backend.device
        values: dict[str, int] = {}
        for name, ordinal in self._ordinals().items():
            if ordinal.param not in params:  # threads on cuda: not applicable
                values[name] = 0
                continue
            values[name] = _nearest(
                self._values(name, device), ordinal.decode(params[ordinal.param])
            )
        if "graph" in params:
            ts, c = _GRAPH_MODES[params["graph"]]
        else:
            ts, c = bool(params["torchscript"]), False
        return TrialConfig(device=device, fp16=backend.fp16, torchscript=ts, compile=c, **values)

    # -- storage ----------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able data; equal for equal spaces (the source path is left out)."""
        return {
            "format": _SPACE_FORMAT,
            "backends": [b.value for b in self.backends],
            "torchscript": list(self.torchscript),
            "workers": self.workers.to_dict(),
            "batch_size": self.batch_size.to_dict(),
            "max_batch_delay_ms": self.max_batch_delay_ms.to_dict(),
            "threads_per_worker": list(self.threads_per_worker),
            "baseline": dict(self.baseline_override),
            # only when offered: a study stored before compile existed keeps its identity
            **({"compile": list(self.compile)} if self.compile != (False,) else {}),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], *, source: str = "<stored space>") -> SearchSpace:
        """The space :meth:`to_dict` gave ``data`` for."""
        try:
            if data["format"] != _SPACE_FORMAT:
                raise ValueError(f"format {data['format']!r} is not {_SPACE_FORMAT}")

            def per_device(raw: Mapping[str, Sequence[int]]) -> PerDevice:
                return PerDevice(**{d: tuple(raw[d]) for d in raw})

            return cls(
                backends=tuple(Backend(b) for b in data["backends"]),
                torchscript=tuple(data["torchscript"]),
                compile=tuple(data.get("compile", [False])),
                workers=per_device(data["workers"]),
                batch_size=per_device(data["batch_size"]),
                max_batch_delay_ms=per_device(data["max_batch_delay_ms"]),
                threads_per_worker=tuple(data["threads_per_worker"]),
                baseline_override=dict(data["baseline"]),
                source=source,
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ConfigError(f"{source}: not a stored search space: {exc}") from None


_GRAPH_MODES: Final[Mapping[str, tuple[bool, bool]]] = {
    "eager": (False, False),
    "torchscript": (True, False),
    "compile": (False, True),
}


def _graph_name(graph: tuple[bool, bool]) -> str:
    return next(name for name, pair in _GRAPH_MODES.items() if pair == graph)


def _check_sorted(name: str, values: Sequence[Any]) -> None:
    if not values or any(a >= b for a, b in itertools.pairwise(values)):
        raise ValueError(f"`{name}` must be non-empty, sorted and unique, got {values}.")


def torchserve_default(hw: Hardware, *, device: Device | None = None) -> TrialConfig:
    """What TorchServe deploys when told nothing: batch 1, fp32, eager, 100 ms delay, torch's
    default threads, and ``default_workers_per_model``'s fallback of one worker per GPU, else
    per logical CPU. ``device`` defaults to cuda when ``hw`` has a GPU."""
    if device is None:
        device = "cuda" if hw.gpus > 0 else "cpu"
    workers = hw.gpus if device == "cuda" else hw.cpu_cores
    return TrialConfig(device=device, workers=max(1, workers))


# -- loading -----------------------------------------------------------------------------------


def builtin_space(name: str) -> Path:
    """The path of a search space shipped in the ``search_spaces`` package (``quick`` ...)."""
    stem = name.removesuffix(".yaml")
    folder = importlib.resources.files("autotune.search_spaces")
    path = folder / f"{stem}.yaml"
    if not path.is_file():
        known = sorted(
            p.name.removesuffix(".yaml") for p in folder.iterdir() if p.name.endswith(".yaml")
        )
        raise ConfigError(f"no built-in search space {name!r}; built-in: {', '.join(known)}")
    return Path(str(path))


class _Loader(yaml.SafeLoader):
    """Safe YAML that refuses a key given twice in one mapping."""


def _construct_mapping(loader: _Loader, node: yaml.MappingNode) -> dict[Any, Any]:
    seen: set[Any] = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node)
        if key in seen:
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key {key!r}", key_node.start_mark
            )
        seen.add(key)
    return loader.construct_mapping(node)


_Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def load_space(path: Path) -> SearchSpace:
    """Read and validate a search-space YAML (format in the module docstring)."""
    source = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{source}: cannot read the search space: {exc}") from None
    try:
        data = yaml.load(text, Loader=_Loader)  # a SafeLoader
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError(f"{source}: {where}invalid YAML: {' '.join(problem.split())}") from None
    return _Reader(source).space(data)


class _Reader:
    """Turns the parsed YAML into a :class:`SearchSpace`, failing with one line."""

    def __init__(self, source: str) -> None:
        self.source = source

    def fail(self, key: str, rule: str) -> NoReturn:
        raise ConfigError(f"{self.source}: {key}: {rule}")

    def mapping(self, key: str, value: Any) -> Mapping[str, Any]:
        if not isinstance(value, Mapping):
            self.fail(key, f"must be a mapping, got {_kind(value)}")
        return value

    def only_keys(self, key: str, data: Mapping[str, Any], allowed: Sequence[str]) -> None:
        unknown = [k for k in data if k not in allowed]
        if unknown:
            self.fail(key, f"unknown key {unknown[0]!r}; known keys: {', '.join(allowed)}")

    def space(self, data: Any) -> SearchSpace:
        if not isinstance(data, Mapping):
            raise ConfigError(f"{self.source}: a search space must be a mapping, got {_kind(data)}")
        self.only_keys("(top level)", data, ("parameters", "baseline"))
        if "parameters" not in data:
            self.fail("parameters", "missing")
        params = self.mapping("parameters", data["parameters"])
        self.only_keys("parameters", params, _PARAMETERS)
        for name in _REQUIRED:
            if name not in params:
                self.fail(f"parameters.{name}", "missing")

        devices = self.choices("parameters.device", params["device"], self.device)
        fp16 = self.choices("parameters.fp16", params.get("fp16", {"choices": [False]}), self.bool)
        backends = tuple(
            Backend.of(d, f) for d in devices for f in (fp16 if d == "cuda" else (False,))
        )
        torchscript = self.choices(
            "parameters.torchscript", params.get("torchscript", {"choices": [False]}), self.bool
        )
        compile_ = self.choices(
            "parameters.compile", params.get("compile", {"choices": [False]}), self.bool
        )
        if True in torchscript and True in compile_ and len(torchscript) == len(compile_) == 1:
            self.fail("parameters.compile", "TorchScript and compile exclude each other")
        per_device = {name: self.per_device(name, params[name], devices) for name in _PER_DEVICE}
        threads: tuple[int, ...] = (0,)
        if "threads_per_worker" in params:
            threads = self.ints("threads_per_worker", params["threads_per_worker"])
        return SearchSpace(
            backends=backends,
            torchscript=torchscript,
            compile=compile_,
            threads_per_worker=threads,
            baseline_override=self.baseline(data.get("baseline", {})),
            source=self.source,
            **per_device,
        )

    def choices(self, key: str, spec: Any, item: Any) -> tuple[Any, ...]:
        spec = self.mapping(key, spec)
        self.only_keys(key, spec, ("choices",))
        if "choices" not in spec:
            self.fail(key, "give {choices: [...]}")
        values = spec["choices"]
        if not isinstance(values, list):
            self.fail(key, f"choices must be a list, got {_kind(values)}")
        if not values:
            self.fail(key, "choices must not be empty")
        return tuple(sorted({item(key, v) for v in values}))

    def device(self, key: str, value: Any) -> Device:
        if value not in DEVICES:
            self.fail(key, f"unknown device {value!r}; known devices: {', '.join(DEVICES)}")
        device: Device = value
        return device

    def bool(self, key: str, value: Any) -> bool:
        if not isinstance(value, bool):
            self.fail(key, f"choices must be true or false, got {value!r}")
        return value

    def per_device(self, name: str, spec: Any, devices: Sequence[Device]) -> PerDevice:
        key = f"parameters.{name}"
        spec = self.mapping(key, spec)
        if not any(d in spec for d in DEVICES):
            return PerDevice.same(self.ints(name, spec), devices)
        self.only_keys(key, spec, DEVICES)
        missing = [d for d in devices if d not in spec]
        if missing:
            self.fail(key, f"no values for device {missing[0]} (give {name}.{missing[0]})")
        given = {d: self.ints(name, spec[d], f"{key}.{d}") for d in DEVICES if d in spec}
        return PerDevice(**{d: given[d] for d in devices})

    def ints(self, name: str, spec: Any, key: str | None = None) -> tuple[int, ...]:
        key = key or f"parameters.{name}"
        spec = self.mapping(key, spec)
        minimum = _MINIMUM[name]
        if "choices" in spec:
            self.only_keys(key, spec, ("choices",))
            values = spec["choices"]
            if not isinstance(values, list):
                self.fail(key, f"choices must be a list, got {_kind(values)}")
            if not values:
                self.fail(key, "choices must not be empty")
            for v in values:
                if not _is_int(v):
                    self.fail(key, f"choices must be integers, got {v!r}")
                if v < minimum:
                    self.fail(key, f"values must be >= {minimum}, got {v}")
            return tuple(sorted(set(values)))
        if "low" in spec or "high" in spec:
            self.only_keys(key, spec, ("low", "high"))
            for bound in ("low", "high"):
                if bound not in spec:
                    self.fail(key, f"{bound} is missing (give both low and high)")
                if not _is_int(spec[bound]):
                    self.fail(key, f"{bound} must be an integer, got {spec[bound]!r}")
            low, high = spec["low"], spec["high"]
            if low > high:
                self.fail(key, f"`low <= high` must hold, but got (low={low}, high={high})")
            if low < minimum:
                self.fail(key, f"values must be >= {minimum}, got low={low}")
            if high - low + 1 > _MAX_VALUES:
                self.fail(key, f"at most {_MAX_VALUES} values, got {high - low + 1}; use choices")
            return tuple(range(low, high + 1))
        if name not in _PER_DEVICE and any(d in spec for d in DEVICES):
            self.fail(key, "applies to cpu only: give {choices: [...]} or {low: L, high: H}")
        self.only_keys(key, spec, ("choices", "low", "high"))
        if name in _PER_DEVICE and key == f"parameters.{name}":
            self.fail(key, "give {choices: [...]}, {low: L, high: H} or {cpu: ..., cuda: ...}")
        self.fail(key, "give {choices: [...]} or {low: L, high: H}")

    def baseline(self, data: Any) -> dict[str, Any]:
        data = self.mapping("baseline", data)
        fields = [f.name for f in dataclasses.fields(TrialConfig)]
        self.only_keys("baseline", data, fields)
        minimum = {**_MINIMUM, "threads_per_worker": 0}
        for name, value in data.items():
            key = f"baseline.{name}"
            if name == "device":
                self.device(key, value)
            elif name in ("fp16", "torchscript", "compile"):
                if not isinstance(value, bool):
                    self.fail(key, f"must be true or false, got {value!r}")
            elif not _is_int(value):
                self.fail(key, f"must be an integer, got {value!r}")
            elif value < minimum[name]:
                self.fail(key, f"must be >= {minimum[name]}, got {value}")
        if data.get("fp16") and data.get("device") == "cpu":
            self.fail("baseline.fp16", "fp16 needs device cuda")
        return dict(data)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _kind(value: Any) -> str:
    if value is None:
        return "nothing"
    return {list: "a list", str: "a string", bool: "a boolean", int: "a number"}.get(
        type(value), f"a {type(value).__name__}"
    )
