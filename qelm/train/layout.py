"""What a training run folder holds (its layout for :mod:`qelm.folders`): every file and folder
:func:`qelm.train.train` writes there, and nothing else. A model folder (``qelm/``, ``twin/``,
``matched/``) counts as the run's only if it holds nothing but checkpoint files, its ``metrics.jsonl``
and its ``best/`` checkpoint; any other file, any link or special file makes the folder the user's.
"""

from __future__ import annotations

from pathlib import Path, PurePosixPath

from ..model_files import BEST, FILES, MANIFEST, PENDING
from ..folders import temp_of
from ..metrics import METRICS

__all__ = ["run_layout", "checkpoint_layout", "MODEL_NAMES", "SUMMARY", "LOSS_CURVE", "LOCK"]

SUMMARY = "summary.json"
LOSS_CURVE = "loss_curve.png"
LOCK = ".lock"
MODEL_NAMES = ("twin", "matched", "qelm")  # training order (see qelm.train.run)
_CHECKPOINT_FILES = FILES + (MANIFEST,)


def checkpoint_layout(parts: tuple[str, ...], path: Path, *, extra: tuple[str, ...] = (), best: bool = False) -> bool:
    """Whether ``parts`` (inside a checkpoint folder) is a file or folder a save writes: a checkpoint
    file, its temporary file, the pending save ``.pending/`` with the same; ``extra`` file names beside
    them; with ``best``, a ``best/`` checkpoint folder of its own."""
    names = _CHECKPOINT_FILES + extra
    first, rest = parts[0], parts[1:]
    if not rest:
        if path.is_dir():
            return first == PENDING or (best and first == BEST)
        return first in names or temp_of(first, names)
    if first == PENDING:
        return len(rest) == 1 and not path.is_dir() and (rest[0] in _CHECKPOINT_FILES or temp_of(rest[0], _CHECKPOINT_FILES))
    if best and first == BEST:
        return checkpoint_layout(rest, path)
    return False


def run_layout(inside: PurePosixPath, path: Path) -> bool:
    """The layout of a run folder (module docstring)."""
    parts = inside.parts
    first = parts[0]
    if len(parts) == 1:
        if path.is_dir():
            return first in MODEL_NAMES
        return first in (SUMMARY, LOSS_CURVE, LOCK) or temp_of(first, (SUMMARY, LOSS_CURVE))
    return first in MODEL_NAMES and checkpoint_layout(parts[1:], path, extra=(METRICS,), best=True)
