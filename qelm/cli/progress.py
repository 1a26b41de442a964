"""What the command line shows while it works and when it is done: progress bars (on a terminal only)
and the figures of its tables."""

from __future__ import annotations

import logging
import sys
from typing import Any

from tqdm import tqdm

from ..train import LABELS
from .slow_steps import SlowStepNotes


def quiet() -> bool:
    """``qelm -q``: qelm's logger set to errors only."""
    return logging.getLogger("qelm").getEffectiveLevel() > logging.WARNING


def show_progress() -> bool:
    """Progress bars on a terminal only: a pipe or a log file gets none, nor does ``qelm -q``."""
    return sys.stderr.isatty() and not quiet()


class Progress:
    """tqdm bars fed by :func:`qelm.train.train`'s callback: loss and tokens/s per model (on a terminal;
    nothing in a pipe).

    The live tokens/s is an exponential moving average of the step times (:attr:`SMOOTHING` weight on the
    newest), so one slow or fast step does not swing it. Each bar is drawn finished once, when its model
    ends, with the rate of its training steps alone (validation and saving left out) and the validation
    perplexity of its last evaluation."""

    SMOOTHING = 0.1  # weight of the newest step in the live tokens/s (tqdm's own smoothing)
    FORMAT = "{desc}: {percentage:3.0f}%|{bar}| {n_fmt}/{total_fmt} [{elapsed}<{remaining}{postfix}]"  # no tqdm rate

    def __init__(self, file=None, announce: str | None = None) -> None:
        self.file = file  # default: stderr
        self.announce = announce  # printed on stdout at the first event: once every input has been checked
        self.bars: dict[str, Any] = {}
        self.per_token: dict[str, float | None] = {}  # smoothed seconds per training token
        self.totals: dict[str, list[float]] = {}  # [tokens, seconds] of the training steps seen
        self.postfix: dict[str, dict[str, str]] = {}
        self.notes: SlowStepNotes | None = None  # slow steps said in words where no bar is shown

    def __call__(self, event: str, name: str, info: dict) -> None:
        if self.notes is None and not show_progress() and not quiet():
            self.notes = SlowStepNotes(lambda n: LABELS[n], self.file)
        if self.notes is not None:
            self.notes.seen(event, name, info)
        if self.announce:
            print(self.announce, flush=True)
            self.announce = None
        if event == "start":
            width = max(len(label) for label in LABELS.values())
            self.per_token[name], self.totals[name], self.postfix[name] = None, [0.0, 0.0], {}
            self.bars[name] = tqdm(total=info["steps"], initial=info["step"], desc=f"{LABELS[name]:>{width}}",
                                   unit="step", dynamic_ncols=True, file=self.file or sys.stderr,
                                   disable=not show_progress(), bar_format=self.FORMAT)
        elif event == "step":
            bar, postfix = self.bars[name], self.postfix[name]
            seconds = info["step_seconds"] / info["tokens"]
            old = self.per_token[name]
            smoothed = seconds if old is None else old + self.SMOOTHING * (seconds - old)
            self.per_token[name] = smoothed
            self.totals[name][0] += info["tokens"]
            self.totals[name][1] += info["step_seconds"]
            postfix.update({"loss": f"{info['loss']:.3f}", "tok/s": f"{1 / smoothed:.0f}"})
            if "val_loss" in info:
                postfix["val_ppl"] = f"{info['val_perplexity']:.2f}"
            bar.set_postfix(postfix, refresh=False)  # shown by the update below: this step's figures
            if info["step"] < bar.total:
                bar.update(info["step"] - bar.n)  # the last step is drawn once, by "end"
        elif event == "end":
            bar, postfix = self.bars.pop(name), self.postfix.pop(name)
            tokens, seconds = self.totals.pop(name)
            if seconds:
                postfix["tok/s"] = f"{tokens / seconds:.0f}"  # the training steps' own rate
            if info.get("val"):
                postfix["val_ppl"] = f"{info['val']['perplexity']:.2f}"
            bar.set_postfix(postfix, refresh=False)
            bar.n = bar.total
            bar.close()  # draws the finished bar, once

    def close(self) -> None:
        if self.notes is not None:
            self.notes.stop()
        for bar in self.bars.values():
            bar.close()
        self.bars.clear()


def progress_bar(total: int, unit: str):
    """A tqdm bar on stderr, shown on a terminal only (it closes itself as a context manager)."""
    return tqdm(total=total, unit=unit, unit_scale=True, file=sys.stderr, dynamic_ncols=True, leave=False,
                disable=not show_progress())


def mib(n: int | None) -> str:
    return "-" if n is None else f"{n / 2**20:.0f} MiB"


def number(x: float | None, fmt: str) -> str:
    return "-" if x is None else format(x, fmt)


def duration(seconds: float) -> str:
    m, s = divmod(seconds, 60)
    return f"{int(m)}m{s:04.1f}s" if m else f"{s:.1f}s"
