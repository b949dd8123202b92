"""``autotune loadtest``: load any HTTP endpoint, open or closed loop, or search its goodput.

The command parses its flags into one ``Target``, calls one library function and renders the
result; the JSON report is built first as plain data (``loadtest_report``), the table last.
"""

from __future__ import annotations

import contextlib
import json
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.status import Status
from rich.table import Table

from autotune._errors import LoadTestError
from autotune.loadgen import (
    Arrival,
    GoodputResult,
    GoodputSettings,
    LoadResult,
    Target,
    find_goodput,
    run_closed_loop,
    run_open_loop,
    run_sync,
)
from autotune.serving import ChildRecord, Holder, HostLock, inference_key


def loadtest(
    url: Annotated[
        str, typer.Argument(help="Endpoint, e.g. http://127.0.0.1:8080/predictions/model.")
    ],
    rate: Annotated[
        float | None,
        typer.Option("--rate", help="Open loop: offered requests/s (default: closed loop)."),
    ] = None,
    concurrency: Annotated[
        int | None,
        typer.Option("--concurrency", help="Closed loop: requests kept in flight (default: 1)."),
    ] = None,
    duration: Annotated[float, typer.Option("--duration", help="Measured seconds.")] = 10.0,
    warmup: Annotated[
        float | None,
        typer.Option(
            "--warmup",
            help="Seconds of load sent first, not measured (default 1; with --goodput 0: a "
            "closed loop first, as autotune run warms a newly started TorchServe for 30 s).",
        ),
    ] = None,
    input: Annotated[
        Path | None, typer.Option("--input", help="File whose bytes are sent as the body.")
    ] = None,
    sla_ms: Annotated[
        float | None,
        typer.Option("--sla-ms", help="P99 budget (ms): adds the count over it and a verdict."),
    ] = None,
    goodput: Annotated[
        bool,
        typer.Option(
            "--goodput", help="Search the highest rate with P99 <= --sla-ms and no errors."
        ),
    ] = False,
    json_output: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
    header: Annotated[
        list[str] | None,
        typer.Option("--header", "-H", help="Extra request header 'Name: value' (repeatable)."),
    ] = None,
    key_file: Annotated[
        Path | None,
        typer.Option(
            "--key-file",
            help="TorchServe's key_file.json (token authorisation on): sends its inference key "
            "as 'Authorization: Bearer KEY'.",
        ),
    ] = None,
    method: Annotated[
        str | None, typer.Option(help="HTTP method (default: POST with --input, else GET).")
    ] = None,
    timeout: Annotated[
        float, typer.Option("--timeout", help="Seconds after which a request is a timeout.")
    ] = 30.0,
    arrival: Annotated[
        Arrival, typer.Option(help="Open-loop arrivals: poisson or constant.")
    ] = Arrival.POISSON,
    seed: Annotated[int, typer.Option(help="Seed of the Poisson arrivals.")] = 0,
    step_s: Annotated[
        float | None, typer.Option("--step-s", help="With --goodput: time cap of one step (s).")
    ] = None,
    no_wait: Annotated[
        bool,
        typer.Option(
            "--no-wait", help="Refuse, instead of waiting, while another run measures on this host."
        ),
    ] = False,
) -> None:
    """Load an HTTP endpoint and report latency percentiles, throughput and errors.

    Open loop (--rate) measures each latency from the request's intended send time, so server
    stalls show in P99. Closed loop (--concurrency) is Apache Bench's model. --sla-ms X --goodput
    searches the highest rate served with P99 <= X and no errors.
    """
    if warmup is None:
        warmup = 0.0 if goodput else 1.0
    _check_flags(rate, concurrency, duration, warmup, sla_ms, goodput, timeout, step_s)
    payload = _read_input(input)
    headers = _parse_headers(header or [])
    if key_file is not None:
        headers["Authorization"] = f"Bearer {inference_key(key_file)}"
    try:
        target = Target(
            url=url,
            payload=payload,
            headers=headers,
            timeout_s=timeout,
            method=(method or ("POST" if input is not None else "GET")).upper(),
        )
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from exc
    err = Console(stderr=True, highlight=False)
    with host_lock(err, wait=not no_wait, study="", quiet=json_output):
        report = _measure(
            url, target, err, goodput=goodput, sla_ms=sla_ms, rate=rate,
            concurrency=concurrency, duration=duration, warmup=warmup, arrival=arrival,
            seed=seed, step_s=step_s, json_output=json_output, keyed=key_file is not None,
        )  # fmt: skip
    report = {"url": url, **report}
    _check_authorised(url, report, keyed=key_file is not None)
    if json_output:
        print(json.dumps(report, allow_nan=False))
        return
    Console(highlight=False).print(render_table(report))
    if report.get("client_bound"):
        err.print(
            f"[yellow]warning:[/] the generator sent {report['schedule_lag_p99_ms']:.1f} ms "
            "late at P99: the figures describe this client. Lower --rate, or run the generator "
            "on a core the server does not use (taskset)."
        )


