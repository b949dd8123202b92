"""The search space: YAML loading and validation, hardware filtering, the Optuna representation."""

from __future__ import annotations

import itertools
import json
from pathlib import Path
from typing import Any

import optuna
import pytest
import yaml

from autotune._errors import ConfigError
from autotune.serving import detect_hardware, visible_gpus
from autotune.space import (
    MAX_WORKERS_PER_GPU,
    Backend,
    Hardware,
    PerDevice,
    SearchSpace,
    TrialConfig,
    builtin_space,
    load_space,
    torchserve_default,
)
from autotune.study import make_sampler

CPU_HOST = Hardware(cpu_cores=2)
GPU_HOST = Hardware(cpu_cores=8, gpus=1, gpu_names=("NVIDIA H100",))

BASE: dict[str, Any] = {
    "device": {"choices": ["cpu", "cuda"]},
    "fp16": {"choices": [False, True]},
    "torchscript": {"choices": [False, True]},
    "workers": {"low": 1, "high": 4},
    "batch_size": {"choices": [1, 2, 4, 8]},
    "max_batch_delay_ms": {"choices": [1, 10, 100]},
    "threads_per_worker": {"low": 1, "high": 4},
}


def write_space(tmp_path: Path, **parameters: Any) -> Path:
    """A YAML space: BASE with ``parameters`` replaced (None removes one)."""
    merged = {k: v for k, v in {**BASE, **parameters}.items() if v is not None}
    path = tmp_path / "space.yaml"
    path.write_text(yaml.safe_dump({"parameters": merged}))
    return path


def write_text(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "space.yaml"
    path.write_text(text)
    return path


def config_error(path: Path) -> str:
    with pytest.raises(ConfigError) as info:
        load_space(path)
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith(f"{path}: ")
    return message


# -- loading -------------------------------------------------------------------------------------


def test_quick_space() -> None:
    space = load_space(builtin_space("quick"))
    assert space.backends == (Backend.CPU_FP32, Backend.CUDA_FP32, Backend.CUDA_FP16)
    assert space.torchscript == (False, True)
    assert space.workers == PerDevice(cpu=(1, 2, 3, 4), cuda=(1, 2, 3, 4))
    assert space.batch_size == PerDevice.same((1, 2, 4, 8, 16))
    assert space.max_batch_delay_ms == PerDevice.same((1, 5, 10, 25, 50, 100))
    assert space.threads_per_worker == (1, 2, 3, 4)
    assert space.baseline_override == {}
    assert space.source.endswith("quick.yaml")


def test_animated_drawings_space() -> None:
    space = load_space(builtin_space("animated_drawings.yaml"))
    assert space.devices == ("cpu", "cuda")
    assert space.workers == PerDevice.same(range(1, 17))
    assert space.batch_size == PerDevice.same((1, 2, 4, 8, 16, 32))
    assert space.threads_per_worker == (1, 2, 4, 8, 16)
    assert space.compile == (False, True)  # graphs: eager, torchscript, compile
    assert space.size() == 3 * 16 * 6 * 6 * 5 + 2 * (3 * 16 * 6 * 6)


def test_unknown_builtin_space_lists_the_known_ones() -> None:
    with pytest.raises(ConfigError, match=r"no built-in search space 'nope'; .*quick"):
        builtin_space("nope")


def test_optional_parameters_default_to_torchserve(tmp_path: Path) -> None:
    path = write_space(tmp_path, fp16=None, torchscript=None, threads_per_worker=None)
    space = load_space(path)
    assert space.backends == (Backend.CPU_FP32, Backend.CUDA_FP32)
    assert space.torchscript == (False,)
    assert space.threads_per_worker == (0,)
    assert {c.threads_per_worker for c in space.configs()} == {0}


def test_per_device_values_and_baseline_override(tmp_path: Path) -> None:
    path = tmp_path / "space.yaml"
    path.write_text(
        "parameters:\n"
        "  device: {choices: [cuda, cpu, cpu]}\n"
        "  workers: {cpu: {low: 1, high: 2}, cuda: {choices: [4, 1]}}\n"
        "  batch_size: {choices: [8, 1]}\n"
        "  max_batch_delay_ms: {low: 0, high: 2}\n"
        "baseline: {workers: 1, torchscript: true}\n"
    )
    space = load_space(path)
    assert space.backends == (Backend.CPU_FP32, Backend.CUDA_FP32)
    assert space.workers == PerDevice(cpu=(1, 2), cuda=(1, 4))
    assert space.batch_size == PerDevice.same((1, 8))
    assert space.max_batch_delay_ms == PerDevice.same((0, 1, 2))
    assert space.baseline_override == {"workers": 1, "torchscript": True}


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("parameters: {device: [cpu\n", "line 2, column 1: invalid YAML: expected ',' or ']'"),
        ("parameters:\n  device: {choices: [cpu]}\n  device: {}\n", "line 3, column 3: invalid "),
        ("- cpu\n- cuda\n", "a search space must be a mapping, got a list"),
        ("", "a search space must be a mapping, got nothing"),
        ("parameters: {}\nsampler: tpe\n", "(top level): unknown key 'sampler'; known keys: "),
        ("baseline: {}\n", "parameters: missing"),
        ("parameters: [1]\n", "parameters: must be a mapping, got a list"),
    ],
)
def test_malformed_file(tmp_path: Path, text: str, expected: str) -> None:
    assert expected in config_error(write_text(tmp_path, text))


