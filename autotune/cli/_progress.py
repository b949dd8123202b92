"""Rich rendering of ``autotune run``: live progress while it runs, the answer at the end."""

from __future__ import annotations

import math
import warnings

import optuna
from optuna.trial import FrozenTrial
from rich.console import Console
from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

from autotune._run import RunSettings, open_study, prepare, run_study
from autotune.results import StudySummary, confirmed_text, summarize, trials_table
from autotune.space import TrialConfig
from autotune.study import TrialResult, redact

TABLE_ROWS = 20  # the run's end shows the top of the ranking; `autotune report` shows them all


def _fmt_ms(value: float) -> str:
    return "-" if not math.isfinite(value) else f"{value:,.1f}"


def run_with_progress(settings: RunSettings, console: Console) -> StudySummary:
    optuna.logging.set_verbosity(optuna.logging.ERROR)  # our own lines say it better
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    prepared = prepare(settings)
    for note in prepared.notes:  # the archive, the knobs found, the YAML keys overridden
        console.print(note, markup=False, highlight=False)
    study, resumed = open_study(prepared)
    console.print(
        f"[bold]autotune[/] study [cyan]{prepared.study_name}[/] in {redact(settings.storage)}"
        f" ({'resumed' if resumed else 'new'}): model {prepared.model_name}, P99 <= "
        f"{settings.sla_ms:g} ms, {prepared.space.size()} configurations, "
        f"{prepared.hardware.cpu_cores} CPU cores, {prepared.hardware.gpus} GPUs"
    )
    best_text = ["none yet"]
    with Progress(
        SpinnerColumn(),
        TextColumn("{task.description}"),
        TimeElapsedColumn(),
        console=console,
        transient=True,
    ) as progress:
        task = progress.add_task("starting", total=None)

        def on_start(number: int, config: TrialConfig) -> None:
            progress.update(
                task,
                description=f"trial {number}: {config.label()}  | best: {best_text[0]}",
            )

        def on_end(trial: FrozenTrial, result: TrialResult) -> None:
            # Called after Optuna told the trial: the study's best already counts it.
            number = trial.number
            mark = {"feasible": "[green]ok[/]", "over_sla": "[yellow]over SLA[/]"}.get(
                result.verdict, "[red]failed[/]"
            )
            detail = f" ({result.failure})" if result.failure else ""
            console.print(
                f"trial {number:>3} {mark:<22} {result.config.label():<40} "
                f"{result.throughput_rps:8.1f} req/s  P99 {_fmt_ms(result.p99_ms)} ms{detail}"
            )
            best = summarize(study).best
            if best is not None:
                best_text[0] = f"{best.figure_rps:.1f} req/s (trial {best.number})"

        tuner = run_study(prepared, study, on_trial_start=on_start, on_trial_end=on_end)
    summary = summarize(study)
    console.print(trials_table(summary, limit=TABLE_ROWS))
    console.print(verdict_text(summary, stopped_early=tuner.stopped_early))
    if summary.best is not None:
        console.print(
            f"Export it: autotune export --storage {redact(settings.storage)} "
            f"--study {prepared.study_name} -o deploy/"
        )
    return summary


def verdict_text(summary: StudySummary, *, stopped_early: bool = False) -> str:
    sla = f"{summary.sla_ms:g} ms" if summary.sla_ms is not None else "the SLA"
    if summary.best is not None:
        best = summary.best
        speed = f"; {summary.speedup:.2f}x the TorchServe default" if summary.speedup else ""
        confirmed = ""
        if best.replicates is not None:
            confirmed = f", confirmed {confirmed_text(best)}"
        text = (
            f"[bold green]Best configuration[/] (trial {best.number}): {best.label}: "
            f"{best.throughput_rps:.1f} req/s with P99 {best.p99_ms:.1f} ms <= {sla}"
            f"{confirmed}{speed}"
        )
        if best.answer_changed:
            text += (
                f"\n[bold yellow]Warning:[/] its answers to the sample input differ from the "
                f"reference ({best.answer_changed}); check this configuration before deploying it"
            )
        return text
    lines = [f"[bold red]No configuration meets P99 <= {sla} on this host.[/]"]
    if summary.confirmed:
        lines = [f"[bold red]No configuration held P99 <= {sla} in every confirmation.[/]"]
    if summary.fastest is not None:
        fastest = summary.fastest
        lines.append(
            f"Fastest P99: {fastest.p99_ms:,.0f} ms with {fastest.label} "
            f"(trial {fastest.number}); that configuration could meet an SLA of about "
            f"{summary.reachable_sla_ms:,.0f} ms."
        )
    if stopped_early:
        lines.append(
            "Stopped early: every configuration tried was over twice the SLA even for single "
            "requests on an idle server; a faster device (a GPU) is needed for this SLA."
        )
    return "\n".join(lines)
