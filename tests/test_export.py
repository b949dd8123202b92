"""The export of the best feasible trial, and TorchServe started from it."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import optuna
import pytest
import yaml
from optuna.distributions import CategoricalDistribution, IntDistribution
from optuna.trial import create_trial
from typer.testing import CliRunner

from autotune._errors import ConfigError, StorageError
from autotune.cli._results import export
from autotune.results import export_best, trial_config_properties
from autotune.serving import MODEL_VERSION, ExportedServer, free_port, get_model, read_properties
from autotune.space import TrialConfig
from autotune.study import load_study
from autotune.study import schema as A

SLA_MS = 100.0
DISTRIBUTIONS = {
    "workers": IntDistribution(1, 8),
    "batch_size": CategoricalDistribution([1, 2, 4, 8]),
    "max_batch_delay_ms": IntDistribution(0, 100),
}


def new_study(storage: str, name: str = "quick-p99-100ms") -> optuna.Study:
    study = optuna.create_study(study_name=name, storage=storage, direction="maximize")
    study.set_user_attr(A.STUDY_SLA_MS, SLA_MS)
    study.set_user_attr(A.STUDY_MODEL, "quick")
    study.set_user_attr(A.STUDY_HARDWARE, {"cpu_cores": 2, "gpus": 0, "gpu_names": []})
    study.set_user_attr(A.STUDY_HANDLER_EXTRA, {"torchscript_cache_dir": "/tmp/run-only"})
    return study


def add_trial(
    study: optuna.Study, *, throughput: float, p99: float, workers: int, batch: int, delay: int
) -> None:
    config = TrialConfig(workers=workers, batch_size=batch, max_batch_delay_ms=delay)
    constraint = A.constraint_value(p99, SLA_MS, ok=True)
    feasible = constraint <= 0
    attrs: dict[str, Any] = {
        A.CONFIG: config.as_dict(),
        A.THROUGHPUT_RPS: throughput if feasible else 0.0,
        A.P99_MS: p99,
        A.SLA_MS: SLA_MS,
    }
    study.add_trial(
        create_trial(
            params={"workers": workers, "batch_size": batch, "max_batch_delay_ms": delay},
            distributions=DISTRIBUTIONS,
            value=throughput if feasible else 0.0,
            user_attrs=attrs,
            system_attrs={A.CONSTRAINTS_SYSTEM_ATTR: [constraint]},
        )
    )


@pytest.fixture
def storage(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'study.db'}"


@pytest.fixture
def study(storage: str) -> optuna.Study:
    """#0 the default; #1 the best within the SLA (delay 0 ms); #2 faster but over the SLA."""
    s = new_study(storage)
    add_trial(s, throughput=40.0, p99=70.0, workers=2, batch=1, delay=100)
    add_trial(s, throughput=120.0, p99=95.0, workers=2, batch=4, delay=0)
    add_trial(s, throughput=300.0, p99=140.0, workers=1, batch=8, delay=20)
    return s


# -- what the export contains ----------------------------------------------------------------------
def test_export_writes_the_best_feasible_trial_with_secure_defaults(
    study: optuna.Study, tmp_path: Path
) -> None:
    out = tmp_path / "export"
    result = export_best(study, out, archive=False)

    assert result.trial_number == 1  # not #2: faster, but over the SLA
    assert result.config == TrialConfig(workers=2, batch_size=4, max_batch_delay_ms=0)
    assert result.archive is None
    props = read_properties(out / "config.properties")
    assert "disable_token_authorization" not in props
    assert props["enable_model_api"] == "false"
    assert props["inference_address"] == "http://127.0.0.1:8080"
    assert props["management_address"] == "http://127.0.0.1:8081"
    assert props["metrics_address"] == "http://127.0.0.1:8082"
    assert props["model_store"] == str((out / "model-store").resolve())
    assert props["load_models"] == "quick.mar"
    assert props["number_of_gpu"] == "0"
    assert props["default_workers_per_model"] == "2"
    models = json.loads(props["models"])
    assert models == {
        "quick": {
            MODEL_VERSION: {
                "minWorkers": 2,
                "maxWorkers": 2,
                "batchSize": 4,
                "maxBatchDelay": 1,  # 0 would be read as unset (100 ms)
                "responseTimeout": get_model("quick").response_timeout_s,
            }
        }
    }
    content = yaml.safe_load((out / "model-config.yaml").read_text())
    assert content["minWorkers"] == content["maxWorkers"] == 2
    assert content["batchSize"] == 4 and content["maxBatchDelay"] == 1
    assert content["deviceType"] == "cpu"
    assert content["handler"]["device"] == "cpu"
    assert "torchscript_cache_dir" not in content["handler"]  # a folder of the tuning run only
    header = (out / "config.properties").read_text().splitlines()[0]
    assert header.startswith("# autotune export of study 'quick-p99-100ms', trial 1:")


def test_export_takes_addresses_from_the_flags(study: optuna.Study, tmp_path: Path) -> None:
    export_best(
        study,
        tmp_path / "e",
        host="::1",
        inference_port=9080,
        management_port=9081,
        metrics_port=9082,
        archive=False,
    )
    props = read_properties(tmp_path / "e" / "config.properties")
    assert props["inference_address"] == "http://[::1]:9080"
    assert props["metrics_address"] == "http://[::1]:9082"


