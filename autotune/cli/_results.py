"""The result commands: ``autotune export``, ``autotune report``, ``autotune dashboard``.

Each command parses its flags, opens the study, calls one library function and renders. Bad
input raises ConfigError/StorageError; the main CLI prints them in one line.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markdown import Markdown

from autotune._errors import ConfigError, StorageError
from autotune.results import DashboardServer, study_artifact_dir
from autotune.study import DEFAULT_STORAGE, check_sqlite_file, load_study

StorageOption = Annotated[
    str, typer.Option("--storage", help="Optuna storage URL (SQLite file or PostgreSQL).")
]
StudyOption = Annotated[
    str | None,
    typer.Option("--study", help="Study name (default: the only study in the storage)."),
]


def export(
    output: Annotated[
        Path, typer.Option("-o", "--output", help="Folder to write the deployment into.")
    ] = Path("autotune-export"),
    storage: StorageOption = DEFAULT_STORAGE,
    study: StudyOption = None,
    host: Annotated[
        str, typer.Option(help="Address TorchServe binds (loopback unless you choose otherwise).")
    ] = "127.0.0.1",
    inference_port: Annotated[int, typer.Option(help="Inference API port.")] = 8080,
    management_port: Annotated[int, typer.Option(help="Management API port.")] = 8081,
    metrics_port: Annotated[int, typer.Option(help="Metrics API port.")] = 8082,
    archive: Annotated[
        bool, typer.Option(help="Build model-store/<model>.mar (--no-archive skips it).")
    ] = True,
) -> None:
    """Write the best configuration within the SLA as a TorchServe deployment."""
    from autotune.results import export_best

    result = export_best(
        load_study(storage, study),
        output,
        host=host,
        inference_port=inference_port,
        management_port=management_port,
        metrics_port=metrics_port,
        archive=archive,
    )
    console = Console(highlight=False, soft_wrap=True)
    p99 = f"{result.p99_ms:.1f} ms" if result.p99_ms is not None else "n/a"
    console.print(
        f"Exported trial {result.trial_number} ({result.config.label()}): "
        f"{result.throughput_rps:.1f} req/s at P99 {p99}"
    )
    for path in (result.config_properties, result.model_config, result.archive, result.env_file):
        if path is not None:
            console.print(f"  {path}", markup=False)
    if result.archive is None:
        console.print("  (no archive: build model-store/<model>.mar before starting)")
    console.print("Start it with: " + " ".join(result.start_command()), markup=False)


def report(
    output: Annotated[
        Path, typer.Option("-o", "--output", help="Folder for the CSV, JSON, Markdown and PNGs.")
    ] = Path("autotune-report"),
    storage: StorageOption = DEFAULT_STORAGE,
    study: StudyOption = None,
    artifact_dir: Annotated[
        Path | None,
        typer.Option(help="Artifact folder with raw latencies (default: the study's own)."),
    ] = None,
) -> None:
    """Print the trials table and write the report files (CSV, JSON, Markdown, plots)."""
    from autotune.results import trials_table, write_report

    loaded = load_study(storage, study)
    result = write_report(loaded, output, artifact_dir=artifact_dir)
    console = Console(highlight=False, soft_wrap=True)
    console.print(trials_table(result.study_summary))
    console.print(Markdown(result.summary))
    console.print(f"Wrote {len(result.files)} files to {output}", markup=False)
    for name, why in result.skipped.items():
        console.print(f"  skipped {name}: {why}", markup=False)


def dashboard(
    storage: StorageOption = DEFAULT_STORAGE,
    study: Annotated[
        str | None,
        typer.Option("--study", help="Study whose artifact folder to serve (default: the only)."),
    ] = None,
    host: Annotated[str, typer.Option(help="Address to bind (loopback by default).")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8080,
    artifact_dir: Annotated[
        Path | None,
        typer.Option(help="Artifact folder (default: the study's own artifact_dir)."),
    ] = None,
) -> None:
    """Serve optuna-dashboard on the study's storage until Ctrl-C."""
    if not 1 <= port <= 65535:
        raise ConfigError(f"--port must be in 1..65535, got {port}")
    hint = ""
    if artifact_dir is None:
        try:
            artifact_dir = study_artifact_dir(load_study(storage, study))
        except ConfigError:
            if study is not None:
                raise
            hint = "several studies and no --study: trial artifacts will not show"
    else:
        check_sqlite_file(storage)
    console = Console(highlight=False, soft_wrap=True)
    server = DashboardServer(storage, host=host, port=port, artifact_dir=artifact_dir)
    try:
        with server:
            console.print(
                f"optuna-dashboard on {server.url}/dashboard (Ctrl-C to stop)", markup=False
            )
            if hint or artifact_dir is None:
                console.print(f"  {hint or 'no artifact folder: trial artifacts will not show'}")
            code = server.wait()
    except KeyboardInterrupt:  # Ctrl-C is how a user ends it: not an error
        console.print("optuna-dashboard stopped")
        return
    if code != 0:
        raise StorageError(f"optuna-dashboard exited with status {code}")
