"""Soak: a long study must not leak. Runs an N-trial study (default 50) on the quick model in
this process and prints the tuner's open file descriptors, child processes and resident memory
after the first trial and at the end, with their growth.

    .venv/bin/python benchmarks/soak.py [--trials 50] [--step-s 3] [--workdir /tmp/soak]

Between trials no child process may remain (TorchServe runs as a child while a trial runs and
is stopped at the end: the count at the end is measured after the study closed it).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import psutil

from autotune import RunSettings, open_study, prepare, run_study
from autotune.loadgen import GoodputSettings


@dataclass(frozen=True)
class Sample:
    trial: int
    fds: int
    children: int
    rss_mib: float


def sample(trial: int) -> Sample:
    me = psutil.Process()
    return Sample(
        trial=trial,
        fds=me.num_fds(),
        children=len(me.children(recursive=True)),
        rss_mib=me.memory_info().rss / 2**20,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=50)
    parser.add_argument("--step-s", type=float, default=3.0)
    parser.add_argument("--workdir", type=Path, default=None)
    args = parser.parse_args()
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="autotune-soak-"))
    workdir.mkdir(parents=True, exist_ok=True)
    settings = RunSettings(
        sla_ms=100,
        model="quick",
        storage=f"sqlite:///{workdir / 'soak.db'}",
        study_name="soak",
        n_trials=args.trials,
        workdir=workdir,
        seed=0,
        load=GoodputSettings(step_max_s=args.step_s),
    )
    prepared = prepare(settings)
    study, _ = open_study(prepared)
    samples: list[Sample] = []
    started = time.monotonic()

    def on_end(trial: object, result: object) -> None:
        number = getattr(trial, "number", -1)
        samples.append(sample(number))
        s = samples[-1]
        print(
            f"trial {number:>3}: fds {s.fds:>4}  children {s.children:>3}  rss {s.rss_mib:7.1f} MiB"
        )

    run_study(prepared, study, on_trial_end=on_end)
    end = sample(len(samples))
    first = samples[0]
    print(f"\n{len(samples)} trials in {time.monotonic() - started:.0f} s")
    print(f"{'':14}{'after trial 0':>14}{'at the end':>12}{'growth':>10}")
    print(f"{'open fds':14}{first.fds:>14}{end.fds:>12}{end.fds - first.fds:>+10}")
    print(
        f"{'children':14}{first.children:>14}{end.children:>12}{end.children - first.children:>+10}"
    )
    growth = end.rss_mib - first.rss_mib
    print(f"{'rss MiB':14}{first.rss_mib:>14.1f}{end.rss_mib:>12.1f}{growth:>+10.1f}")
    # a leak grows with the trials: compare the second half's slope with the first's
    if len(samples) >= 10:
        mid = samples[len(samples) // 2]
        last = samples[-1]
        print(f"fds: {first.fds} -> {mid.fds} -> {last.fds} (trial 0, middle, last)")
        print(f"rss: {first.rss_mib:.0f} -> {mid.rss_mib:.0f} -> {last.rss_mib:.0f} MiB")
        slope = (last.rss_mib - mid.rss_mib) / max(last.trial - mid.trial, 1)
        print(f"rss slope over the second half: {slope:+.2f} MiB a trial")


if __name__ == "__main__":
    main()