@pytest.mark.parametrize(
    ("ports", "message"),
    [((8080, 8080, 8082), "must differ"), ((0, 8081, 8082), "--inference-port must be in")],
)
def test_export_rejects_bad_ports(
    study: optuna.Study, tmp_path: Path, ports: tuple[int, int, int], message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        export_best(
            study,
            tmp_path / "e",
            inference_port=ports[0],
            management_port=ports[1],
            metrics_port=ports[2],
            archive=False,
        )


def test_export_without_a_feasible_trial_names_the_fastest_p99(
    storage: str, tmp_path: Path
) -> None:
    s = new_study(storage)
    add_trial(s, throughput=0.0, p99=180.0, workers=1, batch=1, delay=1)
    add_trial(s, throughput=0.0, p99=135.5, workers=2, batch=1, delay=1)
    with pytest.raises(ConfigError) as info:
        export_best(s, tmp_path / "e", archive=False)
    message = str(info.value)
    assert "no trial of study 'quick-p99-100ms' met the SLA (P99 <= 100 ms)" in message
    assert "the fastest P99 was 135.5 ms (trial 1)" in message
    assert "\n" not in message
    assert not (tmp_path / "e").exists()


def test_export_of_an_empty_study(storage: str, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no completed trial yet"):
        export_best(new_study(storage), tmp_path / "e", archive=False)


def test_trial_config_properties_is_the_export_of_that_config(study: optuna.Study) -> None:
    text = trial_config_properties(study, TrialConfig(workers=3, batch_size=2))
    assert "model_store=model-store\n" in text
    assert '"minWorkers":3' in text and '"batchSize":2' in text
    assert "enable_model_api=false" in text and "disable_token" not in text


# -- the CLI commands' study selection -------------------------------------------------------------
def test_load_study_picks_the_only_study(study: optuna.Study, storage: str) -> None:
    assert load_study(storage, None).study_name == study.study_name


def test_load_study_lists_the_names_when_there_are_several(
    study: optuna.Study, storage: str
) -> None:
    new_study(storage, name="other")
    with pytest.raises(ConfigError, match="holds 2 studies; pick one with --study: other, quick"):
        load_study(storage, None)
    with pytest.raises(ConfigError, match=r"no study 'nope' in .*studies there: other, quick"):
        load_study(storage, "nope")


def test_load_study_refuses_a_missing_sqlite_file(tmp_path: Path) -> None:
    with pytest.raises(StorageError, match="no database file"):
        load_study(f"sqlite:///{tmp_path / 'missing.db'}", None)
    assert not (tmp_path / "missing.db").exists()


def test_export_command_writes_the_files(study: optuna.Study, storage: str, tmp_path: Path) -> None:
    import typer

    app = typer.Typer()
    app.command("export")(export)
    app.command("noop")(lambda: None)  # two commands: typer keeps the "export" name
    out = tmp_path / "cli-export"
    result = CliRunner().invoke(
        app, ["export", "--storage", storage, "-o", str(out), "--no-archive"]
    )
    assert result.exit_code == 0, result.output
    assert "Exported trial 1" in result.output
    assert "torchserve --start --ncs --ts-config" in result.output
    assert (out / "config.properties").is_file() and (out / "model-config.yaml").is_file()


# -- TorchServe started from the export ------------------------------------------------------------
def _request(
    url: str, *, method: str = "GET", token: str | None = None, data: bytes | None = None
) -> tuple[int, bytes]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    if data is not None:  # urllib's default (form-urlencoded) makes TorchServe decode a form
        headers["Content-Type"] = "application/octet-stream"
    request = urllib.request.Request(url, method=method, headers=headers, data=data)
    try:
        with urllib.request.urlopen(request, timeout=120) as response:
            return int(response.status), bytes(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


@pytest.mark.integration
@pytest.mark.usefixtures("no_orphans")
def test_torchserve_starts_from_the_export_and_serves_the_best_config(
    study: optuna.Study, tmp_path: Path
) -> None:
    spec = get_model("quick")
    sample_path = spec.sample_path
    assert sample_path is not None  # the quick model ships its sample image
    if not spec.handler_path.is_file() or not sample_path.is_file():
        pytest.skip(f"the quick model is not there yet ({spec.handler_path}, {sample_path})")
    result = export_best(
        study,
        tmp_path / "export",
        inference_port=free_port(),
        management_port=free_port(),
        metrics_port=free_port(),
    )
    assert result.archive is not None and result.archive.name == "quick.mar"

    with ExportedServer(tmp_path / "export", workdir=tmp_path / "serve") as server:
        described = server.wait_model_ready("quick")
        assert described["modelVersion"] == MODEL_VERSION
        assert described["batchSize"] == 4
        assert described["maxBatchDelay"] == 1
        assert described["minWorkers"] == described["maxWorkers"] == 2
        assert len(described["workers"]) == 2

        keys = json.loads((tmp_path / "serve" / "key_file.json").read_text())
        inference = keys["inference"]["key"]
        payload = sample_path.read_bytes()
        url = f"{server.inference_url}/predictions/quick"
        status, body = _request(url, method="POST", token=inference, data=payload)
        assert status == 200, body[:300]
        # Token authorisation is on, and the model API (register/unregister) is off.
        status, body = _request(url, method="POST", data=payload)
        assert status == 400 and b"Token Authorization failed" in body, body[:300]
        management = keys["management"]["key"]
        register = f"{server.management_url}/models?url=quick.mar"
        assert _request(register, method="POST", token=management)[0] == 405
    assert not server.is_alive()
