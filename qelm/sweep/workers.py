"""Who runs a sweep's trials: a worker is ``host:pid``; one whose process on this host is gone has lost its
running trial (the report says "lost", not "running"). Each process that joins a sweep seeds its sampler
apart from every other, so two processes never propose the same sequence of trials."""

from __future__ import annotations

import os
import socket
import zlib

__all__ = ["worker_id", "alive", "worker_gone", "joiner_seed_offset", "SEEDS_PER_PROCESS"]

SEEDS_PER_PROCESS = 1000  # sampler seeds a process's workers take: sampler_seed + offset + worker


def worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True


def worker_gone(worker: str) -> bool:
    """Whether ``worker`` (``host:pid``) ran on this host and its process is gone. A worker elsewhere is
    not known to be gone (the storage's heartbeat fails its trial after the grace period)."""
    host, _, pid = (worker or "").rpartition(":")
    return host == socket.gethostname() and pid.isdigit() and not alive(int(pid))


def joiner_seed_offset() -> int:
    """The sampler-seed offset of a process that resumes or joins a sweep: from its host and pid, so no
    two joining processes share it (the process that started the sweep takes offset 0)."""
    return SEEDS_PER_PROCESS * (1 + zlib.crc32(worker_id().encode()) % 1_000_000)
