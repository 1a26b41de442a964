"""Memory arithmetic, in one place: how much a state vector takes, and how much memory a device has.

Every memory check in qelm (the config's, training's batch check, the ``qelm.fused`` backend's, the
benchmark's limits) reads its figures from here.
"""

from __future__ import annotations

import os

import torch

from .memlimit import memory_limit_bytes

__all__ = ["format_bytes", "state_vector_bytes", "available_memory_bytes", "memory_bytes", "free_memory_bytes"]


def state_vector_bytes(n_wires: int, n_circuits: int = 1) -> int:
    """Memory of ``n_circuits`` complex128 state vectors of ``n_wires`` qubits (what a simulator holds)."""
    return 16 * (2**n_wires) * n_circuits


def available_memory_bytes() -> int:
    """Memory this process may use (the bound a CPU state-vector simulation must fit in): the machine's
    physical memory, or less where a cgroup or ``RLIMIT_AS`` limits it (:mod:`qelm.memlimit`)."""
    try:
        physical = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):  # pragma: no cover - non-POSIX
        physical = 8 * 2**30
    limit = memory_limit_bytes()
    return physical if limit is None else min(physical, limit)


def memory_bytes(device: torch.device | str) -> int:
    """The memory a simulation on ``device`` must fit in: the GPU's, else this machine's."""
    device = torch.device(device)
    if device.type == "cuda":
        return int(torch.cuda.get_device_properties(device).total_memory)
    return available_memory_bytes()


def free_memory_bytes(device: torch.device | str) -> int:
    """The memory a call on ``device`` can still allocate: the GPU's free memory, else this machine's."""
    device = torch.device(device)
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(free)
    return available_memory_bytes()


def format_bytes(n: float) -> str:
    """``n`` bytes in the largest binary unit that keeps a digit before the point (``"3.2 GiB"``,
    ``"48.0 MiB"``), so a message about a small allocation never reads "0.0 GiB"."""
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError("unreachable")
