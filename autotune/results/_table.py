"""The trials of a study as one rich table, in the summary's ranking (best first).

Both the end of ``autotune run`` and ``autotune report`` print it. A confirmed configuration
shows its confirmed figure (the lowest goodput of all its measurements), how many measurements
it has and their spread in the ``confirmed`` column (present only in a confirmed study); the
confirmation trials are folded into the search trial they repeat (named in its note).
"""

from __future__ import annotations

import math
from typing import Final

from rich.table import Table
from rich.text import Text

from autotune.results._summary import StudySummary, TrialLine

_MAX_NOTE: Final = 60


def trials_table(summary: StudySummary, *, limit: int | None = None) -> Table:
    """A rich table of the study's search trials, best first; feasible trials marked."""
    sla = f" (SLA P99 <= {summary.sla_ms:g} ms)" if summary.sla_ms is not None else ""
    shown = summary.trials if limit is None else summary.trials[:limit]
    more = len(summary.trials) - len(shown)
    table = Table(
        title=f"Trials{sla}",
        title_justify="left",
        caption=f"{more} more trials not shown" if more > 0 else None,
    )
    table.add_column("#", justify="right")
    table.add_column("SLA", justify="center")
    table.add_column("configuration", min_width=20, overflow="fold")
    table.add_column("req/s", justify="right")
    table.add_column("P99 ms", justify="right")
    table.add_column("errors", justify="right")
    if summary.confirmed:
        table.add_column("confirmed", justify="right")
    table.add_column("note", overflow="fold")
    best = summary.best.number if summary.best is not None else None
    for line in shown:
        cells: list[str | Text] = [
            str(line.number),
            _mark(line),
            line.label,
            _num(line.throughput_rps, 1),
            _num(line.p99_ms, 1),
            "-" if line.errors is None else f"{line.errors:,d}",
        ]
        if summary.confirmed:
            cells.append(confirmed_text(line))
        cells.append(_note(line, best))
        table.add_row(*cells)
    return table


def confirmed_text(line: TrialLine) -> str:
    """``350.0 (3x, spread 1.12)``: the confirmed figure, the measurements, their spread."""
    reps = line.replicates
    if reps is None:
        return ""
    spread = "inf" if not math.isfinite(reps.spread) else f"{reps.spread:.2f}"
    return f"{reps.confirmed_rps:,.1f} ({len(reps.throughput_rps)}x, spread {spread})"


def _mark(line: TrialLine) -> Text:
    if not line.complete:
        return Text(line.state.lower(), style="dim")
    if line.failure:
        return Text("failed", style="red")
    if line.feasible:
        return Text("✓", style="bold green")
    return Text("✗", style="red")


def _note(line: TrialLine, best: int | None) -> str:
    notes = []
    if best is not None and line.number == best:
        notes.append("best")
    if line.baseline:
        notes.append("TorchServe default")
    if line.reused_from is not None:
        notes.append(f"same as #{line.reused_from}")
    if line.replicates is not None:
        notes.append("confirmed by " + ", ".join(f"#{n}" for n in line.replicates.confirmations))
    if line.answer_changed:
        notes.append("answers changed")
    if line.failure:
        failure = line.failure
        notes.append(failure if len(failure) <= _MAX_NOTE else failure[: _MAX_NOTE - 3] + "...")
    return ", ".join(notes)


def _num(value: float, digits: int) -> str:
    return f"{value:,.{digits}f}" if math.isfinite(value) else "-"