def test_missing_file(tmp_path: Path) -> None:
    assert "cannot read the search space" in config_error(tmp_path / "absent.yaml")


@pytest.mark.parametrize(
    ("parameters", "expected"),
    [
        (
            {"batchsize": {"choices": [1]}},
            "parameters: unknown key 'batchsize'; known keys: device, fp16, torchscript, compile, "
            "workers, batch_size, max_batch_delay_ms, threads_per_worker",
        ),
        ({"workers": None}, "parameters.workers: missing"),
        ({"workers": 4}, "parameters.workers: must be a mapping, got a number"),
        ({"batch_size": {"choices": []}}, "parameters.batch_size: choices must not be empty"),
        ({"device": {"choices": []}}, "parameters.device: choices must not be empty"),
        ({"batch_size": {"choices": 8}}, "parameters.batch_size: choices must be a list, got a"),
        ({"batch_size": {"choices": [1, "two"]}}, "choices must be integers, got 'two'"),
        ({"batch_size": {"choices": [True]}}, "choices must be integers, got True"),
        ({"workers": {"low": 1.5, "high": 4}}, "parameters.workers: low must be an integer"),
        ({"workers": {"low": 1}}, "parameters.workers: high is missing"),
        ({"workers": {"low": 1, "high": 4, "step": 2}}, "unknown key 'step'; known keys: low"),
        ({"workers": {}}, "parameters.workers: give {choices: [...]}, {low: L, high: H} or"),
        (
            {"workers": {"low": 5, "high": 1}},
            "parameters.workers: `low <= high` must hold, but got (low=5, high=1)",
        ),
        ({"workers": {"low": 0, "high": 4}}, "parameters.workers: values must be >= 1, got low=0"),
        ({"batch_size": {"choices": [0, 1]}}, "parameters.batch_size: values must be >= 1, got 0"),
        (
            {"max_batch_delay_ms": {"choices": [-1, 5]}},
            "parameters.max_batch_delay_ms: values must be >= 0, got -1",
        ),
        (
            {"threads_per_worker": {"low": 0, "high": 2}},
            "parameters.threads_per_worker: values must be >= 1, got low=0",
        ),
        (
            {"threads_per_worker": {"cpu": {"low": 1, "high": 2}}},
            "parameters.threads_per_worker: applies to cpu only: give {choices: [...]} or {low",
        ),
        (
            {"max_batch_delay_ms": {"low": 0, "high": 100_000}},
            "parameters.max_batch_delay_ms: at most 10000 values, got 100001; use choices",
        ),
        (
            {"device": {"choices": ["cpu", "gpu"]}},
            "parameters.device: unknown device 'gpu'; known devices: cpu, cuda",
        ),
        (
            {"device": {"low": 0, "high": 1}},
            "parameters.device: unknown key 'high'; known keys: ch",
        ),
        ({"fp16": {"choices": ["yes please"]}}, "parameters.fp16: choices must be true or false"),
        ({"torchscript": {"choices": [1]}}, "parameters.torchscript: choices must be true or fal"),
        (
            {"workers": {"cpu": {"low": 1, "high": 2}}},
            "parameters.workers: no values for device cuda (give workers.cuda)",
        ),
        (
            {"workers": {"cpu": {"low": 1, "high": 2}, "cuda": {"choices": [0]}}},
            "parameters.workers.cuda: values must be >= 1, got 0",
        ),
    ],
)
def test_invalid_parameter(tmp_path: Path, parameters: dict[str, Any], expected: str) -> None:
    assert expected in config_error(write_space(tmp_path, **parameters))


