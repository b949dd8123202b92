"""What this host offers a study: CPU cores and NVIDIA GPUs, found without importing torch."""

from __future__ import annotations

import os
import shutil
import subprocess

from autotune.space import Hardware

__all__ = ["detect_hardware"]

_NVIDIA_SMI_TIMEOUT_S = 20.0


def detect_hardware() -> Hardware:
    """The CPU cores this process may run on, and the GPUs it may use.

    Cores: ``os.sched_getaffinity`` (honours taskset and cgroup cpusets), else ``os.cpu_count``.
    GPUs: ``nvidia-smi``'s list, narrowed by ``CUDA_VISIBLE_DEVICES`` as CUDA narrows it; no
    ``nvidia-smi`` or a failing one (no driver) means no GPU.
    """
    return Hardware(
        cpu_cores=_cpu_cores(),
        gpus=len(names := _gpu_names()),
        gpu_names=names,
    )


def _cpu_cores() -> int:
    try:
        return len(os.sched_getaffinity(0)) or 1
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def _gpu_names() -> tuple[str, ...]:
    exe = shutil.which("nvidia-smi")
    if exe is None:
        return ()
    try:
        done = subprocess.run(
            [exe, "--query-gpu=index,uuid,name", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=_NVIDIA_SMI_TIMEOUT_S,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return ()
    if done.returncode != 0:
        return ()
    return visible_gpus(done.stdout, os.environ.get("CUDA_VISIBLE_DEVICES"))


def visible_gpus(nvidia_smi_csv: str, cuda_visible_devices: str | None) -> tuple[str, ...]:
    """GPU names from ``nvidia-smi --query-gpu=index,uuid,name --format=csv,noheader`` output,
    in the order and number ``CUDA_VISIBLE_DEVICES`` selects (unset: all of them).

    As in CUDA, the list is read up to its first entry that names no GPU: ``""`` and ``"-1"``
    hide every GPU. Entries are indexes or (prefixes of) UUIDs.
    """
    gpus: list[tuple[str, str, str]] = []
    for line in nvidia_smi_csv.splitlines():
        parts = [p.strip() for p in line.split(",", 2)]
        if len(parts) == 3 and parts[0].isdigit():
            gpus.append((parts[0], parts[1], parts[2]))
    if cuda_visible_devices is None:
        return tuple(name for _, _, name in gpus)
    selected: list[tuple[str, str, str]] = []
    for raw in cuda_visible_devices.split(","):
        entry = raw.strip()
        match = [g for g in gpus if entry == g[0] or (len(entry) > 4 and g[1].startswith(entry))]
        if len(match) != 1 or match[0] in selected:
            break
        selected.append(match[0])
    return tuple(name for _, _, name in selected)