def host_lock(console: Console, *, wait: bool, study: str, quiet: bool = False) -> HostLock:
    """The host's measurement lock, printing whom it waits for and which dead run's servers
    it stopped (``autotune run`` uses it too)."""

    def on_wait(holder: Holder | None) -> None:
        who = holder.describe() if holder is not None else "another autotune run"
        console.print(f"waiting for the host: {who}", markup=False)

    def on_reaped(records: list[ChildRecord]) -> None:
        for record in records:
            console.print(
                f"stopped {record.name} (pid {record.pgid}) left by a run that died "
                f"(pid {record.owner_pid})",
                markup=False,
            )

    return HostLock(
        study=study, wait=wait, on_wait=None if quiet and not wait else on_wait,
        on_reaped=on_reaped,
    )  # fmt: skip


def _measure(
    url: str,
    target: Target,
    err: Console,
    *,
    goodput: bool,
    sla_ms: float | None,
    rate: float | None,
    concurrency: int | None,
    duration: float,
    warmup: float,
    arrival: Arrival,
    seed: int,
    step_s: float | None,
    json_output: bool,
    keyed: bool,
) -> dict[str, Any]:
    if goodput:
        assert sla_ms is not None
        settings = GoodputSettings(seed=seed, arrival=arrival)
        if step_s is not None:
            settings = GoodputSettings(seed=seed, arrival=arrival, step_max_s=step_s)
        with _spinner(err, f"searching the goodput of {url}", json_output) as status:

            def on_step(step: LoadResult) -> None:
                if status is not None:
                    status.update(f"{_step_line(step)}; searching the goodput of {url}")

            warmed = None
            if warmup > 0:
                warmed = run_sync(
                    run_closed_loop(
                        target, concurrency=settings.capacity_concurrency, duration_s=warmup
                    )
                )
                _check_authorised(url, run_report(warmed), keyed=keyed)  # before the search
            found = run_sync(
                find_goodput(target, sla_ms=sla_ms, settings=settings, on_step=on_step)
            )
        report = goodput_report(found)
        if warmed is not None:  # what was sent first, not measured
            report["warmup"] = run_report(warmed)
        return report
    else:
        what = f"{rate:g} req/s" if rate is not None else f"concurrency {concurrency or 1}"
        with _spinner(err, f"loading {url} at {what} for {warmup + duration:g} s", json_output):
            if rate is not None:
                coro = run_open_loop(
                    target, rate_rps=rate, duration_s=duration, warmup_s=warmup,
                    arrival=arrival, seed=seed, sla_ms=sla_ms,
                )  # fmt: skip
            else:
                coro = run_closed_loop(
                    target, concurrency=concurrency or 1, duration_s=duration,
                    warmup_s=warmup, sla_ms=sla_ms,
                )  # fmt: skip
            return run_report(run_sync(coro))


def run_report(result: LoadResult) -> dict[str, Any]:
    """The JSON object of one run: every figure of the result but the raw latencies."""
    return result.as_dict()


def goodput_report(found: GoodputResult) -> dict[str, Any]:
    """The JSON object of a goodput search.

    The latency and rate figures come from the best step; when none passed, from the gentlest
    step; when no step ran, from the idle probe. ``verdict`` is the search's verdict
    (feasible, over_sla_idle, over_sla, errors), ``step_verdict`` that of the reported step.
    """
    step = found.best
    if step is None and found.steps:
        step = min(found.steps, key=lambda s: s.offered_rps)
    if step is None:
        step = found.idle_probe
    report: dict[str, Any] = step.as_dict() if step is not None else {}
    report["step_verdict"] = report.pop("verdict", None)
    summary = found.as_dict()
    summary.pop("best")
    return {**report, **summary}


