"""The landscape generator: deterministic per seed, disjoint tuning and held-out seeds."""

from __future__ import annotations

from pathlib import Path

from autotune.testing import (
    FAMILIES,
    HELD_OUT_SEEDS,
    TUNING_SEEDS,
    generate,
    read_landscape,
    write_landscape,
)


def test_a_seed_always_gives_the_same_landscape() -> None:
    for family in FAMILIES:
        first, profile = generate(family, 1000)
        again, profile_again = generate(family, 1000)
        assert first.rows == again.rows and profile == profile_again
        other, _ = generate(family, 1001)
        assert other.rows != first.rows


def test_tuning_and_held_out_seeds_are_disjoint() -> None:
    assert not set(TUNING_SEEDS) & set(HELD_OUT_SEEDS)


def test_families_have_their_structure() -> None:
    cpu, _ = generate("cpu_classifier", 3)
    assert cpu.space.devices == ("cpu",)
    detector, p = generate("gpu_detector", 3)
    assert all(detector.feasible_rps(c, p.sla_ms) == 0 for c in detector.rows if c.device == "cpu")
    best, rps = detector.best(p.sla_ms)
    assert best.device == "cuda" and rps > 0
    # batch 1 ignores the delay: every delay of a batch-1 configuration gives one goodput
    batch1: dict[tuple[object, ...], set[float]] = {}
    for c, row in detector.rows.items():
        if c.batch_size == 1:
            key = (c.device, c.fp16, c.torchscript, c.compile, c.workers, c.threads_per_worker)
            batch1.setdefault(key, set()).add(row.throughput_rps)
    assert all(len(v) == 1 for v in batch1.values())


def test_a_generated_landscape_round_trips_through_csv(tmp_path: Path) -> None:
    landscape, profile = generate("mixed_host", 5)
    path = tmp_path / "mixed.csv"
    path.write_text(write_landscape(landscape.rows, sla_ms=profile.sla_ms))
    read = read_landscape(path)
    assert read.sla_ms == profile.sla_ms
    assert set(read.rows) == set(landscape.rows)
    assert read.best(profile.sla_ms)[0] == landscape.best(profile.sla_ms)[0]
