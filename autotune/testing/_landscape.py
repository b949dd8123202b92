"""A landscape: every configuration of a search space with its goodput, read from a CSV.

Format (one row per configuration; a header line names the columns, in any order)::

    device,fp16,torchscript,compile,workers,batch_size,max_batch_delay_ms,threads_per_worker,throughput_rps,p99_ms,sla_ms
    cuda,true,true,false,1,8,5,0,108.0,98.8,100

* ``device`` is ``cpu`` or ``cuda``; ``fp16``, ``torchscript`` and ``compile`` are ``true`` or
  ``false`` (``compile`` is optional: absent means false); ``threads_per_worker`` is read on cpu
  rows only (0 = torch's default; write 0 on cuda rows).
* ``throughput_rps`` is goodput: the highest request rate served with P99 <= the SLA and no
  errors; 0 when even light load breaks the SLA.
* ``p99_ms`` is the P99 at that rate, or at light load when the goodput is 0; empty when the
  deployment failed (out of memory, a worker crash).
* ``sla_ms`` (optional, one value for every row) is the SLA the goodput was measured for.

The search space is the one the distinct values of each column span (per device for workers,
batch size and delay; threads from the cpu rows); a configuration of that space that the file
lacks is a failed deployment.
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from autotune._errors import ConfigError
from autotune.space import (
    PARAMETERS,
    Backend,
    Device,
    Hardware,
    PerDevice,
    SearchSpace,
    TrialConfig,
)

__all__ = [
    "COLUMNS",
    "OPTIONAL_COLUMNS",
    "Landscape",
    "LandscapeError",
    "Row",
    "landscape_files",
    "read_landscape",
    "space_from_configs",
    "write_landscape",
]

# compile is optional in a landscape (absent: false), as is sla_ms
COLUMNS: Final = (*(p for p in PARAMETERS if p != "compile"), "throughput_rps", "p99_ms")
OPTIONAL_COLUMNS: Final = ("compile", "sla_ms")


class LandscapeError(ConfigError):
    """A landscape CSV that cannot be used; the message names the file, the line and the rule."""


@dataclass(frozen=True, kw_only=True)
class Row:
    throughput_rps: float
    p99_ms: float  # NaN: the deployment failed


@dataclass(frozen=True, kw_only=True)
class Landscape:
    """The table, and the search space its distinct values span."""

    source: str
    rows: Mapping[TrialConfig, Row]
    space: SearchSpace
    sla_ms: float | None = None  # the SLA the goodput was measured for, when the CSV says

    def feasible_rps(self, config: TrialConfig, sla_ms: float) -> float:
        """The goodput the table gives ``config`` under ``sla_ms``; 0 if absent or over."""
        row = self.rows.get(config)
        if row is None or not row.p99_ms <= sla_ms:
            return 0.0
        return row.throughput_rps

    def best(self, sla_ms: float) -> tuple[TrialConfig, float]:
        config = max(self.rows, key=lambda c: self.feasible_rps(c, sla_ms))
        return config, self.feasible_rps(config, sla_ms)

    def hardware(self) -> Hardware:
        """The host the landscape stands for: a GPU if it has cuda rows, and as many cores as
        its largest cpu worker or thread count (what the tuner's baseline starts from)."""
        cores = max(
            (v for c in self.rows if c.device == "cpu" for v in (c.workers, c.threads_per_worker)),
            default=1,
        )
        return Hardware(cpu_cores=max(1, cores), gpus=int("cuda" in self.space.devices))


def _bool(value: str) -> bool:
    lowered = value.strip().lower()
    if lowered in ("true", "1", "yes"):
        return True
    if lowered in ("false", "0", "no"):
        return False
    raise ValueError(f"not a boolean: {value!r}")


def _float(value: str) -> float:
    return math.nan if value.strip() in ("", "nan", "NaN") else float(value)


def read_landscape(path: Path) -> Landscape:
    """Read a landscape CSV (format in the module docstring) and build its search space."""
    source = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise LandscapeError(f"{source}: cannot read the landscape: {exc}") from None
    reader = csv.DictReader(text.splitlines())
    missing = [c for c in COLUMNS if c not in (reader.fieldnames or ())]
    if missing:
        raise LandscapeError(
            f"{source}: missing column(s) {', '.join(missing)}; a landscape has the columns "
            f"{','.join(COLUMNS)} (and optionally {', '.join(OPTIONAL_COLUMNS)})"
        )
    rows: dict[TrialConfig, Row] = {}
    slas: set[float] = set()
    for line, record in enumerate(reader, start=2):
        try:
            device = record["device"].strip()
            if device not in ("cpu", "cuda"):
                raise ValueError(f"device must be cpu or cuda, got {device!r}")
            threads = int(record["threads_per_worker"]) if device == "cpu" else 0
            config = TrialConfig(
                device="cpu" if device == "cpu" else "cuda",
                fp16=_bool(record["fp16"]),
                torchscript=_bool(record["torchscript"]),
                compile=_bool(record.get("compile") or "false"),
                workers=int(record["workers"]),
                batch_size=int(record["batch_size"]),
                max_batch_delay_ms=int(record["max_batch_delay_ms"]),
                threads_per_worker=threads,
            )
            row = Row(
                throughput_rps=_float(record["throughput_rps"]),
                p99_ms=_float(record["p99_ms"]),
            )
            if (record.get("sla_ms") or "").strip():
                slas.add(float(record["sla_ms"]))
        except (TypeError, ValueError, AttributeError) as exc:
            raise LandscapeError(f"{source}: line {line}: {exc}") from None
        if not row.throughput_rps >= 0:
            raise LandscapeError(
                f"{source}: line {line}: throughput_rps must be >= 0, got {row.throughput_rps}"
            )
        if config in rows:
            raise LandscapeError(f"{source}: line {line}: configuration {config.label()} again")
        rows[config] = row
    if not rows:
        raise LandscapeError(f"{source}: no rows")
    if len(slas) > 1:
        raise LandscapeError(f"{source}: sla_ms must be one value, got {sorted(slas)}")
    return Landscape(
        source=source,
        rows=rows,
        space=space_from_configs(rows, source=source),
        sla_ms=slas.pop() if slas else None,
    )


def landscape_files(path: Path) -> list[Path]:
    """``path`` itself when it is a file, else the ``*.csv`` files of the folder, sorted."""
    path = Path(path)
    if path.is_dir():
        files = sorted(p for p in path.glob("*.csv") if p.is_file())
        if not files:
            raise LandscapeError(f"{path}: a folder without landscape files (*.csv)")
        return files
    if not path.is_file():
        raise LandscapeError(f"{path}: no such file or folder; give a landscape CSV or a folder")
    return [path]


def space_from_configs(configs: Iterable[TrialConfig], *, source: str) -> SearchSpace:
    """The search space spanned by the distinct values of ``configs``, per device where the
    tuner's space allows it (workers, batch size, delay); threads from the cpu rows."""
    configs = list(configs)
    backends = sorted({Backend.of(c.device, c.fp16) for c in configs}, key=list(Backend).index)

    def per_device(name: str) -> PerDevice:
        values: dict[Device, tuple[int, ...]] = {}
        for device in ("cpu", "cuda"):
            found = {getattr(c, name) for c in configs if c.device == device}
            if found:
                values[device] = tuple(sorted(found))
        return PerDevice(**values)

    threads = sorted({c.threads_per_worker for c in configs if c.device == "cpu"}) or [0]
    return SearchSpace(
        backends=tuple(backends),
        torchscript=tuple(sorted({c.torchscript for c in configs})),
        compile=tuple(sorted({c.compile for c in configs})),
        workers=per_device("workers"),
        batch_size=per_device("batch_size"),
        max_batch_delay_ms=per_device("max_batch_delay_ms"),
        threads_per_worker=tuple(threads),
        source=source,
    )


def write_landscape(
    rows: Mapping[TrialConfig, Row] | Sequence[tuple[TrialConfig, Row]],
    *,
    sla_ms: float | None = None,
) -> str:
    """The CSV text of ``rows`` (the format :func:`read_landscape` reads); ``compile`` is
    written only when a row has it."""
    items = list(rows.items()) if isinstance(rows, Mapping) else list(rows)
    with_compile = any(c.compile for c, _ in items)
    fields = [p for p in PARAMETERS if p != "compile" or with_compile]
    fields += ["throughput_rps", "p99_ms"] + (["sla_ms"] if sla_ms is not None else [])
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=fields, lineterminator="\n")
    writer.writeheader()
    for config, row in items:
        record: dict[str, object] = {}
        for name in fields:
            if name in PARAMETERS:
                value = getattr(config, name)
                record[name] = str(value).lower() if isinstance(value, bool) else value
        record["throughput_rps"] = f"{row.throughput_rps:.6g}"
        record["p99_ms"] = "" if math.isnan(row.p99_ms) else f"{row.p99_ms:.6g}"
        if sla_ms is not None:
            record["sla_ms"] = f"{sla_ms:g}"
        writer.writerow(record)
    return out.getvalue()
