"""Atomic file writes: every file qelm produces (checkpoints, logs, drawings, plots, JSON results) goes
through here, so a reader never sees a half-written file and an interrupted write leaves the old one whole.
Also the lock that keeps two processes from writing one folder (:class:`FolderLock`).

Hand-written because the standard library has no atomic-replace helper; this is the usual recipe: a
temporary file in the target's own folder (same filesystem, so ``os.replace`` is one atomic rename), moved
over the target only once it is complete.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import socket
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from .errors import QelmError

__all__ = ["atomic_path", "atomic_write", "fsync_path", "make_ordinary", "remove_stray_temps", "sha256_file", "FolderLock",
           "FolderInUse"]

TEMP_SUFFIX = ".tmp"  # temporary files are named .NAME.RANDOM.tmp beside their target


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def make_ordinary(path: str | os.PathLike) -> None:
    """Give ``path`` the mode of an ordinary new file: read-write as the umask allows."""
    os.chmod(path, 0o666 & ~_umask())


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
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=TEMP_SUFFIX, dir=target.parent)
    except OSError as e:  # name the file asked for, not the hidden temporary one
        if e.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
            raise PermissionError(f"cannot write {str(target)!r}: its folder {str(target.parent)!r} is not writable "
                                  f"({e.strerror}); choose another path") from None
        raise OSError(e.errno, f"cannot write {str(target)!r}: {e.strerror}") from None
    os.close(fd)
    try:
        yield Path(tmp)
        # after the write: mkstemp makes the file private, and some writers (safetensors) replace it with
        # their own private file; the result is an ordinary file, as the umask says
        make_ordinary(tmp)
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


def fsync_path(path: str | os.PathLike) -> None:
    """Flush a file (or a folder's entries) to the disk, so that a rename after it never exposes a file
    whose data a power cut could still lose."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    except OSError:  # some filesystems cannot sync a folder; the rename is still atomic
        pass
    finally:
        os.close(fd)


def remove_stray_temps(folder: str | os.PathLike, names: tuple[str, ...]) -> list[Path]:
    """Remove the temporary files that writes of ``names`` in ``folder`` left when their process was killed.
    Only for a caller that knows no other process is writing there (a run holding its lock)."""
    removed = []
    for name in names:
        for path in Path(folder).glob(f".{name}.*{TEMP_SUFFIX}"):
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
                removed.append(path)
    return removed


class FolderInUse(QelmError):
    """Another process holds the lock of a folder; the message names it (pid, host, since when)."""


class FolderLock:
    """An exclusive lock on a folder, held from :meth:`acquire` to :meth:`release` (or the end of the
    process). It is an ``flock`` on the file ``name`` inside the folder: the kernel drops it when the
    holder exits, even by SIGKILL, so a killed process never leaves a stale lock behind. The file records
    the holder's pid, host and start time for the error another process gets. (Where ``fcntl`` is missing,
    as on Windows, nothing is locked.)"""

    def __init__(self, folder: str | os.PathLike, name: str = ".lock", *, what: str = "folder") -> None:
        self.path = Path(folder) / name
        self.what = what
        self._fd: int | None = None

    def acquire(self) -> FolderLock:
        try:  # lazy: fcntl exists on POSIX only, and elsewhere the lock is skipped
            import fcntl
        except ImportError:  # pragma: no cover - not POSIX
            return self
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            os.close(fd)
            if e.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise
            raise FolderInUse(f"{self.what} {str(self.path.parent)!r} is in use by {self._holder()}: wait for it to "
                              f"finish or stop it, or choose another folder") from None
        holder = {"pid": os.getpid(), "host": socket.gethostname(), "since": time.strftime("%Y-%m-%d %H:%M:%S")}
        os.ftruncate(fd, 0)
        os.write(fd, (json.dumps(holder) + "\n").encode())
        self._fd = fd
        return self

    def _holder(self) -> str:
        try:
            h = json.loads(self.path.read_text(encoding="utf-8"))
            return f"process {h['pid']} on host {h['host']} (since {h['since']})"
        except (OSError, ValueError, KeyError, TypeError):  # it is writing the file this moment
            return "another process"

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing the only descriptor drops the flock
            self._fd = None

    def __enter__(self) -> FolderLock:
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


def sha256_file(path: str | os.PathLike) -> str:
    """The sha256 of a file's bytes, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
