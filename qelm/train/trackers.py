"""Experiment trackers a training run reports to through its callback (``qelm train --report-to``), as
Lightning's loggers and the Hugging Face Trainer's ``report_to`` do: TensorBoard (``torch.utils.tensorboard``,
which needs the ``tensorboard`` package) and Weights & Biases (``wandb``). Each is an optional extra; asking for
one that is not installed is a :class:`~qelm.errors.ConfigError` naming the install command, raised before
training starts. Every number of each metrics record is reported at its step, under the model's name.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from ..errors import ConfigError

__all__ = ["TRACKERS", "tracker", "callbacks"]

#: tracker name -> (what to import, the extra that installs it)
TRACKERS = {"tensorboard": ("torch.utils.tensorboard", "tensorboard"), "wandb": ("wandb", "wandb")}


def _numbers(record: dict[str, Any]) -> dict[str, float]:
    """The record's numbers (not the step itself, not flags)."""
    return {k: float(v) for k, v in record.items()
            if k != "step" and isinstance(v, (int, float)) and not isinstance(v, bool)}


def _need(name: str):
    extra = TRACKERS[name][1]
    try:  # an optional extra: imported only when asked for
        if name == "tensorboard":
            from torch.utils import tensorboard

            return tensorboard
        import wandb

        return wandb
    except ImportError:
        raise ConfigError(f"--report-to {name} needs the {extra} package, which is not installed: "
                          f"pip install 'qelm-lab[{extra}]' (or pip install {extra})") from None


class TensorBoard:
    """One event folder per model: ``OUT/tensorboard/<model>`` (``tensorboard --logdir OUT/tensorboard``)."""

    def __init__(self, out: str | os.PathLike) -> None:
        self.summary_writer = _need("tensorboard").SummaryWriter
        self.folder = Path(out) / "tensorboard"
        self.writers: dict[str, Any] = {}

    def __call__(self, event: str, name: str, info: dict[str, Any]) -> None:
        if event == "start":
            self.writers[name] = self.summary_writer(log_dir=str(self.folder / name))
        elif event == "step" and name in self.writers:
            for key, value in _numbers(info).items():
                self.writers[name].add_scalar(key, value, int(info["step"]))
        elif event == "end" and name in self.writers:
            self.writers.pop(name).close()


class WandB:
    """One Weights & Biases run per model, named ``<run folder>/<model>``, in project ``qelm`` (``WANDB_PROJECT``
    and wandb's other settings apply)."""

    def __init__(self, out: str | os.PathLike) -> None:
        self.wandb = _need("wandb")
        self.out = Path(out)
        self.runs: dict[str, Any] = {}

    def __call__(self, event: str, name: str, info: dict[str, Any]) -> None:
        if event == "start":
            self.runs[name] = self.wandb.init(project=os.environ.get("WANDB_PROJECT", "qelm"),
                                              name=f"{self.out.name}/{name}", group=self.out.name, reinit=True,
                                              config={k: v for k, v in info.items() if k != "step"})
        elif event == "step" and name in self.runs:
            self.runs[name].log(_numbers(info), step=int(info["step"]))
        elif event == "end" and name in self.runs:
            self.runs.pop(name).finish()


def tracker(name: str, out: str | os.PathLike) -> Callable[[str, str, dict], None]:
    """The training callback that reports to tracker ``name`` (one of :data:`TRACKERS`) for the run in ``out``."""
    if name not in TRACKERS:
        raise ConfigError(f"--report-to {name!r} is invalid: choose one of {', '.join(TRACKERS)}")
    return TensorBoard(out) if name == "tensorboard" else WandB(out)


def callbacks(*each: Callable[[str, str, dict], None] | None) -> Callable[[str, str, dict], None] | None:
    """One training callback that calls each given one in turn (``None`` where none is given)."""
    given: Sequence[Callable[[str, str, dict], None]] = [c for c in each if c is not None]
    if not given:
        return None

    def call(event: str, name: str, info: dict) -> None:
        for c in given:
            c(event, name, info)

    return call
