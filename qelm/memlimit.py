"""The memory this process may really use: the machine's, or less where a container's cgroup (v1 or v2)
or the address-space limit (``ulimit -v``, ``RLIMIT_AS``) says so. A simulation checked against physical
memory alone passed in a 3 GiB container and was then killed by the kernel, without a message."""

from __future__ import annotations

from pathlib import Path

__all__ = ["memory_limit_bytes", "cgroup_limit_bytes", "address_space_left_bytes"]

CGROUP_ROOT = Path("/sys/fs/cgroup")
_UNLIMITED = 1 << 60  # cgroup v1 writes "no limit" as a huge number (9223372036854771712)


def _read_limit(path: Path) -> int | None:
    try:
        text = path.read_text().strip()
    except (OSError, ValueError):
        return None
    if not text or text == "max":
        return None
    try:
        value = int(text)
    except ValueError:
        return None
    return value if 0 < value < _UNLIMITED else None


def cgroup_limit_bytes(root: Path = CGROUP_ROOT, proc_cgroup: Path = Path("/proc/self/cgroup")) -> int | None:
    """The tightest memory limit of this process's cgroup and its ancestors (v2 ``memory.max``, v1
    ``memory.limit_in_bytes``), or ``None`` for none. Inside a container the cgroup's own folder may be the
    mount's root, so both the path ``/proc/self/cgroup`` names and the root are read."""
    try:
        lines = proc_cgroup.read_text().splitlines()
    except OSError:
        lines = []
    candidates: list[Path] = []
    for line in lines:
        _, controllers, path = (line.split(":", 2) + ["", ""])[:3]
        rel = path.strip("/")
        if controllers == "":  # v2: one unified hierarchy
            base, name = root, "memory.max"
        elif "memory" in controllers.split(","):  # v1
            base, name = root / "memory", "memory.limit_in_bytes"
        else:
            continue
        parts = Path(rel).parts if rel else ()
        for i in range(len(parts), -1, -1):  # the cgroup, then each ancestor up to the root
            candidates.append(base.joinpath(*parts[:i]) / name)
    candidates += [root / "memory.max", root / "memory" / "memory.limit_in_bytes"]
    limits = [v for v in map(_read_limit, dict.fromkeys(candidates)) if v is not None]
    return min(limits) if limits else None


def address_space_left_bytes() -> int | None:
    """Address space this process may still map under ``RLIMIT_AS`` (its limit less what it maps now), or
    ``None`` where there is no such limit."""
    try:
        import resource
    except ImportError:  # pragma: no cover - not POSIX
        return None
    soft, _ = resource.getrlimit(resource.RLIMIT_AS)
    if soft == resource.RLIM_INFINITY or soft <= 0:
        return None
    mapped = 0
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmSize:"):
                mapped = int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return max(0, soft - mapped)


def memory_limit_bytes() -> int | None:
    """The smallest of the cgroup limit and the address space left, or ``None`` when neither is set."""
    limits = [v for v in (cgroup_limit_bytes(), address_space_left_bytes()) if v is not None]
    return min(limits) if limits else None
