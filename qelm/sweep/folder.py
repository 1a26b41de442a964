"""What a sweep folder holds (its layout for :mod:`qelm.folders`): the study database, the search space,
the table and the plot, and each trial's run folders (``trials/NNNN/seed-S/``, training runs); nothing
else. A new sweep goes only into a new or empty folder; a resumed or reported one only into its own."""

from __future__ import annotations

import re
from pathlib import Path, PurePosixPath

from ..folders import check_folder, claim_folder, foreign_entries, temp_of
from ..train.layout import run_layout

__all__ = ["sweep_layout", "STORAGE_FILE", "SPACE_FILE", "TABLE_FILE", "PLOT_FILE"]

STORAGE_FILE = "sweep.db"
SPACE_FILE = "space.toml"
TABLE_FILE = "sweep.json"
PLOT_FILE = "pareto.png"
_DATABASE = (STORAGE_FILE,) + tuple(f"{STORAGE_FILE}-{s}" for s in ("journal", "wal", "shm"))  # SQLite's own files
_WRITTEN = (SPACE_FILE, TABLE_FILE, PLOT_FILE)


def sweep_layout(inside: PurePosixPath, path: Path) -> bool:
    parts = inside.parts
    if len(parts) == 1:
        if path.is_dir():
            return parts[0] == "trials"
        return parts[0] in _DATABASE + _WRITTEN or temp_of(parts[0], _WRITTEN)
    if parts[0] != "trials":
        return False
    if len(parts) == 2:
        return path.is_dir() and re.fullmatch(r"\d+", parts[1]) is not None
    if len(parts) == 3:
        return path.is_dir() and re.fullmatch(r"seed-\d+", parts[2]) is not None
    return run_layout(PurePosixPath(*parts[3:]), path)


def check_sweep_folder(out, *, resume: bool) -> Path:
    """Before anything is written: refuse a sweep folder that is not new, empty or (to resume) the sweep's
    own. A new sweep in a sweep's folder is refused by :func:`qelm.sweep.run_sweep` once it has read the
    sweep's name from the database."""
    folder = check_folder(out, sweep_layout, what="sweep folder", owner="a qelm sweep", hint=" with --out")
    if not resume and folder.is_dir() and any(folder.iterdir()) and not (folder / STORAGE_FILE).is_file():
        held = foreign_entries(folder)  # every entry, named
        shown = ", ".join(held[:5]) + (f" and {len(held) - 5} more" if len(held) > 5 else "")
        raise FileExistsError(f"sweep folder {str(folder)!r} is not empty ({shown}): a new sweep starts in an empty or "
                              f"new folder; continue the sweep there with --resume, or choose another --out")
    return folder


def claim_sweep_folder(out, *, resume: bool) -> Path:
    """:func:`check_sweep_folder` again (nothing changed since), and make the folder if it is new."""
    check_sweep_folder(out, resume=resume)
    return claim_folder(out, sweep_layout, what="sweep folder", owner="a qelm sweep", hint=" with --out")