@pytest.mark.parametrize(
    ("baseline", "expected"),
    [
        ("{batch: 1}", "baseline: unknown key 'batch'; known keys: device, fp16"),
        ("{workers: 0}", "baseline.workers: must be >= 1, got 0"),
        ("{workers: two}", "baseline.workers: must be an integer, got 'two'"),
        ("{fp16: 1}", "baseline.fp16: must be true or false, got 1"),
        ("{device: tpu}", "baseline.device: unknown device 'tpu'"),
        ("{device: cpu, fp16: true}", "baseline.fp16: fp16 needs device cuda"),
        ("[1]", "baseline: must be a mapping, got a list"),
    ],
)
def test_invalid_baseline(tmp_path: Path, baseline: str, expected: str) -> None:
    path = write_space(tmp_path)
    path.write_text(path.read_text() + f"baseline: {baseline}\n")
    assert expected in config_error(path)


# -- filtering -------------------------------------------------------------------------------


def test_cpu_host_drops_cuda_and_bounds_workers_and_threads() -> None:
    space = load_space(builtin_space("quick")).filtered(CPU_HOST)
    assert space.backends == (Backend.CPU_FP32,)
    assert space.workers == PerDevice(cpu=(1, 2))
    assert space.threads_per_worker == (1, 2)
    assert space.size() == 2 * 2 * 5 * 6 * 2
    assert all(c.device == "cpu" and not c.fp16 for c in space.configs())


def test_gpu_host_bounds_workers_per_device(tmp_path: Path) -> None:
    path = write_space(
        tmp_path, workers={"low": 1, "high": 40}, threads_per_worker={"low": 2, "high": 9}
    )
    hw = Hardware(cpu_cores=8, gpus=2)
    space = load_space(path).filtered(hw)
    assert space.backends == tuple(Backend)
    assert space.workers == PerDevice(
        cpu=tuple(range(1, 9)), cuda=tuple(range(1, 2 * MAX_WORKERS_PER_GPU + 1))
    )
    assert space.threads_per_worker == tuple(range(2, 9))


def test_cuda_only_space_needs_a_gpu(tmp_path: Path) -> None:
    space = load_space(write_space(tmp_path, device={"choices": ["cuda"]}))
    with pytest.raises(
        ConfigError, match=r"parameters.device: only cuda is allowed, but this host has no GPU"
    ):
        space.filtered(CPU_HOST)
    filtered = space.filtered(GPU_HOST)
    assert filtered.backends == (Backend.CUDA_FP32, Backend.CUDA_FP16)
    assert filtered.threads_per_worker == (0,)


def test_filtering_that_leaves_no_workers_says_why(tmp_path: Path) -> None:
    space = load_space(write_space(tmp_path, workers={"choices": [4, 8]}))
    with pytest.raises(
        ConfigError,
        match=r"parameters.workers: no cpu value is at most the 2 CPU cores of this host "
        r"\(lowest is 4\)$",
    ):
        space.filtered(CPU_HOST)


def test_filtering_that_leaves_no_threads_says_why(tmp_path: Path) -> None:
    space = load_space(write_space(tmp_path, threads_per_worker={"choices": [4, 8]}))
    with pytest.raises(
        ConfigError, match=r"parameters.threads_per_worker: no value is at most the 2 CPU"
    ):
        space.filtered(CPU_HOST)


# -- the Optuna representation -------------------------------------------------------------------


