"""The landscape generator: deterministic per seed, disjoint tuning and held-out seeds."""

from __future__ import annotations

from pathlib import Path

import pytest

from autotune.testing import (
    DEFAULT_RANGES,
    FAMILIES,
    HELD_OUT_SEEDS,
    TUNING_SEEDS,
    WIDE_RANGES,
    generate,
    landscape_set,
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


def test_the_wide_set_is_deterministic_and_draws_outside_the_default_ranges() -> None:
    drawn = landscape_set("wide", per_family=4)
    again = landscape_set("wide", per_family=4)
    assert [lp[0].rows for lp in drawn] == [lp[0].rows for lp in again]
    assert {p.family for _, p in drawn} == set(FAMILIES)
    held_out = {p.seed: p for _, p in landscape_set("held-out", per_family=4)}
    assert any(p.seed in held_out and p != held_out[p.seed] for _, p in drawn)
    # at least one value no default landscape can have, in each of these settings
    assert any(p.sla_ms not in DEFAULT_RANGES.sla_ms for _, p in drawn)
    assert any(p.cores not in DEFAULT_RANGES.cores for _, p in drawn)
    assert any(set(p.batch_size) - set(DEFAULT_RANGES.batch_ladder) for _, p in drawn)
    for landscape, profile in drawn:
        assert set(profile.batch_size) <= set(WIDE_RANGES.batch_ladder)
        assert landscape.best(profile.sla_ms)[1] > 0  # every landscape of a set is feasible


def test_an_unknown_set_is_refused() -> None:
    with pytest.raises(ValueError, match="`which` must be one of"):
        landscape_set("wider", per_family=1)
