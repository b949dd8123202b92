"""The source article's table, one command away: its configurations measured on this host.

    .venv/bin/python benchmarks/seed_table.py [--out DIR] [--backend detectron2]
        [--min-size 800] [--detections 100] [--closed-s 15] [--study-trials 6]
        [--study-timeout-s 150] [--space FILE] [--sla-ms 100]

The article (``SEED.md``) tunes Animated Drawings' detector, Detectron2's Mask R-CNN R50-FPN, by
hand and reports four settings: the best CPU configuration, GPU fp32 batch 1 one worker, GPU fp16
batch 1, and GPU fp16 batch 8 one worker (its winner: P99 94.4 ms within a 100 ms SLA at 25x the
CPU throughput). This script deploys the same model (``--backend detectron2``, random weights:
the same compute as the real ones, 100 detections an image) on a real TorchServe and measures
each setting twice:

- **as the article did**: a closed loop (Apache Bench's model) at a concurrency in proportion to
  the batch size (``2 x batch``: one batch computing while the next fills), with the batch delay
  set to match (1 ms at batch 1, 10 ms at batch 8: in a closed loop the next batch arrives as
  soon as the last is answered); P99 and throughput of the measured window;
- **as autotune does**: the open-loop goodput under the SLA (``autotune.loadgen.find_goodput``),
  the highest Poisson rate whose P99 stays within it.

The article's "best CPU configuration" row is taken as it found CPUs best: one worker, batch 1,
every core's thread to it. Then a short ``autotune run --sla-ms 100`` study searches the model's
space on this host. One Markdown table (``DIR/seed_table.md``) and one JSON file
(``DIR/seed_table.json``) hold P99, throughput and the ratio to the CPU row beside the article's
figures. On a host without a GPU the GPU rows say they need one and are not run.

Sized for one H200 with 16 cores in under 8 minutes at the defaults (``--budget-s`` cuts the
study short when the rows took longer). Its CPU form (``--min-size 320 --detections 10
--space benchmarks/detector_cpu.yaml``) runs in the tests.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, Literal

import autotune
from autotune.loadgen import GoodputSettings, find_goodput, run_closed_loop, run_sync
from autotune.serving import HostLock, get_model
from autotune.space import TrialConfig, builtin_space

SAMPLE = Path(str(resources.files("autotune").joinpath("assets", "drawing.jpg")))
BUILTIN = {"detectron2": "animated_drawings_d2", "torchvision": "animated_drawings"}


@dataclass(frozen=True, kw_only=True)
class Row:
    """One setting of the article's table, and what the article measured for it."""

    key: str
    label: str
    device: Literal["cpu", "cuda"]
    fp16: bool
    batch_size: int
    article_p99_ms: float
    article_vs_cpu: float
    article_note: str = ""

    def config(self, cpu_cores: int) -> TrialConfig:
        return TrialConfig(
            device=self.device,
            fp16=self.fp16,
            workers=1,
            batch_size=self.batch_size,
            max_batch_delay_ms=1 if self.batch_size == 1 else 10,
            threads_per_worker=cpu_cores if self.device == "cpu" else 0,
        )


ROWS = (
    Row(
        key="cpu",
        label="best CPU configuration (fp32, workers=1, batch=1)",
        device="cpu",
        fp16=False,
        batch_size=1,
        article_p99_ms=305.0,
        article_vs_cpu=1.0,
        article_note="SLA missed",
    ),
    Row(
        key="gpu_fp32_b1",
        label="GPU, fp32, workers=1, batch=1",
        device="cuda",
        fp16=False,
        batch_size=1,
        article_p99_ms=23.6,
        article_vs_cpu=12.0,
    ),
    Row(
        key="gpu_fp16_b1",
        label="GPU, fp16, workers=1, batch=1",
        device="cuda",
        fp16=True,
        batch_size=1,
        article_p99_ms=23.6 * 0.68,
        article_vs_cpu=12.0 * 1.32,
        article_note="P99 32% below fp32, throughput 32% above",
    ),
    Row(
        key="gpu_fp16_b8",
        label="GPU, fp16, workers=1, batch=8 (the article's winner)",
        device="cuda",
        fp16=True,
        batch_size=8,
        article_p99_ms=94.4,
        article_vs_cpu=25.0,
        article_note="within the 100 ms SLA",
    ),
)