def mixed_space(tmp_path: Path) -> SearchSpace:
    """Small, with per-device workers and all three encodings."""
    path = write_space(
        tmp_path,
        workers={"cpu": {"low": 1, "high": 3}, "cuda": {"choices": [2, 3]}},
        batch_size={"choices": [2, 4, 8]},
        max_batch_delay_ms={"choices": [0, 7, 50]},
        threads_per_worker={"low": 1, "high": 2},
    )
    return load_space(path).filtered(GPU_HOST)


def test_parameters_are_the_deployments_own_names_and_values(tmp_path: Path) -> None:
    dists = mixed_space(tmp_path).distributions()
    assert list(dists) == [
        "device",
        "fp16",
        "torchscript",
        "workers",
        "batch_size",
        "max_batch_delay_ms",
        "threads_per_worker",
    ]
    assert dists["device"] == optuna.distributions.CategoricalDistribution(["cpu", "cuda"])
    assert dists["fp16"] == optuna.distributions.CategoricalDistribution([False, True])
    assert dists["workers"] == optuna.distributions.IntDistribution(1, 3)  # union of 1..3 and 2..3
    assert dists["batch_size"] == optuna.distributions.IntDistribution(2, 8, log=True)
    assert dists["max_batch_delay_ms"] == optuna.distributions.IntDistribution(0, 50)
    cuda = TrialConfig(device="cuda", fp16=True, workers=2, batch_size=8, max_batch_delay_ms=7)
    assert mixed_space(tmp_path).params_for(cuda) == {
        "device": "cuda",
        "fp16": True,
        "torchscript": False,
        "workers": 2,
        "batch_size": 8,
        "max_batch_delay_ms": 7,
    }


def test_per_device_values_share_one_parameter(tmp_path: Path) -> None:
    path = write_space(tmp_path, workers={"cpu": {"low": 1, "high": 3}, "cuda": {"choices": [8]}})
    space = load_space(path).filtered(GPU_HOST)
    assert space.distributions()["workers"] == optuna.distributions.IntDistribution(1, 8)
    params = space.params_for(next(space.configs()))
    cpu = space.config_from_params({**params, "device": "cpu", "workers": 7})
    cuda_params = {k: v for k, v in params.items() if k != "threads_per_worker"}
    cuda = space.config_from_params({**cuda_params, "device": "cuda", "fp16": False, "workers": 2})
    assert (cpu.workers, cuda.workers) == (3, 8)  # the nearest value of the trial's device


def test_stored_encoded_params_are_still_read(tmp_path: Path) -> None:
    space = mixed_space(tmp_path)
    for config in space.configs():
        assert space.config_from_params(space.encoded_params_for(config)) == config


def test_params_round_trip_for_every_configuration(tmp_path: Path) -> None:
    space = mixed_space(tmp_path)
    configs = list(space.configs())
    assert (
        len(configs) == len(set(configs)) == space.size() == 2 * 3 * 3 * 3 * 2 + 2 * 2 * 2 * 3 * 3
    )
    for config in configs:
        assert space.contains(config)
        params = space.params_for(config)
        assert space.config_from_params(params) == config  # which checks params fit


def test_every_parameter_set_gives_a_configuration_of_the_space(tmp_path: Path) -> None:
    space = mixed_space(tmp_path)
    axes: dict[str, list[Any]] = {}
    for name, dist in space.distributions().items():
        if isinstance(dist, optuna.distributions.CategoricalDistribution):
            axes[name] = list(dist.choices)
        else:
            assert isinstance(dist, optuna.distributions.IntDistribution)
            axes[name] = list(range(dist.low, dist.high + 1))
    seen = set()
    for combo in itertools.product(*axes.values()):
        params = dict(zip(axes, combo, strict=True))
        params = {k: v for k, v in params.items() if space.applies(k, params["device"])}
        config = space.config_from_params(params)
        assert space.contains(config)
        seen.add(config)
    assert seen == set(space.configs())


