"""Where the figures were measured: CPU model and cores, memory, GPU, library versions and load."""

from __future__ import annotations

import importlib.metadata
import os
import platform
from pathlib import Path
from typing import Any

import torch

from ..memory import memory_bytes
from ..version import __version__

__all__ = ["machine_description", "load_average"]


def _version(package: str) -> str | None:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def load_average() -> list[float] | None:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except (OSError, AttributeError):
        return None


def machine_description(device: str = "cpu") -> dict[str, Any]:
    """Where the figures were measured: CPU model and cores, memory, GPU, library versions, load."""
    desc: dict[str, Any] = {
        "cpu_model": _cpu_model(),
        "cpu_cores": os.cpu_count(),
        "cpu_cores_usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "torch_default_threads": torch.get_num_threads(),
        "memory_bytes": memory_bytes("cpu"),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "device": device,
        "gpu": None,
        "versions": {
            "qelm": __version__,
            "torch": torch.__version__,
            **{p: _version(p) for p in ("pennylane", "pennylane_lightning", "qiskit", "qiskit-aer", "numpy")},
        },
        "load_average_start": load_average(),
    }
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        desc["gpu"] = {"name": props.name, "memory_bytes": props.total_memory, "count": torch.cuda.device_count(),
                       "cuda": torch.version.cuda}
    return desc