def build_archive(args: argparse.Namespace) -> Path:
    """The built-in detector of ``--backend`` as a model archive, at ``--min-size``."""
    builtin = get_model(BUILTIN[args.backend])
    spec = dataclasses.replace(
        builtin,
        name=f"seed_{args.backend}",
        handler_defaults={
            **builtin.handler_defaults,
            "min_size": args.min_size,
            "max_size": round(args.min_size * 1333 / 800),
            "detections_per_img": args.detections,
        },
    )
    return spec.build(args.out / "archives")


def measure_rows(args: argparse.Namespace, archive: Path) -> tuple[list[dict[str, Any]], Any]:
    hardware = autotune.detect_hardware()
    settings = autotune.RunSettings(
        sla_ms=args.sla_ms,
        model=str(archive),
        storage=f"sqlite:///{args.out.resolve()}/unused.db",
        input_path=SAMPLE,
        space_path=args.space,
        workdir=args.out / "rows",
        load=GoodputSettings(
            warmup_requests=2, step_max_s=args.step_s, time_budget_s=args.goodput_budget_s
        ),
    )
    prepared = autotune.prepare(settings)  # starts TorchServe, checks the model answers
    evaluator = prepared.evaluator
    # Each row measures holding the host's lock, as a study's trials do (others wait for it).
    lock = HostLock(
        study="seed-table",
        on_wait=lambda holder: print(f"waiting for the host: {holder and holder.describe()}"),
    )
    results: list[dict[str, Any]] = []
    try:
        for row in ROWS:
            entry: dict[str, Any] = {"key": row.key, "label": row.label}
            entry.update(
                article_p99_ms=round(row.article_p99_ms, 1),
                article_vs_cpu=round(row.article_vs_cpu, 1),
                article_note=row.article_note,
            )
            if row.device == "cuda" and hardware.gpus == 0:
                entry["status"] = "needs a GPU: not run on this host"
                results.append(entry)
                print(f"{row.label}: needs a GPU, not run", flush=True)
                continue
            config = row.config(hardware.cpu_cores)
            entry["config"] = config.label()
            concurrency = 2 * row.batch_size
            started = time.monotonic()
            try:
                with lock, evaluator.deployed(config) as target:
                    closed = run_sync(
                        run_closed_loop(
                            target,
                            concurrency=concurrency,
                            duration_s=args.closed_s,
                            warmup_s=min(5.0, args.closed_s / 3),
                            sla_ms=args.sla_ms,
                            # the requests in flight at the window's end are answered, not
                            # dropped: on a CPU one image takes longer than the default drain
                            drain_s=target.timeout_s,
                        )
                    )
                    goodput = run_sync(
                        find_goodput(target, sla_ms=args.sla_ms, settings=settings.load)
                    )
            except autotune.AutotuneError as exc:
                entry["status"] = f"failed: {exc}"
                results.append(entry)
                print(f"{row.label}: failed: {exc}", flush=True)
                continue
            best = goodput.best
            entry.update(
                status="measured",
                concurrency=concurrency,
                closed_p99_ms=closed.p99_ms,
                closed_mean_ms=closed.mean_ms,
                closed_rps=closed.throughput_rps,
                closed_errors=closed.errors,
                goodput_rps=goodput.goodput_rps,
                goodput_p99_ms=best.p99_ms if best is not None else math.nan,
                idle_latency_ms=goodput.idle_latency_ms,
                seconds=round(time.monotonic() - started, 1),
            )
            results.append(entry)
            print(
                f"{row.label}: closed loop c={concurrency} P99 {closed.p99_ms:.1f} ms "
                f"{closed.throughput_rps:.2f} req/s; goodput {goodput.goodput_rps:.2f} req/s",
                flush=True,
            )
    finally:
        evaluator.close()
    cpu = results[0].get("closed_rps")
    for entry in results:
        if cpu and "closed_rps" in entry:
            entry["closed_vs_cpu"] = entry["closed_rps"] / cpu
    return results, hardware


