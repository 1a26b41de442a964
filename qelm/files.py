"""Atomic file writes: every file qelm produces (checkpoints, logs, drawings, plots, JSON results) goes
through here, so a reader never sees a half-written file and an interrupted write leaves the old one whole.

Hand-written because the standard library has no atomic-replace helper; this is the usual recipe: a
temporary file in the target's own folder (same filesystem, so ``os.replace`` is one atomic rename), moved
over the target only once it is complete.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

__all__ = ["atomic_path", "atomic_write"]


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, *, make_parents: bool = False) -> Iterator[Path]:
    """Yield a temporary path beside ``path`` for the caller (or a library: ``save_file``, ``savefig``,
    ``torch.save``) to write; when the block succeeds it replaces ``path`` in one ``os.replace``, and when it
    fails the temporary file is removed and ``path`` is untouched.

    A missing parent folder is created with ``make_parents``; otherwise it is an error naming the folder.
    """
    target = Path(path)
    if target.is_dir():
        raise IsADirectoryError(f"output path {str(target)!r} is a folder: give a file name")
    if make_parents:
        target.parent.mkdir(parents=True, exist_ok=True)
    elif not target.parent.is_dir():
        raise FileNotFoundError(f"output folder {str(target.parent)!r} does not exist: create it first")
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.close(fd)
    try:
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes it private; the result is an ordinary file
        yield Path(tmp)
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def atomic_write(path: str | os.PathLike, data: str | bytes, *, make_parents: bool = False) -> Path:
    """Write ``data`` (text as UTF-8) to ``path`` atomically. Returns the path."""
    with atomic_path(path, make_parents=make_parents) as tmp:
        if isinstance(data, str):
            tmp.write_text(data, encoding="utf-8")
        else:
            tmp.write_bytes(data)
    return Path(path)
