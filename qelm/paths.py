"""What a path given as input is, when it is not what was asked for: a folder where a file belongs, a
device or FIFO (whose reads never end, or block), a link that leads nowhere. Each reader says which, in
the words of :func:`wrong_kind`, instead of "does not exist" or a raw error."""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path

__all__ = ["wrong_kind"]

_SPECIAL = ((stat.S_ISFIFO, "a FIFO (named pipe)"), (stat.S_ISCHR, "a character device"),
            (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket"))


def wrong_kind(path: str | os.PathLike, want: str = "file") -> str | None:
    """``None`` when ``path`` is a ``want`` ("file": a regular file; "folder") or does not exist at all;
    else what it is instead, as words to follow its name: "is a folder, not a file", "is a character
    device, not a regular file", "is a link loop", "is a link to 'x', which does not exist"."""
    p = Path(path)
    try:
        mode = p.stat().st_mode
    except OSError as e:
        if p.is_symlink():
            if e.errno == errno.ELOOP:
                return "is a link loop (a link that leads back to itself)"
            return f"is a link to {os.readlink(p)!r}, which does not exist"
        if e.errno == errno.ENOTDIR:
            return "is inside a file, not a folder"
        if e.errno in (errno.EACCES, errno.EPERM):
            return "cannot be read (permission denied)"
        if e.errno == errno.ELOOP:
            return "is inside a link loop"
        return None  # missing: the caller says so in its own words
    if want == "folder":
        if stat.S_ISDIR(mode):
            return None
        return "is a file, not a folder" if stat.S_ISREG(mode) else f"is {_special(mode)}, not a folder"
    if stat.S_ISREG(mode):
        return None
    if stat.S_ISDIR(mode):
        return "is a folder, not a file"
    return f"is {_special(mode)}, not a regular file"


def _special(mode: int) -> str:
    return next((words for test, words in _SPECIAL if test(mode)), "a special file")
