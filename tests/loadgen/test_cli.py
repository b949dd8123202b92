"""``autotune loadtest``: flags, JSON and table, against the test servers."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
import typer
from rich.console import Console
from typer.testing import CliRunner

from autotune._errors import ConfigError, LoadTestError
from autotune.cli._loadtest import loadtest, render_table

if TYPE_CHECKING:
    from tests.loadgen.conftest import Servers

app = typer.Typer()
app.command("loadtest")(loadtest)


@app.callback()
def _root() -> None:
    """A two-level app, as in the main CLI."""


runner = CliRunner(env={"COLUMNS": "200"})
REQUIRED = ("offered_rps", "throughput_rps", "completed", "errors", "p50_ms", "p90_ms",
            "p99_ms", "max_ms")  # fmt: skip


def _json(args: list[str]) -> dict[str, Any]:
    result = runner.invoke(app, ["loadtest", *args])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert isinstance(report, dict)
    return report


def test_open_loop_json_has_the_promised_keys(servers: Servers) -> None:
    report = _json([servers.url("/ok"), "--rate", "200", "--duration", "1", "--warmup", "0.2",
                    "--json"])  # fmt: skip
    assert set(REQUIRED) <= set(report)
    assert report["mode"] == "open"
    assert report["offered_rps"] == 200
    assert report["errors"] == 0
    assert report["completed"] == report["sent"] == 200


def test_closed_loop_is_the_default(servers: Servers) -> None:
    report = _json([servers.url("/ok"), "--duration", "0.5", "--warmup", "0", "--json"])
    assert report["mode"] == "closed"
    assert report["concurrency"] == 1


def test_input_headers_and_sla(servers: Servers, tmp_path: Path) -> None:
    body = tmp_path / "kitten.jpg"
    body.write_bytes(b"\xff\xd8" + b"x" * 5000)
    url = servers.url("/expect?method=POST&length=5002")
    report = _json([url, "--input", str(body), "--rate", "50", "--duration", "0.5",
                    "--sla-ms", "1000", "--json", "-H", "X-Trace: 1"])  # fmt: skip
    assert report["errors"] == 0
    assert report["over_sla"] == 0
    auth = _json([servers.url("/auth"), "--concurrency", "2", "--duration", "0.5",
                  "--header", "Authorization: Bearer token", "--json"])  # fmt: skip
    assert auth["errors"] == 0 and auth["completed"] > 0


def test_errors_are_reported_by_kind(servers: Servers) -> None:
    report = _json([servers.url("/share503?p=0.5"), "--rate", "100", "--duration", "1",
                    "--json"])  # fmt: skip
    assert report["errors"] == report["errors_by_kind"]["http_503"] > 0


@pytest.mark.slow
def test_goodput_json(servers: Servers) -> None:
    report = _json([servers.url("/serial?service_ms=10"), "--sla-ms", "100", "--goodput",
                    "--step-s", "3", "--json"])  # fmt: skip
    assert set(REQUIRED) <= set(report)
    assert report["verdict"] == "feasible"
    goodput = report["goodput_rps"]
    assert isinstance(goodput, float) and 40 <= goodput <= 95
    assert report["offered_rps"] == goodput  # the best step's rate, answered within the SLA
    assert report["throughput_rps"] == pytest.approx(goodput, rel=0.15)
    assert isinstance(report["steps"], list) and report["steps"]


def test_goodput_of_a_slow_server_in_json(servers: Servers) -> None:
    report = _json([servers.url("/sleep?ms=300"), "--sla-ms", "100", "--goodput", "--json"])
    assert report["verdict"] == "over_sla_idle"
    assert report["goodput_rps"] == 0.0
    assert isinstance(report["p50_ms"], float) and report["p50_ms"] > 250


def test_goodput_after_a_warmup_reports_what_the_warmup_sent(servers: Servers) -> None:
    url = servers.url("/sleep?ms=300")
    report = _json([url, "--sla-ms", "100", "--goodput", "--warmup", "1", "--json"])
    assert report["verdict"] == "over_sla_idle"  # the search itself is unchanged
    warmup = report["warmup"]
    assert warmup["mode"] == "closed" and warmup["concurrency"] == 32
    assert warmup["completed"] >= 32 and warmup["duration_s"] >= 0.9
    console = Console(file=io.StringIO(), width=200, color_system=None)
    console.print(render_table(report))
    assert "warm-up first" in console.file.getvalue()  # type: ignore[attr-defined]
    plain = _json([url, "--sla-ms", "100", "--goodput", "--json"])
    assert "warmup" not in plain  # with --goodput the default is no warm-up


def test_table_output(servers: Servers) -> None:
    result = runner.invoke(app, ["loadtest", servers.url("/ok"), "--rate", "100",
                                 "--duration", "0.5", "--sla-ms", "500"])  # fmt: skip
    assert result.exit_code == 0, result.output
    for label in ("open loop", "throughput", "p99 latency", "schedule lag p99", "over SLA"):
        assert label in result.stdout


def test_render_table_of_a_goodput_report() -> None:
    report = {
        "goodput_rps": 0.0, "verdict": "over_sla_idle", "sla_ms": 100.0,
        "idle_latency_ms": 1500.0, "steps": [], "requests": 4,
    }  # fmt: skip
    console = Console(file=io.StringIO(), width=100, color_system=None)
    console.print(render_table(report))
    text = console.file.getvalue()  # type: ignore[attr-defined]
    assert "0.0 req/s (over_sla_idle)" in text
    assert "1,500.0 ms" in text


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--rate", "10", "--concurrency", "2"], "not both"),
        (["--goodput"], "--goodput needs --sla-ms"),
        (["--goodput", "--sla-ms", "100", "--rate", "5"], "chooses the rates"),
        (["--rate", "0"], "--rate must be > 0"),
        (["-H", "no colon"], "Name: value"),
    ],
)
def test_bad_flags_are_usage_errors(args: list[str], message: str) -> None:
    result = runner.invoke(app, ["loadtest", "http://127.0.0.1:9/", *args])
    assert result.exit_code == 2
    assert message in result.output


def test_a_bad_url_is_a_usage_error() -> None:
    result = runner.invoke(app, ["loadtest", "localhost:8080"])
    assert result.exit_code == 2
    assert "http(s) URL" in result.output


def test_unreadable_input_and_unreachable_url_raise_load_test_errors(
    tmp_path: Path, closed_port: int
) -> None:
    result = runner.invoke(
        app, ["loadtest", "http://127.0.0.1:9/", "--input", str(tmp_path / "missing.jpg")]
    )
    assert isinstance(result.exception, LoadTestError)
    assert "missing.jpg" in str(result.exception)
    result = runner.invoke(app, ["loadtest", f"http://127.0.0.1:{closed_port}/", "--json"])
    assert isinstance(result.exception, LoadTestError)


def test_json_stays_strict_when_nothing_succeeds(servers: Servers) -> None:
    report = _json([servers.url("/status/500"), "--rate", "50", "--duration", "0.5", "--json"])
    assert report["completed"] == 0
    assert report["p99_ms"] is None
    assert report["errors_by_kind"] == {"http_500": report["errors"]}


def test_key_file_sends_torchserves_inference_key(servers: Servers, tmp_path: Path) -> None:
    key_file = tmp_path / "key_file.json"  # the form TorchServe writes
    key_file.write_text(json.dumps({"management": {"key": "other"}, "inference": {"key": "token"}}))
    report = _json([servers.url("/auth"), "--concurrency", "2", "--duration", "0.5",
                    "--key-file", str(key_file), "--json"])  # fmt: skip
    assert report["errors"] == 0 and report["completed"] > 0


@pytest.mark.parametrize(
    ("path", "code", "extra"),
    [("/auth", "401", []), ("/auth", "401", ["--goodput", "--sla-ms", "100", "--step-s", "1"]),
     ("/status/400", "400", [])],  # TorchServe answers a missing or wrong key with 400
)  # fmt: skip
def test_every_request_refused_as_unauthorised_names_the_key_file(
    servers: Servers, path: str, code: str, extra: list[str]
) -> None:
    args = [servers.url(path), "--duration", "0.5", "--json", *extra]
    result = runner.invoke(app, ["loadtest", *args])
    assert isinstance(result.exception, LoadTestError), result.output
    message = str(result.exception)
    assert f"HTTP {code}" in message and "--key-file" in message and "key_file.json" in message


def test_a_warmup_refused_as_unauthorised_stops_before_the_search(
    servers: Servers, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_search(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("the goodput search ran after a refused warm-up")

    monkeypatch.setattr("autotune.cli._loadtest.find_goodput", no_search)
    args = [servers.url("/auth"), "--goodput", "--sla-ms", "100", "--warmup", "0.5", "--json"]
    result = runner.invoke(app, ["loadtest", *args])
    assert isinstance(result.exception, LoadTestError), result.output
    message = str(result.exception)
    assert "HTTP 401" in message and "--key-file" in message and "key_file.json" in message


@pytest.mark.parametrize(
    ("content", "message"),
    [(None, "cannot read the key file"), ("{}", "not a TorchServe key file"),
     ("not json", "not a TorchServe key file"),
     ('{"inference": "token"}', "not a TorchServe key file")],
)  # fmt: skip
def test_a_bad_key_file_is_one_config_error(
    tmp_path: Path, content: str | None, message: str
) -> None:
    key_file = tmp_path / "key_file.json"
    if content is not None:
        key_file.write_text(content)
    result = runner.invoke(app, ["loadtest", "http://127.0.0.1:9/", "--key-file", str(key_file)])
    assert isinstance(result.exception, ConfigError)
    assert message in str(result.exception) and str(key_file) in str(result.exception)
