"""The thin CLI: parse, build one settings object, call one library function, render."""

from __future__ import annotations

import contextlib
import dataclasses
import signal
import sys
import traceback
from pathlib import Path
from types import FrameType
from typing import Annotated, Any

import typer
from rich.console import Console

from autotune._errors import AutotuneError, ConfigError
from autotune.serving import stop_all

app = typer.Typer(
    name="autotune",
    help="Find the TorchServe configuration that serves the most requests/s within a P99 SLA.",
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
err = Console(stderr=True, highlight=False, soft_wrap=True)
_state: dict[str, bool] = {"debug": False}


@app.callback()
def _root(
    debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks on errors.")] = False,
) -> None:
    _state["debug"] = debug


@app.command()
def run(
    sla_ms: Annotated[
        float, typer.Option("--sla-ms", help="Latency budget: P99 must stay <= this (ms).")
    ],
    model: Annotated[
        str, typer.Option(help="animated_drawings (default), quick, or your handler file (.py).")
    ] = "animated_drawings",
    storage: Annotated[
        str, typer.Option(help="Optuna storage URL (SQLite file or PostgreSQL).")
    ] = "sqlite:///autotune.db",
    study: Annotated[
        str | None, typer.Option(help="Study name (default: <model>-p99-<sla>ms).")
    ] = None,
    space: Annotated[
        Path | None, typer.Option(help="Search-space YAML (default: the model's own).")
    ] = None,
    trials: Annotated[
        int | None,
        typer.Option(help="Complete trials the study should hold (default: per model)."),
    ] = None,
    timeout: Annotated[
        float | None, typer.Option(help="Stop starting new trials after this many seconds.")
    ] = None,
    input: Annotated[
        Path | None, typer.Option("--input", help="Request payload (default: model sample).")
    ] = None,
    checkpoint: Annotated[
        Path | None, typer.Option(help="Model weights (state_dict) instead of random ones.")
    ] = None,
    sampler: Annotated[str, typer.Option(help="gp (default), tpe or random.")] = "gp",
    seed: Annotated[int | None, typer.Option(help="Sampler seed.")] = None,
    workdir: Annotated[Path, typer.Option(help="Where servers, logs and artifacts live.")] = Path(
        ".autotune"
    ),
    response_timeout: Annotated[
        int | None,
        typer.Option("--response-timeout-s", help="TorchServe's per-request timeout (s)."),
    ] = None,
    step_s: Annotated[
        float | None, typer.Option("--step-s", help="Time cap of one load step (s).")
    ] = None,
    trial_budget_s: Annotated[
        float | None,
        typer.Option(
            "--trial-budget-s",
            help="Time budget of one trial's goodput search (s; default 45, 240 with "
            "--slow-model): a shorter one brackets the goodput less finely.",
        ),
    ] = None,
    slow_model: Annotated[
        bool,
        typer.Option(
            "--slow-model",
            help="Load settings for a model of about 1 request/s or less (e.g. a detector on "
            "a small CPU): fewer probe clients, longer steps, passes on small samples.",
        ),
    ] = False,
    confirm: Annotated[
        int,
        typer.Option(
            "--confirm",
            help="After the search, measure the best K configurations again (0: off).",
        ),
    ] = 3,
    repeats: Annotated[
        int, typer.Option("--repeats", help="Measurements of each confirmed configuration.")
    ] = 2,
    server_warmup_s: Annotated[
        float,
        typer.Option(
            "--server-warmup-s",
            help="Seconds of load before the first trial on a newly started TorchServe, not "
            "measured: its frontend runs slower over its first minute of load (0: off).",
        ),
    ] = 30.0,
    no_wait: Annotated[
        bool,
        typer.Option(
            "--no-wait", help="Refuse, instead of waiting, while another run measures on this host."
        ),
    ] = False,
) -> None:
    """Tune a model on a real TorchServe: maximise throughput with P99 <= SLA."""
    from autotune._run import RunSettings
    from autotune.cli._progress import run_with_progress
    from autotune.loadgen import GoodputSettings, slow_model_settings

    # Two warm-up requests: TorchScript's profiling executor optimises on its second call.
    load = slow_model_settings() if slow_model else GoodputSettings(warmup_requests=2)
    if step_s is not None:
        if not step_s > 0:
            raise ConfigError(f"--step-s must be a positive number of seconds, got {step_s:g}")
        long_s = max(load.step_long_s, step_s) if load.step_long_s is not None else None
        load = dataclasses.replace(load, step_max_s=step_s, step_long_s=long_s)
    if trial_budget_s is not None:
        if not trial_budget_s > 0:
            raise ConfigError(
                f"--trial-budget-s must be a positive number of seconds, got {trial_budget_s:g}"
            )
        load = dataclasses.replace(load, time_budget_s=trial_budget_s)
    settings = RunSettings(
        sla_ms=sla_ms,
        model=model,
        storage=storage,
        study_name=study,
        space_path=space,
        n_trials=trials,
        timeout_s=timeout,
        input_path=input,
        workdir=workdir,
        sampler=sampler,
        seed=seed,
        checkpoint=checkpoint,
        load=load,
        response_timeout_s=response_timeout,
        confirm_top_k=confirm,
        confirm_repeats=repeats,
        wait_for_host=not no_wait,
        server_warmup_s=server_warmup_s,
    )
    run_with_progress(settings, Console(highlight=False))


def _register_optional_commands() -> None:
    with contextlib.suppress(ImportError):
        from autotune.cli._loadtest import loadtest

        app.command("loadtest")(loadtest)
    with contextlib.suppress(ImportError):
        from autotune.cli._results import dashboard, export, report

        app.command("export")(export)
        app.command("report")(report)
        app.command("dashboard")(dashboard)


_register_optional_commands()


_INTERRUPTED = 130
_INTERRUPTED_TEXT = (
    "autotune: interrupted; finished trials are kept, run the same command to resume"
)


def _on_sigterm(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv: list[str] | None = None) -> int:
    """Entry point: one line per error, non-zero exit, servers always stopped."""
    previous: Any = signal.signal(signal.SIGTERM, _on_sigterm)
    try:
        result = app(args=argv, prog_name="autotune", standalone_mode=False)
        if result == _INTERRUPTED:  # typer turns KeyboardInterrupt into exit code 130
            err.print(_INTERRUPTED_TEXT, markup=False)
        return int(result) if isinstance(result, int) else 0
    except typer.TyperException as exc:  # usage errors: bad or missing flags
        if type(exc).__name__ == "NoArgsIsHelpError":
            print(exc.format_message())
            return 0
        ctx = getattr(exc, "ctx", None)
        command = ctx.command_path if ctx is not None else "autotune"
        err.print(f"autotune: error: {exc.format_message()} (see `{command} --help`)", markup=False)
        return int(exc.exit_code)
    except typer.Exit as exc:
        return int(exc.exit_code)
    except (typer.Abort, KeyboardInterrupt):
        err.print(_INTERRUPTED_TEXT, markup=False)
        return _INTERRUPTED
    except AutotuneError as exc:
        if _state["debug"]:
            traceback.print_exc()
        err.print(f"autotune: error: {exc}", markup=False)
        return 1
    finally:
        stop_all()
        signal.signal(signal.SIGTERM, previous)


def entry() -> None:
    sys.exit(main())