def run_study(args: argparse.Namespace, archive: Path, timeout_s: float) -> dict[str, Any]:
    """A short ``autotune run`` study over the model's space, through the CLI."""
    storage = f"sqlite:///{args.out.resolve()}/seed_study.db"
    space = args.space or builtin_space("animated_drawings")
    cmd = [
        sys.executable, "-m", "autotune", "run",
        "--sla-ms", f"{args.sla_ms:g}",
        "--model", str(archive),
        "--input", str(SAMPLE),
        "--space", str(space),
        "--trials", str(args.study_trials),
        "--timeout", f"{timeout_s:.0f}",
        "--confirm", "0",
        "--step-s", f"{args.step_s:g}",
        "--storage", storage,
        "--study", "seed-table",
        "--workdir", str(args.out / "study"),
    ]  # fmt: skip
    print(" ".join(cmd), flush=True)
    started = time.monotonic()
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    (args.out / "study.log").write_text(proc.stdout + proc.stderr)
    outcome: dict[str, Any] = {
        "command": " ".join(["autotune", *cmd[3:]]),
        "exit_code": proc.returncode,
        "seconds": round(time.monotonic() - started, 1),
    }
    if proc.returncode != 0:
        last = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["no output"]
        outcome["status"] = f"failed: {last[0]}"
        return outcome
    summary = autotune.summarize(autotune.load_study(storage, "seed-table"))
    outcome.update(status="ran", trials=summary.complete, feasible=summary.feasible)
    if summary.best is not None:
        outcome.update(
            best=summary.best.label,
            best_goodput_rps=summary.best.throughput_rps,
            best_p99_ms=summary.best.p99_ms,
        )
    return outcome


def _ms(value: Any) -> str:
    return f"{value:.1f}" if isinstance(value, int | float) and math.isfinite(value) else "-"


def _rps(value: Any) -> str:
    return f"{value:.2f}" if isinstance(value, int | float) and math.isfinite(value) else "-"


def _x(value: Any) -> str:
    return f"{value:.1f}x" if isinstance(value, int | float) and math.isfinite(value) else "-"


