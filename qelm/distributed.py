"""Data-parallel set-up: join the process group ``torchrun`` describes, and tell each training step its
rank and the number of processes. A run that ``torchrun`` did not launch is rank 0 of 1.
"""

from __future__ import annotations

import os

import torch
import torch.distributed as dist

__all__ = ["init_distributed", "rank_and_world", "local_device"]


def init_distributed(device: str = "cpu") -> tuple[int, int]:
    """Join the process group that ``torchrun`` describes in the environment (gloo on CPU, NCCL on CUDA)
    and return ``(rank, world_size)``; ``(0, 1)`` when not launched by torchrun."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return 0, 1
    if str(device).startswith("cuda"):
        local = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(local)
        dist.init_process_group(backend="nccl", device_id=local)  # one GPU per process
    else:
        dist.init_process_group(backend="gloo")
    return dist.get_rank(), dist.get_world_size()


def rank_and_world() -> tuple[int, int]:
    """``(rank, world_size)`` of the process group this process joined; ``(0, 1)`` when it joined none."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def local_device(device: torch.device, world: int) -> torch.device:
    """The device this process trains on: with several processes on CUDA, its own GPU (``LOCAL_RANK``)."""
    if world > 1 and device.type == "cuda":
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    return device
