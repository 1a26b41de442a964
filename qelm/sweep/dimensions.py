"""A sweep's searched fields: a :class:`Dimension` (its choices or its range), read from a space file's
``[search.model]`` / ``[search.train]`` entries (:func:`parse_dimension`), and every combination of their
values (:func:`combinations`), with which :mod:`qelm.sweep.space` proves each configuration valid."""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from typing import Any

__all__ = ["Dimension", "parse_dimension", "combinations"]


@dataclass(frozen=True)
class Dimension:
    """One searched field: ``table`` ("model" or "train"), its name, and its choices or range."""

    table: str
    name: str
    choices: tuple | None = None
    low: float | None = None
    high: float | None = None
    step: float | None = None
    log: bool = False

    @property
    def param(self) -> str:
        """The Optuna parameter name: ``model.d_model``, ``train.lr``."""
        return f"{self.table}.{self.name}"

    @property
    def is_int(self) -> bool:
        return self.choices is None and all(isinstance(v, int) for v in (self.low, self.high, self.step or 1))

    def _range(self) -> tuple[float, float]:
        """``(low, high)`` of a dimension without choices (checked on load: it has both)."""
        assert self.low is not None and self.high is not None
        return self.low, self.high

    def values(self) -> list | None:
        """Every value this dimension can take, or ``None`` for a continuous range."""
        if self.choices is not None:
            return list(self.choices)
        low, high = self._range()
        if self.is_int:
            return list(range(int(low), int(high) + 1, int(self.step or 1)))
        if self.step is not None:
            n = math.floor((high - low) / self.step + 1e-9)
            return [low + i * self.step for i in range(n + 1)]
        return None

    def suggest(self, trial) -> Any:
        """This dimension's value for Optuna ``trial``."""
        if self.choices is not None:
            return trial.suggest_categorical(self.param, list(self.choices))
        low, high = self._range()
        if self.is_int:
            return trial.suggest_int(self.param, int(low), int(high), step=int(self.step or 1), log=self.log)
        return trial.suggest_float(self.param, low, high, step=self.step, log=self.log)

    def describe(self) -> str:
        if self.choices is not None:
            return f"{self.name} in {list(self.choices)}"
        return f"{self.name} in [{self.low}, {self.high}]" + (f" step {self.step}" if self.step else "") + \
            (" (log)" if self.log else "")


def parse_dimension(table: str, name: str, value: Any, bad) -> Dimension:
    """The dimension a `[search.TABLE]` entry describes: a list of choices or a `{ low, high, step, log }`
    range; anything else raises ``bad(message)`` naming the entry and the fix."""
    where = f"[search.{table}] {name}"
    if isinstance(value, list):
        if not value:
            raise bad(f"{where} = [] has no choices: give at least one value")
        for v in value:
            if not isinstance(v, (str, int, float, bool)):
                raise bad(f"{where}: choice {v!r} is not a string, number or boolean")
        if len(set(map(repr, value))) != len(value):
            raise bad(f"{where} = {value!r} repeats a choice")
        return Dimension(table, name, choices=tuple(value))
    if isinstance(value, dict):
        extra = sorted(set(value) - {"low", "high", "step", "log"})
        if extra or not {"low", "high"} <= set(value):
            raise bad(f"{where} = {value!r} is not a range: use {{ low = ..., high = ... }} with optional step and log")
        low, high, step, log = value["low"], value["high"], value.get("step"), value.get("log", False)
        for v in (low, high) + ((step,) if step is not None else ()):
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
                raise bad(f"{where}: range bound {v!r} is not a finite number")
        if not low <= high:
            raise bad(f"{where}: low = {low} is above high = {high}")
        if not isinstance(log, bool):
            raise bad(f"{where}: log = {log!r} must be true or false")
        if log and (low <= 0 or step is not None):
            raise bad(f"{where}: a log range needs low > 0 and no step")
        if step is not None and step <= 0:
            raise bad(f"{where}: step = {step} must be > 0")
        return Dimension(table, name, low=low, high=high, step=step, log=log)
    raise bad(f"{where} = {value!r} is invalid: give a list of choices (e.g. [8, 16]) or a range "
              f"(e.g. {{ low = 0.001, high = 0.03, log = true }}); a single value goes in [{table}]")


def combinations(dims: list[Dimension]):
    """Every combination of the dimensions' values (a continuous range contributes its two ends)."""
    names = [d.name for d in dims]
    values = [d.values() or [d.low, d.high] for d in dims]
    for combo in itertools.product(*values):
        yield dict(zip(names, combo))