def test_threads_are_a_parameter_of_cpu_trials_only(tmp_path: Path) -> None:
    space = mixed_space(tmp_path)
    cuda = TrialConfig(device="cuda", workers=2, batch_size=2, max_batch_delay_ms=7)
    assert "threads_per_worker" not in space.params_for(cuda)
    cpu = TrialConfig(device="cpu", batch_size=2, max_batch_delay_ms=7, threads_per_worker=2)
    params = space.params_for(cpu)
    assert params["threads_per_worker"] == 2
    with pytest.raises(ConfigError, match="do not match this search space"):
        space.config_from_params({**space.params_for(cuda), "threads_per_worker": 1})
    with pytest.raises(ConfigError, match="do not match this search space"):
        space.config_from_params({k: v for k, v in params.items() if k != "threads_per_worker"})


@pytest.mark.parametrize(("name", "hw"), [("quick", CPU_HOST), ("animated_drawings", GPU_HOST)])
def test_random_sampling_stays_in_the_filtered_space(name: str, hw: Hardware) -> None:
    space = load_space(builtin_space(name)).filtered(hw)
    study = optuna.create_study(
        sampler=make_sampler("random", seed=1, n_startup_trials=0, space=space)
    )
    devices = set()
    for _ in range(min(300, space.size())):
        trial = study.ask()
        config = space.suggest(trial)
        study.tell(trial, 0.0)
        assert space.contains(config)
        assert not config.fp16 or config.device == "cuda"
        if config.device == "cpu":
            assert 1 <= config.threads_per_worker <= hw.cpu_cores
            assert config.workers <= hw.cpu_cores
        else:
            assert config.threads_per_worker == 0
            assert config.workers <= MAX_WORKERS_PER_GPU * hw.gpus
        devices.add(config.device)
    assert devices == set(space.devices)
    # Every trial has the same names and distributions, but threads only on cpu trials.
    for t in study.trials:
        expected = dict(space.distributions())
        expected = {n: d for n, d in expected.items() if space.applies(n, t.params["device"])}
        assert t.distributions == expected


def test_params_that_do_not_fit_are_refused(tmp_path: Path) -> None:
    space = mixed_space(tmp_path)
    params = space.params_for(next(space.configs()))
    with pytest.raises(ConfigError, match="do not match this search space"):
        space.config_from_params({**params, "extra": 1})
    with pytest.raises(ConfigError, match=r"parameter workers=9 is outside"):
        space.config_from_params({**params, "workers": 9})
    with pytest.raises(ConfigError, match=r"parameter torchscript=1 is outside"):
        space.config_from_params({**params, "torchscript": 1})
    with pytest.raises(ConfigError, match="is not in this search space"):
        space.params_for(TrialConfig(workers=4))
    with pytest.raises(ConfigError, match="is not in this search space"):
        space.params_for(TrialConfig(device="cuda", workers=2, batch_size=2, threads_per_worker=1))


def test_nearest_moves_each_field_into_the_space(tmp_path: Path) -> None:
    space = mixed_space(tmp_path)
    far = TrialConfig(
        device="cuda",
        fp16=True,
        workers=9,
        batch_size=100,
        max_batch_delay_ms=28,
        threads_per_worker=7,
    )
    assert space.nearest(far) == TrialConfig(
        device="cuda",
        fp16=True,
        workers=3,
        batch_size=8,
        max_batch_delay_ms=7,
        threads_per_worker=0,
    )
    cpu_space = space.filtered(CPU_HOST)
    assert cpu_space.nearest(far) == TrialConfig(
        device="cpu", workers=2, batch_size=8, max_batch_delay_ms=7, threads_per_worker=2
    )


# -- the baseline ----------------------------------------------------------------------------


def test_torchserve_default() -> None:
    assert torchserve_default(CPU_HOST) == TrialConfig(device="cpu", workers=2)
    assert torchserve_default(GPU_HOST) == TrialConfig(device="cuda", workers=1)
    assert torchserve_default(GPU_HOST, device="cpu") == TrialConfig(device="cpu", workers=8)