def markdown(report: dict[str, Any]) -> str:
    host = report["host"]
    lines = [
        f"Seed table on {host['cpu_cores']} CPU cores, {host['gpus']} GPU(s) "
        f"{', '.join(host['gpu_names'])}; backend {report['backend']}, min_size "
        f"{report['min_size']}, {report['detections']} detections an image, SLA "
        f"{report['sla_ms']:g} ms (`{report['command']}`).",
        "",
        "| setting | closed-loop P99 (ms) | closed-loop req/s | x CPU | open-loop goodput "
        "(req/s) | P99 at goodput (ms) | article P99 (ms) | article x CPU |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for row in report["rows"]:
        if row.get("status") != "measured":
            measured = [row.get("status", "-")] + ["-"] * 4
        else:
            measured = [
                _ms(row["closed_p99_ms"]),
                _rps(row["closed_rps"]),
                _x(row.get("closed_vs_cpu")),
                _rps(row["goodput_rps"]),
                _ms(row["goodput_p99_ms"]),
            ]
        note = f" ({row['article_note']})" if row["article_note"] else ""
        lines.append(
            f"| {row['label']} | "
            + " | ".join(measured)
            + f" | {row['article_p99_ms']:.1f}{note} | {row['article_vs_cpu']:.1f}x |"
        )
    study = report.get("study")
    if study:
        if study.get("best"):
            cpu_rows = [r for r in report["rows"] if r["key"] == "cpu" and "goodput_rps" in r]
            cpu_goodput = cpu_rows[0]["goodput_rps"] if cpu_rows else 0.0
            ratio = study["best_goodput_rps"] / cpu_goodput if cpu_goodput else math.nan
            lines.append(
                f"| autotune run --sla-ms {report['sla_ms']:g}: {study['best']} | - | - | - | "
                f"{_rps(study['best_goodput_rps'])} ({_x(ratio)} CPU goodput) | "
                f"{_ms(study['best_p99_ms'])} | - | - |"
            )
        else:
            lines.append(
                f"| autotune run --sla-ms {report['sla_ms']:g}: {study['status']}, "
                f"{study.get('feasible', 0)} of {study.get('trials', 0)} trials within the SLA "
                "| - | - | - | - | - | - | - |"
            )
    lines += [
        "",
        "Closed loop: concurrency 2 x batch, batch delay 1 ms (batch 1) or 10 ms (batch 8), as "
        "the article measured with Apache Bench. Open-loop goodput: the highest Poisson rate "
        "with P99 within the SLA. Article figures from SEED.md (the fp16 batch-1 row is its "
        "'32% lower P99, 32% higher throughput' applied to the fp32 row).",
    ]
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("seed-table"))
    parser.add_argument("--backend", choices=sorted(BUILTIN), default="detectron2")
    parser.add_argument("--min-size", type=int, default=800)
    parser.add_argument("--detections", type=int, default=100)
    parser.add_argument("--sla-ms", type=float, default=100.0)
    parser.add_argument("--closed-s", type=float, default=15.0, help="closed-loop window (s)")
    parser.add_argument("--step-s", type=float, default=5.0, help="goodput step cap (s)")
    parser.add_argument("--goodput-budget-s", type=float, default=30.0, help="per row (s)")
    parser.add_argument("--study-trials", type=int, default=6)
    parser.add_argument("--study-timeout-s", type=float, default=150.0)
    parser.add_argument("--budget-s", type=float, default=450.0, help="whole run's time goal")
    parser.add_argument("--space", type=Path, help="the study's space (default: the model's)")
    args = parser.parse_args()
    started = time.monotonic()
    args.out.mkdir(parents=True, exist_ok=True)
    archive = build_archive(args)
    rows, hardware = measure_rows(args, archive)
    left = args.budget_s - (time.monotonic() - started)
    timeout_s = max(30.0, min(args.study_timeout_s, left))
    study = run_study(args, archive, timeout_s)
    report: dict[str, Any] = {
        "command": " ".join(["python", "benchmarks/seed_table.py", *sys.argv[1:]]),
        "backend": args.backend,
        "min_size": args.min_size,
        "detections": args.detections,
        "sla_ms": args.sla_ms,
        "host": {
            "cpu_cores": hardware.cpu_cores,
            "gpus": hardware.gpus,
            "gpu_names": list(hardware.gpu_names),
            "load_average": os.getloadavg()[0],
        },
        "versions": {"autotune": autotune.__version__, "torch": _version("torch")},
        "rows": rows,
        "study": study,
        "seconds": round(time.monotonic() - started, 1),
    }
    (args.out / "seed_table.json").write_text(json.dumps(_finite(report), indent=2))
    table = markdown(report)
    (args.out / "seed_table.md").write_text(table)
    print(table, flush=True)
    print(f"wrote {args.out / 'seed_table.md'} and {args.out / 'seed_table.json'}")
    return 0 if study.get("exit_code") == 0 else 1


def _finite(value: Any) -> Any:
    """JSON has no NaN: a figure that was not measured is null."""
    if isinstance(value, dict):
        return {key: _finite(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_finite(item) for item in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _version(package: str) -> str:
    import importlib.metadata

    return importlib.metadata.version(package)


if __name__ == "__main__":
    sys.exit(main())
