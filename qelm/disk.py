"""A full disk, said in one line: where, how much is free, and that the last complete checkpoint is kept.
A write that runs out of space fails in many voices (``OSError`` ENOSPC, torch's ``RuntimeError``
"unexpected pos", safetensors' "StorageFull"); :func:`disk_full` recognises each of them as
:class:`DiskFull`, naming the folder that was being written."""

from __future__ import annotations

import errno
import functools
import os
import shutil
from pathlib import Path

from .errors import QelmError

__all__ = ["DiskFull", "disk_full", "says_disk_full", "NEARLY_FULL"]

NEARLY_FULL = 1 << 20  # bytes free below which a failed write is put down to a full disk
_CODES = (errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC))
_WORDS = ("No space left", "StorageFull", "Disk quota exceeded")


class DiskFull(QelmError, OSError):
    """No space left where qelm was writing; the message names the folder and what to do."""

    def __str__(self) -> str:
        return str(self.strerror)


def _free(path: Path) -> int | None:
    for p in (path, *path.parents):
        try:
            return shutil.disk_usage(p).free
        except OSError:
            continue
    return None


def disk_full(error: BaseException, where: str | os.PathLike | None = None) -> DiskFull | None:
    """``error`` as a :class:`DiskFull` when a full disk caused it (its ``errno``, its words, or, for a
    library that says neither, less than :data:`NEARLY_FULL` free at ``where``), else ``None``."""
    if isinstance(error, DiskFull):
        return error
    chain: list[BaseException] = []
    e: BaseException | None = error
    while e is not None and e not in chain:
        chain.append(e)
        e = e.__cause__ or e.__context__
    by_code = next((c for c in chain if isinstance(c, OSError) and c.errno in _CODES), None)
    if where is None and by_code is not None and by_code.filename:
        where = Path(os.fsdecode(by_code.filename)).parent
    if where is None:
        return None
    folder = Path(where)
    free = _free(folder)
    worded = any(w in str(c) for c in chain for w in _WORDS)
    a_write = isinstance(error, (OSError, RuntimeError)) or "Safetensor" in type(error).__name__  # not a ValueError
    if by_code is None and not worded and (not a_write or free is None or free >= NEARLY_FULL):
        return None
    shown = f" ({free / 2**20:.1f} MiB free)" if free is not None else ""
    return DiskFull(errno.ENOSPC, f"no space left on the disk holding {str(folder)!r}{shown}: free some space there "
                                  f"or write to another disk (a checkpoint being saved is not committed: its folder "
                                  f"keeps its last complete one)")


def says_disk_full(where):
    """Decorate a function that writes: a full disk becomes :class:`DiskFull` naming the folder
    ``where(*args, **kwargs)`` gives; any other error passes unchanged."""

    def decorate(fn):
        @functools.wraps(fn)
        def wrapped(*args, **kwargs):
            try:
                return fn(*args, **kwargs)
            except Exception as e:
                full = disk_full(e, where(*args, **kwargs))
                if full is None or full is e:
                    raise
                raise full from e

        return wrapped

    return decorate
