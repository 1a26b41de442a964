"""Output folders: the one rule every command that writes a folder follows (``qelm train`` and ``demo``,
``gallery``, ``sweep --out``, ``compare --keep-files``).

A command writes only into a folder that is its own: a new one, an empty one, or one whose every entry is
a file or folder the command itself writes there (its *layout*). A folder holding anything else (a file of
the user's, a link, a FIFO or a device) is refused before anything is written, naming what is in the way.
So no file of the user's is replaced or removed, and no write follows a link out of the folder.

A layout is a predicate ``layout(inside, path)``: ``inside`` is the entry's path relative to the folder
(a :class:`~pathlib.PurePosixPath`), ``path`` the entry itself (a file or a folder, never a link). The
folder given itself may be a link to a folder: the user named it.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Callable
from pathlib import Path, PurePosixPath

__all__ = ["Layout", "foreign_entries", "check_folder", "claim_folder", "refuse_links", "temp_of", "SHOWN"]

Layout = Callable[[PurePosixPath, Path], bool]
SHOWN = 5  # entries a refusal names; the rest are counted


def temp_of(name: str, names) -> bool:
    """Whether ``name`` is the temporary file of an atomic write of one of ``names`` (``.NAME.RANDOM.tmp``,
    :func:`qelm.files.atomic_path`)."""
    return name.endswith(".tmp") and any(name.startswith(f".{n}.") for n in names)


def _describe(inside: PurePosixPath, path: Path, mode: int) -> str:
    if stat.S_ISLNK(mode):
        try:
            target = os.readlink(path)
        except OSError:
            target = "?"
        return f"{inside} -> {target} (a link)"
    if stat.S_ISDIR(mode):
        return f"{inside}/"
    if not stat.S_ISREG(mode):
        return f"{inside} (not a regular file)"
    return str(inside)


def foreign_entries(folder: str | os.PathLike, layout: Layout | None = None) -> list[str]:
    """The entries of ``folder`` (searched all the way down, never through a link) that are not its
    command's: those ``layout`` does not name, every link and every special file. A foreign folder is
    listed once (``data/``), not searched. ``layout=None``: every entry is foreign (a command that writes
    only a new or empty folder)."""
    root = Path(folder)
    found: list[str] = []

    def walk(directory: Path, inside: PurePosixPath) -> None:
        try:
            entries = sorted(os.scandir(directory), key=lambda e: e.name)
        except OSError as e:
            raise PermissionError(f"cannot read folder {str(directory)!r} ({e.strerror or e}): choose another "
                                  f"folder") from None
        for entry in entries:
            rel = inside / entry.name
            path = Path(entry.path)
            mode = entry.stat(follow_symlinks=False).st_mode
            own = (stat.S_ISDIR(mode) or stat.S_ISREG(mode)) and layout is not None and layout(rel, path)
            if not own:
                found.append(_describe(rel, path, mode))
            elif stat.S_ISDIR(mode):
                walk(path, rel)

    walk(root, PurePosixPath())
    return found


def _not_a_folder(path: Path, what: str) -> None:
    """Refuse a path that exists but is not a folder, saying what it is."""
    if path.is_symlink() and not path.exists():
        raise FileNotFoundError(f"{what} {str(path)!r} is a link to {os.readlink(path)!r}, which does not exist: "
                                f"give a folder")
    if path.exists() and not path.is_dir():
        kind = "a file" if path.is_file() else "not a folder (a special file)"
        raise FileExistsError(f"{what} {str(path)!r} is {kind}; give a folder")


def check_folder(path: str | os.PathLike, layout: Layout | None = None, *, what: str = "output folder",
                 owner: str = "qelm's", hint: str = "") -> Path:
    """Refuse (``FileExistsError``) a folder that is not the command's: one that is a file, or holds an
    entry :func:`foreign_entries` names. ``owner`` says whose files are expected ("a qelm run"), ``hint``
    ends the advice (" with --out"). Returns the folder."""
    folder = Path(path)
    _not_a_folder(folder, what)
    if not folder.is_dir():
        return folder
    foreign = foreign_entries(folder, layout)
    if foreign:
        shown = ", ".join(foreign[:SHOWN]) + (f" and {len(foreign) - SHOWN} more" if len(foreign) > SHOWN else "")
        raise FileExistsError(f"{what} {str(folder)!r} holds files that are not {owner} ({shown}): choose an empty "
                              f"or new folder{hint}")
    return folder


def claim_folder(path: str | os.PathLike, layout: Layout | None = None, *, what: str = "output folder",
                 owner: str = "qelm's", hint: str = "") -> Path:
    """:func:`check_folder`, then create the folder (and its parents) if it is new. Returns it."""
    folder = check_folder(path, layout, what=what, owner=owner, hint=hint)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except FileExistsError:  # a parent is a file
        raise FileExistsError(f"{what} {str(folder)!r} cannot be made: a part of its path is a file") from None
    except OSError as e:
        raise PermissionError(f"{what} {str(folder)!r} cannot be made ({e.strerror or e}): choose another "
                              f"folder{hint}") from None
    return folder


def refuse_links(path: str | os.PathLike, *, what: str = "output folder", hint: str = "") -> None:
    """Refuse (``FileExistsError``) a folder holding a link or a special file anywhere inside: a command
    continuing its own folder (a resumed run) never writes through one."""
    folder = Path(path)
    if not folder.is_dir():
        return
    links = foreign_entries(folder, lambda inside, p: True)
    if links:
        shown = ", ".join(links[:SHOWN]) + (f" and {len(links) - SHOWN} more" if len(links) > SHOWN else "")
        raise FileExistsError(f"{what} {str(folder)!r} holds links or special files ({shown}): qelm never writes "
                              f"through them; replace each with a plain file or folder{hint}")