def render_table(report: dict[str, Any]) -> Table:
    """A short two-column table of a report (single run or goodput search)."""
    table = Table(show_header=False, box=None, pad_edge=False)
    table.add_column(style="bold")
    table.add_column(justify="right")
    if "goodput_rps" in report:
        verdict = str(report["verdict"])
        if report.get("decided") is False:
            verdict += f", undecided at its time cap after {report['samples']:,} requests"
        table.add_row("goodput", f"{report['goodput_rps']:,.1f} req/s ({verdict})")
        table.add_row("P99 SLA", _ms(report["sla_ms"]))
        table.add_row("idle latency", _ms(report["idle_latency_ms"]))
        table.add_row("steps", ", ".join(_step_text(s) for s in report["steps"]) or "-")
        table.add_row("requests sent", f"{report['requests']:,}")
        if isinstance(warm := report.get("warmup"), dict):
            table.add_row(
                "warm-up first",
                f"{warm['sent']:,} requests in {warm['duration_s']:.0f} s, closed loop "
                f"x{warm['concurrency']}, not measured",
            )
    mode = report.get("mode")
    if mode is not None:
        loop = "open loop" if mode == "open" else f"closed loop x{report['concurrency']}"
        table.add_row("mode", loop)
        table.add_row("offered", f"{report['offered_rps']:,.1f} req/s")
        table.add_row("throughput", f"{report['throughput_rps']:,.1f} req/s")
        table.add_row("completed", f"{report['completed']:,}")
        kinds = report["errors_by_kind"]
        detail = f" ({', '.join(f'{k} {v}' for k, v in kinds.items())})" if kinds else ""
        table.add_row("errors", f"{report['errors']:,}{detail}")
        for name in ("p50", "p90", "p99", "p999", "max", "mean"):
            table.add_row(f"{name} latency", _ms(report[f"{name}_ms"]))
        if mode == "open":
            table.add_row("schedule lag p99", _ms(report["schedule_lag_p99_ms"]))
        over = report.get("over_sla")
        if over is not None and "goodput_rps" not in report:
            table.add_row("over SLA", f"{over:,} ({report['verdict']})")
        for name, label in (("server_latency_ms_mean", "server time"),
                            ("server_queue_ms_mean", "server queue")):  # fmt: skip
            if report.get(name) is not None:
                table.add_row(f"{label} (mean)", _ms(report[name]))
    return table


@contextlib.contextmanager
def _spinner(console: Console, text: str, quiet: bool) -> Iterator[Status | None]:
    if quiet:
        yield None
        return
    with console.status(text, spinner="dots") as status:
        yield status


def _ms(value: float | None) -> str:
    return "-" if value is None or not math.isfinite(value) else f"{value:,.1f} ms"


def _step_text(step: dict[str, Any]) -> str:
    mark = {"pass": "ok", "fail": "x"}.get(step.get("verdict") or "", "?")
    return f"{step['offered_rps']:,.0f} {mark}"


def _step_line(step: LoadResult) -> str:
    return (
        f"{step.mode} {step.offered_rps:,.1f} req/s -> P99 {_ms(step.p99_ms)}, "
        f"{step.errors} errors, {step.verdict}"
    )


def _check_flags(
    rate: float | None,
    concurrency: int | None,
    duration: float,
    warmup: float,
    sla_ms: float | None,
    goodput: bool,
    timeout: float,
    step_s: float | None,
) -> None:
    if rate is not None and concurrency is not None:
        raise typer.BadParameter("give --rate (open loop) or --concurrency (closed loop), not both")
    if goodput and sla_ms is None:
        raise typer.BadParameter("--goodput needs --sla-ms, the P99 budget to search under")
    if goodput and (rate is not None or concurrency is not None):
        raise typer.BadParameter("--goodput chooses the rates itself: drop --rate/--concurrency")
    checks = [
        (rate is None or rate > 0, f"--rate must be > 0, got {rate}"),
        (concurrency is None or concurrency >= 1, f"--concurrency must be >= 1, got {concurrency}"),
        (duration > 0, f"--duration must be > 0, got {duration}"),
        (warmup >= 0, f"--warmup must be >= 0, got {warmup}"),
        (sla_ms is None or sla_ms > 0, f"--sla-ms must be > 0, got {sla_ms}"),
        (timeout > 0, f"--timeout must be > 0, got {timeout}"),
        (step_s is None or step_s > 0, f"--step-s must be > 0, got {step_s}"),
    ]
    for ok, message in checks:
        if not ok:
            raise typer.BadParameter(message)


def _check_authorised(url: str, report: dict[str, Any], *, keyed: bool) -> None:
    """Every request refused with HTTP 400 or 401 and none answered: most likely TorchServe's
    token authorisation (it answers a missing or wrong key with 400), not a figure to report."""
    kinds = report.get("errors_by_kind") or {}
    if report.get("completed") or not kinds or set(kinds) - {"http_400", "http_401"}:
        return
    codes = "/".join(k.removeprefix("http_") for k in sorted(kinds))
    fix = (
        "check that --key-file is the key_file.json of the server running now, and --input"
        if keyed
        else "a TorchServe with token authorisation on (every autotune export) needs its key: "
        "pass --key-file with the key_file.json it wrote in the folder it was started from "
        "(or -H 'Authorization: Bearer KEY'); else check --input"
    )
    raise LoadTestError(f"{url} refused every request (HTTP {codes}): {fix}")


def _read_input(path: Path | None) -> bytes:
    if path is None:
        return b""
    try:
        return path.read_bytes()
    except OSError as exc:
        raise LoadTestError(f"cannot read --input {path}: {exc.strerror or exc}") from exc


def _parse_headers(values: list[str]) -> dict[str, str]:
    headers: dict[str, str] = {}
    for value in values:
        name, sep, content = value.partition(":")
        if not sep or not name.strip():
            raise typer.BadParameter(f"--header must look like 'Name: value', got {value!r}")
        headers[name.strip()] = content.strip()
    return headers