def test_baseline_is_torchserve_default_inside_the_space() -> None:
    quick = load_space(builtin_space("quick"))
    # torch's default threads (one per core) resolved; workers one per core.
    assert quick.filtered(CPU_HOST).baseline(CPU_HOST) == TrialConfig(
        device="cpu", workers=2, batch_size=1, max_batch_delay_ms=100, threads_per_worker=2
    )
    assert quick.filtered(GPU_HOST).baseline(GPU_HOST) == TrialConfig(device="cuda", workers=1)
    big_cpu = Hardware(cpu_cores=64)
    assert quick.filtered(big_cpu).baseline(big_cpu) == TrialConfig(workers=4, threads_per_worker=4)


def test_baseline_outside_the_space_is_moved_to_the_nearest_configuration(tmp_path: Path) -> None:
    path = write_space(
        tmp_path,
        device={"choices": ["cpu"]},
        torchscript={"choices": [True]},
        batch_size={"choices": [4, 8]},
        max_batch_delay_ms={"choices": [5, 20]},
        threads_per_worker=None,
    )
    space = load_space(path).filtered(GPU_HOST)
    assert space.baseline(GPU_HOST) == TrialConfig(
        torchscript=True, workers=4, batch_size=4, max_batch_delay_ms=20, threads_per_worker=0
    )


def test_baseline_override(tmp_path: Path) -> None:
    path = write_space(tmp_path)
    path.write_text(
        path.read_text() + "baseline: {device: cpu, workers: 1, threads_per_worker: 0}\n"
    )
    space = load_space(path).filtered(GPU_HOST)
    assert space.baseline(GPU_HOST) == TrialConfig(workers=1, threads_per_worker=4)


@pytest.mark.parametrize(
    ("name", "hw"), [("quick", CPU_HOST), ("quick", GPU_HOST), ("animated_drawings", GPU_HOST)]
)
def test_enqueued_baseline_is_the_first_trial(name: str, hw: Hardware) -> None:
    space = load_space(builtin_space(name)).filtered(hw)
    baseline = space.baseline(hw)
    study = optuna.create_study(sampler=optuna.samplers.TPESampler(seed=0))
    study.enqueue_trial(space.params_for(baseline))
    assert space.suggest(study.ask()) == baseline


# -- storage --------------------------------------------------------------------------------------


def test_to_dict_is_json_and_round_trips(tmp_path: Path) -> None:
    path = write_space(tmp_path)
    path.write_text(path.read_text() + "baseline: {workers: 1}\n")
    space = load_space(path).filtered(GPU_HOST)
    data = json.loads(json.dumps(space.to_dict()))
    assert SearchSpace.from_dict(data) == space
    assert data["backends"] == ["cpu_fp32", "cuda_fp32", "cuda_fp16"]
    assert data["baseline"] == {"workers": 1}
    assert SearchSpace.from_dict(data) != space.filtered(CPU_HOST)


@pytest.mark.parametrize("broken", [{}, {"format": 2}, {"format": 1, "backends": ["tpu"]}])
def test_from_dict_refuses_what_is_not_a_space(broken: dict[str, Any]) -> None:
    with pytest.raises(ConfigError, match="not a stored search space"):
        SearchSpace.from_dict(broken)


# -- hardware ---------------------------------------------------------------------------------


NVIDIA_SMI = "0, GPU-aaaa1111-22, NVIDIA H100 80GB HBM3\n1, GPU-bbbb3333-44, NVIDIA A10, rev 2\n"


@pytest.mark.parametrize(
    ("visible", "expected"),
    [
        (None, ("NVIDIA H100 80GB HBM3", "NVIDIA A10, rev 2")),
        ("1", ("NVIDIA A10, rev 2",)),
        ("1,0", ("NVIDIA A10, rev 2", "NVIDIA H100 80GB HBM3")),
        ("GPU-bbbb", ("NVIDIA A10, rev 2",)),
        ("0,7,1", ("NVIDIA H100 80GB HBM3",)),
        ("0,0", ("NVIDIA H100 80GB HBM3",)),
        ("", ()),
        ("-1", ()),
    ],
)
def test_visible_gpus(visible: str | None, expected: tuple[str, ...]) -> None:
    assert visible_gpus(NVIDIA_SMI, visible) == expected


def test_detect_hardware_on_this_host() -> None:
    hw = detect_hardware()
    assert hw.cpu_cores >= 1
    assert hw.gpus == len(hw.gpu_names)
