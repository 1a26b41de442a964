"""``metrics.jsonl``: the per-step records a training run writes into each model's folder, read back for
resuming and for plotting. One JSON object per line, each with at least ``step`` (and ``loss``; on
evaluation steps ``val_loss`` and ``val_perplexity``).
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .errors import CheckpointError
from .files import atomic_write

__all__ = ["METRICS", "RUN_MODELS", "read_metrics", "write_metrics", "read_runs"]

METRICS = "metrics.jsonl"
RUN_MODELS = ("qelm", "twin", "matched")  # the model folders of a training run, in the order they are reported


def read_metrics(path: str | os.PathLike) -> list[dict[str, Any]]:
    """The records of one ``metrics.jsonl``, blank lines skipped. A torn last line (a run killed while
    writing it) is skipped; a bad line anywhere else, or a record without ``step``, is a ``ValueError``
    naming the line. A missing file is ``FileNotFoundError``."""
    path = Path(path)
    records = []
    lines = path.read_text(encoding="utf-8").splitlines()
    for lineno, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as e:
            if lineno == len(lines):
                continue
            raise CheckpointError(f"{path}:{lineno} is not valid JSON ({e.msg}); {METRICS} holds one JSON "
                             "object per line") from None
        if not isinstance(record, dict) or "step" not in record:
            raise CheckpointError(f"{path}:{lineno} has no 'step' key; each line of {METRICS} must be an "
                             "object with step, loss and (on eval steps) val_loss, val_perplexity")
        records.append(record)
    return records


def write_metrics(path: str | os.PathLike, records: list[dict[str, Any]]) -> Path:
    """Replace ``path`` with ``records``, one JSON line each, atomically."""
    return atomic_write(path, "".join(json.dumps(r) + "\n" for r in records))


def read_runs(run_dirs: Sequence[str | os.PathLike]) -> dict[str, list[dict[str, Any]]]:
    """Metrics of each run folder, labelled by its path: ``DIR/metrics.jsonl`` itself, else the
    ``DIR/qelm/``, ``DIR/twin/`` and ``DIR/matched/`` checkpoints of a training run (labels ``DIR/qelm``, ...)."""
    if not run_dirs:
        raise CheckpointError("no run folders given: name at least one training run folder")
    runs: dict[str, list[dict[str, Any]]] = {}
    for d in map(Path, run_dirs):
        if not d.is_dir():
            raise FileNotFoundError(f"run folder {str(d)!r} does not exist (or is not a folder)")
        candidates = [d] if (d / METRICS).exists() else [d / name for name in RUN_MODELS]
        found = [c for c in candidates if (c / METRICS).exists()]
        if not found:
            raise FileNotFoundError(f"no {METRICS} in {str(d)!r} or its qelm/, twin/ and matched/ subfolders: "
                                    "give a training run folder (the --out of qelm train) or one of its checkpoints")
        for c in found:
            records = read_metrics(c / METRICS)
            if not any("loss" in r or "val_loss" in r for r in records):
                raise CheckpointError(f"{c / METRICS} has no loss or val_loss values to plot")
            runs[c.as_posix()] = records
    return runs
