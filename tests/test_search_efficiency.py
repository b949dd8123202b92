"""The search-efficiency benchmark's logic on a tiny synthetic landscape, and the Pareto front."""

from __future__ import annotations

import csv
import importlib.util
import json
import math
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import optuna
import pytest

from autotune.results import pareto_front, pareto_trials
from autotune.space import TrialConfig
from autotune.study import make_sampler
from autotune.study import schema as A
from autotune.testing import COLUMNS, LandscapeError, TableEvaluator, read_landscape

ROOT = Path(__file__).resolve().parent.parent


def _load_benchmark() -> ModuleType:
    path = ROOT / "benchmarks" / "search_efficiency.py"
    spec = importlib.util.spec_from_file_location("search_efficiency", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while being built
    spec.loader.exec_module(module)
    return module


se = _load_benchmark()


@pytest.fixture(autouse=True)
def _one_torch_thread() -> Iterator[None]:
    """As the benchmark does: the GP's fits are small, and OpenMP threads spin on a busy host."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _rows() -> Iterator[dict[str, object]]:
    """16 configurations: cpu (workers x batch x threads), cuda fp32 and fp16 (workers x batch).
    cpu breaks the SLA; the best is cuda fp16 w1 b4 at 100 rps, the only one above 95."""
    for w in (1, 2):
        for b in (1, 4):
            for t in (1, 2):
                yield _row("cpu", False, w, b, t, 0.0, 300.0)
    for fp16 in (False, True):
        for w in (1, 2):
            for b in (1, 4):
                rps = (40.0 if fp16 else 30.0) * (1 if b == 1 else 2) / w
                rps = 100.0 if (fp16, w, b) == (True, 1, 4) else rps
                yield _row("cuda", fp16, w, b, 0, rps, 90.0)


def _row(
    device: str, fp16: bool, w: int, b: int, t: int, rps: float, p99: float
) -> dict[str, object]:
    return {
        "device": device,
        "fp16": str(fp16).lower(),
        "torchscript": "false",
        "workers": w,
        "batch_size": b,
        "max_batch_delay_ms": 5,
        "threads_per_worker": t,
        "throughput_rps": rps,
        "p99_ms": p99,
    }


def _write(path: Path, rows: list[dict[str, object]]) -> Path:
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(COLUMNS))
        writer.writeheader()
        writer.writerows(rows)
    return path


@pytest.fixture
def tiny(tmp_path: Path) -> Path:
    return _write(tmp_path / "tiny.csv", list(_rows()))


def _config(device: str = "cuda", **kwargs: object) -> TrialConfig:
    fields: dict[str, object] = {"device": device, "max_batch_delay_ms": 5, **kwargs}
    return TrialConfig(**fields)  # type: ignore[arg-type]


# -- figures -------------------------------------------------------------------------------------


def test_trials_to_reach_is_the_first_trial_at_or_above_the_target() -> None:
    values = [0.0, 50.0, 95.0, 100.0]
    assert se.trials_to_reach(values, 95.0) == 3
    assert se.trials_to_reach(values, 99.0) == 4
    assert se.trials_to_reach(values, 101.0) is None
    assert se.trials_to_reach([], 1.0) is None


def test_median_counts_a_seed_that_never_reached_as_infinite() -> None:
    assert se.median_trials([3, 5, None]) == 5
    assert se.median_trials([2, 4]) == 3
    assert se.median_trials([None, None, 3]) is None
    assert se.median_trials([4, None]) is None


def test_export_is_the_best_measured_trial_and_confirmation_the_product_rule() -> None:
    configs = tuple(_config(workers=w) for w in (1, 2, 3, 4))
    trace = se.Trace(
        true_rps=(50.0, 80.0, 100.0, 90.0),
        measured_rps=(0.0, 120.0, 95.0, 90.0),  # the 80 rps one measured lucky
        deployed=(True, True, True, True),
        configs=configs,
    )
    assert trace.exported_rps(4) == 80.0
    assert trace.exported_rps(2) == 80.0
    # noise 0 in the re-measurements: each re-measured at its true value; the geometric mean
    # of (120, 80, 80) is 91.6, of (95, 100, 100) 98.3: the 100 rps one wins
    assert trace.exported_rps(4, confirm=se.Confirm(top_k=3, repeats=2)) == 100.0
    assert trace.exported_rps(4, confirm=se.Confirm(top_k=1, repeats=2)) == 80.0
    assert se.Trace(true_rps=(1.0,), measured_rps=(0.0,), deployed=(True,)).exported_rps(1) == 0


def test_share_summary_is_median_p10_and_worst() -> None:
    shares = [1.0, 0.9, 0.8, 1.0, 1.0, 0.95, 1.0, 1.0, 1.0, 1.0, 0.5]
    assert se.share_summary(shares) == {"median": 1.0, "p10": 0.8, "worst": 0.5}


# -- the landscape -------------------------------------------------------------------------------


def test_landscape_builds_its_space_from_the_rows(tiny: Path) -> None:
    landscape = read_landscape(tiny)
    space = landscape.space
    assert [b.value for b in space.backends] == ["cpu_fp32", "cuda_fp32", "cuda_fp16"]
    assert space.size() == len(landscape.rows) == 16
    assert all(space.contains(c) for c in landscape.rows)
    config, rps = landscape.best(100.0)
    assert (config, rps) == (_config(fp16=True, workers=1, batch_size=4), 100.0)
    assert landscape.hardware().gpus == 1


def test_landscape_with_values_no_builtin_space_has(tmp_path: Path) -> None:
    rows = [
        _row("cpu", False, w, b, t, 10.0 * w + b, 50.0)
        for w in (3, 7)
        for b in (3, 5, 12)
        for t in (3,)
    ]
    for row in rows:
        row["max_batch_delay_ms"] = 0 if row["batch_size"] == 3 else 7
    landscape = read_landscape(_write(tmp_path / "odd.csv", rows))
    space = landscape.space
    assert space.workers["cpu"] == (3, 7)
    assert space.batch_size["cpu"] == (3, 5, 12)
    assert space.max_batch_delay_ms["cpu"] == (0, 7)
    assert all(space.contains(c) for c in landscape.rows)
    # The product holds configurations the table lacks (batch 3 with delay 7, ...).
    assert space.size() == 12 > len(landscape.rows) == 6
    sampler = se.sampler_factory("random", n_startup_trials=0)(0, landscape.space)
    trace = se.run_search(landscape, sampler, trials=8, sla_ms=100.0)
    assert len(trace.true_rps) == 8
    assert len(set(trace.configs)) == 8  # never one measured before
    assert landscape.hardware().cpu_cores == 7


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"device": "tpu"}, "line 2: device must be cpu or cuda"),
        ({"device": "cpu", "fp16": "true"}, "line 2: `fp16` needs device 'cuda'"),
        ({"workers": "two"}, "line 2: invalid literal"),
        ({"throughput_rps": "-1"}, "throughput_rps must be >= 0"),
    ],
)
def test_bad_rows_name_the_line(tmp_path: Path, change: dict[str, object], message: str) -> None:
    row = {**_row("cuda", False, 1, 1, 0, 10.0, 20.0), **change}
    with pytest.raises(LandscapeError, match=message):
        read_landscape(_write(tmp_path / "bad.csv", [row]))


def test_missing_column_is_named(tmp_path: Path) -> None:
    path = tmp_path / "short.csv"
    path.write_text("device,workers\ncpu,1\n")
    with pytest.raises(LandscapeError, match="missing column"):
        read_landscape(path)


def test_table_evaluator_looks_rows_up_and_counts_missing(tiny: Path) -> None:
    landscape = read_landscape(tiny)
    evaluator = TableEvaluator(landscape, sla_ms=100.0)
    best = evaluator.evaluate(_config(fp16=True, workers=1, batch_size=4))
    assert (best.verdict, best.throughput_rps, best.p99_ms) == ("feasible", 100.0, 90.0)
    cpu = evaluator.evaluate(_config("cpu", workers=1, batch_size=1, threads_per_worker=1))
    assert (cpu.verdict, cpu.throughput_rps, cpu.idle_latency_ms) == ("over_sla", 0.0, 300.0)
    absent = evaluator.evaluate(_config(workers=3))
    assert absent.verdict == "failed"
    assert evaluator.missing == [_config(workers=3)]
    strict = TableEvaluator(landscape, sla_ms=80.0).evaluate(best.config)
    assert strict.verdict == "over_sla"  # the row's P99 is over a tighter SLA


# -- the searches --------------------------------------------------------------------------------


def test_grid_sweeps_in_torchserve_order(tiny: Path) -> None:
    order = se.grid_order(read_landscape(tiny).space)
    labels = [c.label() for c in order]
    assert labels[:3] == [
        "cpu/fp32/eager w1 b1 d5ms t1",
        "cpu/fp32/eager w1 b1 d5ms t2",
        "cpu/fp32/eager w1 b4 d5ms t1",
    ]
    assert labels[8:10] == ["cuda/fp32/eager w1 b1 d5ms", "cuda/fp32/eager w1 b4 d5ms"]
    assert labels[12] == "cuda/fp16/eager w1 b1 d5ms"
    assert len(order) == 16


def test_compare_runs_every_search_through_the_tuner(tiny: Path) -> None:
    landscape = read_landscape(tiny)
    report = se.compare(
        [landscape], seeds=2, trials=6, sla_ms=100.0, sampler="random", export_at=(4,)
    )
    assert [m.name for m in report.methods] == ["ours", "random", "grid"]
    grid = report.method("grid")
    assert grid is not None
    assert grid.reach[0.99].trials == (14, 14)  # 8 cpu, 4 cuda fp32, then fp16 w1 b1, w1 b4
    data = report.as_dict()
    assert set(data["methods"]["ours"]["exported_share"]) == {"median", "p10", "worst"}
    assert set(data["methods"]["ours"]["exported_share_at"]) == {"4", "6"}
    assert data["methods"]["grid"]["exported_share"]["worst"] == 0.0  # 6 cpu rows first


def test_figures_on_the_tiny_landscape_are_pinned(tiny: Path) -> None:
    """The default search on a 16-configuration landscape: pinned, so that a change of the
    search or of the figures shows."""
    report = se.compare([read_landscape(tiny)], seeds=2, trials=8, sla_ms=100.0, export_at=(8,))
    ours = report.method("ours")
    assert ours is not None
    assert ours.exported_share() == {"median": 1.0, "p10": 1.0, "worst": 1.0}
    # the optimum is cuda fp16 w1 b4; the startup measures its middle point at two workers
    assert ours.reach[0.99].trials == (6, 5)
    assert report.random_unbounded[0.99] == (11, 14)


def test_default_gp_search_finds_the_tiny_optimum(tiny: Path) -> None:
    landscape = read_landscape(tiny)
    sampler = se.sampler_factory("gp", n_startup_trials=se.DEFAULT_N_STARTUP_TRIALS)(
        0, landscape.space
    )
    trace = se.run_search(landscape, sampler, trials=8, sla_ms=100.0)
    assert len(trace.true_rps) == 8
    assert se.trials_to_reach(trace.true_rps, 99.0) is not None


def test_cli_prints_one_json_object(tiny: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = se.main(
        ["--landscape", str(tiny), "--seeds", "2", "--trials", "5", "--sampler", "random", "--json"]
    )
    assert code == 0
    data = json.loads(capsys.readouterr().out)
    assert set(data["methods"]) == {"ours", "random", "grid"}
    assert set(data["methods"]["ours"]["trials_to"]) == {"95%", "99%"}
    assert set(data["ratio_random_over_ours"]) == {"95%", "99%"}
    # the confirmation measurements come after the search trials, beyond --trials
    assert data["confirm"]["within_trials"] is False
    assert data["confirm"]["measurements"] == data["confirm"]["top_k"] * data["confirm"]["repeats"]


def test_cli_takes_a_folder_of_landscapes(
    tiny: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = tmp_path / "many"
    folder.mkdir()
    for name in ("a.csv", "b.csv"):
        (folder / name).write_text(tiny.read_text())
    code = se.main(["--landscape", str(folder), "--trials", "4", "--noise", "0.15", "--json"])
    assert code == 0
    data = json.loads(capsys.readouterr().out)
    assert data["runs"] == 2 and data["noise_cv"] == 0.15


def test_cli_renders_a_table(
    tiny: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COLUMNS", "200")
    assert (
        se.main(["--landscape", str(tiny), "--seeds", "1", "--trials", "4", "--sampler", "random"])
        == 0
    )
    out = capsys.readouterr().out
    assert "export@4" in out and "random (unbounded)" in out


def test_cli_rejects_an_unknown_sampler(tiny: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert se.main(["--landscape", str(tiny), "--sampler", "annealing"]) == 1
    assert "unknown --sampler 'annealing'" in capsys.readouterr().err


# -- the Pareto front ----------------------------------------------------------------------------


def test_pareto_front_keeps_the_non_dominated_rows_by_rising_p99() -> None:
    rows = [(100.0, 95.0), (60.0, 40.0), (80.0, 90.0), (50.0, 60.0), (100.0, 99.0), (20.0, 30.0)]
    assert pareto_front(rows) == [5, 1, 2, 0]


def test_pareto_front_keeps_equal_rows_and_skips_nan() -> None:
    rows = [(10.0, 5.0), (10.0, 5.0), (math.nan, 1.0), (5.0, math.nan), (9.0, 6.0)]
    assert pareto_front(rows) == [0, 1]
    assert pareto_front([]) == []


def test_pareto_trials_reads_what_the_trials_recorded() -> None:
    study = optuna.create_study(direction="maximize")
    for rps, p99, reused in (
        (90.0, 95.0, False),
        (40.0, 30.0, False),
        (90.0, 95.0, True),
        (0.0, 10.0, False),
        (30.0, 50.0, False),
    ):
        attrs: dict[str, object] = {A.THROUGHPUT_RPS: rps, A.P99_MS: p99}
        if reused:
            attrs[A.REUSED_FROM] = 0
        study.add_trial(optuna.trial.create_trial(value=rps, user_attrs=attrs))
    assert [t.number for t in pareto_trials(study.trials)] == [1, 0]


def test_sla_column_is_the_default_sla(tiny: Path, tmp_path: Path) -> None:
    rows = [{**r, "sla_ms": 1000} for r in _rows()]
    with (tmp_path / "sla.csv").open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=[*COLUMNS, "sla_ms"])
        writer.writeheader()
        writer.writerows(rows)
    assert read_landscape(tmp_path / "sla.csv").sla_ms == 1000.0
    assert read_landscape(tiny).sla_ms is None
    rows[3]["sla_ms"] = 500
    with (tmp_path / "two.csv").open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=[*COLUMNS, "sla_ms"])
        writer.writeheader()
        writer.writerows(rows)
    with pytest.raises(LandscapeError, match="sla_ms must be one value"):
        read_landscape(tmp_path / "two.csv")


def test_the_replayed_space_asks_threads_on_cpu_trials_only(tiny: Path) -> None:
    landscape = read_landscape(tiny)
    sampler = se.sampler_factory("random", n_startup_trials=0)(1, landscape.space)
    study = optuna.create_study(sampler=sampler)
    seen = set()
    for _ in range(12):
        trial = study.ask()
        config = landscape.space.suggest(trial)
        assert ("threads_per_worker" in trial.params) == (config.device == "cpu")
        seen.add(config.device)
        study.tell(trial, 0.0)
    assert seen == {"cpu", "cuda"}


def test_the_export_rules_benchmark_replays_the_shipped_rule() -> None:
    """benchmarks/export_rules.py: its "ships" rule exports what the benchmark's own (the
    product's) rule does on the same noisy trace, and no rule passes the best measured."""
    sys.path.insert(0, str(ROOT))
    try:
        from benchmarks import export_rules
        from benchmarks.search_efficiency import Confirm, run_search, sampler_factory
    finally:
        sys.path.remove(str(ROOT))
    from autotune.testing import landscape_set

    factory = sampler_factory("gp", n_startup_trials=4)
    for landscape, profile in landscape_set("tuning", per_family=1):
        best = landscape.best(profile.sla_ms)[1]
        trace = run_search(
            landscape, factory(0, landscape.space), trials=12, sla_ms=profile.sla_ms,
            noise_cv=0.15, seed=0,
        )  # fmt: skip
        shares = export_rules.exported_shares(trace, best, trials=12)
        shipped = trace.exported_rps(12, confirm=Confirm(top_k=3, repeats=2)) / best
        assert shares["top 3 x 2 (ships)"] == pytest.approx(shipped)
        bound = shares.pop("best measured (bound)")
        assert all(0.0 <= share <= bound + 1e-12 for share in shares.values())


def test_failed_deployments_are_counted_per_run() -> None:
    """Tuning landscape 9 of the CPU classifier fails every TorchScript deployment and nothing
    else: the trace's failed deployments are its TorchScript trials, and the JSON's figure
    is their mean per run."""
    from autotune.testing import generate

    landscape, profile = generate("cpu_classifier", 9)
    assert profile.broken_graph == "torchscript" and math.isinf(profile.cpu_mem_items)
    sampler = make_sampler("gp", seed=0, n_startup_trials=4, space=landscape.space)
    trace = se.run_search(landscape, sampler, trials=30, sla_ms=profile.sla_ms, noise_cv=0.15)
    failed = trace.failed_deployments(30)
    assert failed == sum(c.torchscript for c in trace.configs) > 0
    assert trace.failed_deployments(1) <= 1
    result = se.summarise("ours", "gp", [trace, trace], [1.0, 1.0], trials=30, export_at=[30])
    assert result.as_dict()["failed_deployments_per_run"] == failed
