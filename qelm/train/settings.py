"""How a training run is set: the settings a caller gives (:class:`TrainOverrides`, any of them left
out), their defaults, the ``[train]`` table of a config file, and the rule that decides each setting of a
run (an explicit setting > the resumed run's > the config file's > :data:`TRAIN_DEFAULTS`) into
:class:`TrainSettings`, every one decided before training starts.
"""

from __future__ import annotations

import dataclasses
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..backends import BackendSpec
from ..config import QELMConfig, model_table, read_toml, split_runtime
from ..data import bundled_config, check_seed
from ..errors import CheckpointError, ConfigError

__all__ = ["TrainSettings", "TrainOverrides", "TRAIN_DEFAULTS", "MATCH_TOLERANCE", "load_run_config", "resolve_settings",
           "check_settings"]

MATCH_TOLERANCE = 0.02  # the matched model's parameter count is within this fraction of the QELM's

#: training settings when neither the caller nor the config file's [train] table gives one
TRAIN_DEFAULTS: dict[str, Any] = {
    "steps": 300,
    "batch_size": 8,
    "lr": 1e-2,
    "lr_schedule": "cosine",  # linear warm-up, then cosine decay to min_lr; "constant" keeps lr
    "warmup_steps": None,  # None: 5% of the steps
    "min_lr": None,  # None: lr / 10 (where the cosine ends)
    "seed": 0,
    "tokenizer": "char",
    "vocab_size": None,
    "eval_every": None,  # None: five evaluations over the run, the last at the final step
    "save_every": None,  # None: five checkpoints over the run
    "log_every": 1,
    "grad_clip": 1.0,
    "weight_decay": 0.0,
    "twin": True,
    "matched": True,  # train ClassicalLM.matched_to(qelm) too
}
#: settings a resumed run must keep: each changes the numbers the run computes
_FIXED_ON_RESUME = ("batch_size", "lr", "lr_schedule", "warmup_steps", "min_lr", "seed", "tokenizer", "vocab_size",
                    "grad_clip", "weight_decay")
LR_SCHEDULES = ("cosine", "constant")


@dataclass
class TrainOverrides:
    """The training settings a caller gives: a field left ``None`` takes the resumed run's value, else the
    config file's ``[train]`` table's, else :data:`TRAIN_DEFAULTS`'; :func:`resolve_settings` turns them into
    :class:`TrainSettings`.

    Examples:
        >>> from qelm import TrainOverrides
        >>> given = TrainOverrides(steps=100, lr=0.01)
        >>> given.batch_size is None  # decided later: the resumed run, the config file, or the default
        True
        >>> given.replace(steps=200).steps
        200
    """

    steps: int | None = None
    """Total optimizer steps per model (on resume: the total, not the steps still to run)."""
    batch_size: int | None = None
    """Global batch, split over data-parallel processes."""
    lr: float | None = None
    """AdamW peak learning rate."""
    lr_schedule: str | None = None
    """The schedule: "cosine" (warm-up, then cosine decay to min_lr) or "constant"."""
    warmup_steps: int | None = None
    """Steps of linear warm-up from 0 to lr (default: 5% of the steps)."""
    min_lr: float | None = None
    """The learning rate the cosine decays to at the last step (default: lr / 10)."""
    seed: int | None = None
    """Initialisation and batches: every model draws the same ones."""
    tokenizer: str | None = None
    """The tokenizer: "char" or "bpe"."""
    vocab_size: int | None = None
    """BPE vocabulary size."""
    eval_every: int | None = None
    """Steps between validation evaluations (default: five over the run)."""
    save_every: int | None = None
    """Steps between checkpoints (default: five over the run)."""
    log_every: int | None = None
    """Steps between metrics records."""
    grad_clip: float | None = None
    """Gradient-norm clip; 0 turns it off."""
    weight_decay: float | None = None
    """AdamW weight decay."""
    twin: bool | None = None
    """Train the classical twin (the same config, every slot classical)."""
    matched: bool | None = None
    """Train the parameter-matched classical model."""

    def replace(self, **changes: Any) -> TrainOverrides:
        """A copy with some fields changed; an unknown name is a ``TypeError`` naming it."""
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        """The fields as a dictionary, ``None`` for those not given."""
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class TrainSettings:
    """How a run trains, every setting decided (:func:`resolve_settings`): what training reads, and what the
    run folder records.

    Examples:
        >>> from qelm.train import TRAIN_DEFAULTS, TrainSettings
        >>> settings = TrainSettings(**{**TRAIN_DEFAULTS, "steps": 100, "lr": 0.01, "warmup_steps": 5, "min_lr": 0.001})
        >>> settings.lr_at(5), settings.lr_at(100)  # the peak after warm-up, then down to min_lr
        (0.01, 0.001)
    """

    steps: int
    """Total optimizer steps per model."""
    batch_size: int
    """Global batch, split over data-parallel processes."""
    lr: float
    """AdamW peak learning rate."""
    lr_schedule: str
    """The schedule: "cosine" (warm-up, then cosine decay to min_lr) or "constant"."""
    warmup_steps: int
    """Steps of linear warm-up from 0 to lr."""
    min_lr: float
    """The learning rate the cosine decays to at the last step."""
    seed: int
    """Initialisation and batches: every model draws the same ones."""
    tokenizer: str
    """The tokenizer: "char" or "bpe"."""
    vocab_size: int | None
    """BPE vocabulary size (None: a char tokenizer's, one token per character)."""
    eval_every: int
    """Steps between validation evaluations."""
    save_every: int
    """Steps between checkpoints."""
    log_every: int
    """Steps between metrics records."""
    grad_clip: float
    """Gradient-norm clip; 0 turns it off."""
    weight_decay: float
    """AdamW weight decay."""
    twin: bool
    """Train the classical twin (the same config, every slot classical)."""
    matched: bool
    """Train the parameter-matched classical model."""

    def to_dict(self) -> dict[str, Any]:
        """The settings as a dictionary (as ``summary.json`` and the run folder record them)."""
        return dataclasses.asdict(self)

    def lr_at(self, step: int) -> float:
        """The learning rate of optimizer step ``step`` (1 to ``steps``): a function of the step alone, so a
        resumed run takes the same rates. ``cosine``: linear warm-up over ``warmup_steps`` to ``lr``, then half
        a cosine from ``lr`` down to ``min_lr`` at the last step.

        Args:
            step: the optimizer step, from 1.

        Returns:
            The learning rate of that step.
        """
        if self.lr_schedule == "constant":
            return self.lr
        if step <= self.warmup_steps:
            return self.lr * step / self.warmup_steps
        progress = (step - self.warmup_steps) / max(1, self.steps - self.warmup_steps)
        return self.min_lr + (self.lr - self.min_lr) * 0.5 * (1.0 + math.cos(math.pi * min(progress, 1.0)))


def check_settings(s: dict[str, Any]) -> None:
    """Raise ``ConfigError`` naming the first setting of ``s`` (every name of :data:`TRAIN_DEFAULTS`) that
    cannot run (``None`` is allowed only where a default is computed: ``vocab_size``, ``eval_every``,
    ``save_every``, ``warmup_steps``, ``min_lr``)."""
    def bad(name: str, fix: str) -> None:
        raise ConfigError(f"{name}={s[name]!r} is invalid: {fix}")

    for name in ("steps", "batch_size", "log_every"):
        if isinstance(s[name], bool) or not isinstance(s[name], int) or s[name] < 1:
            bad(name, "use an integer >= 1")
    check_seed(s["seed"])
    for name in ("eval_every", "save_every"):
        if s[name] is not None and (isinstance(s[name], bool) or not isinstance(s[name], int) or s[name] < 1):
            bad(name, "use an integer >= 1")
    if isinstance(s["lr"], bool) or not isinstance(s["lr"], (int, float)) or not 0 < s["lr"] < math.inf:
        bad("lr", "use a finite, positive learning rate, e.g. 0.01")
    for name in ("grad_clip", "weight_decay"):
        if isinstance(s[name], bool) or not isinstance(s[name], (int, float)) or not 0 <= s[name] < math.inf:
            bad(name, "use a finite number >= 0 (0 turns it off)")
    for name in ("twin", "matched"):
        if not isinstance(s[name], bool):
            bad(name, "use true or false")
    if s["lr_schedule"] not in LR_SCHEDULES:
        bad("lr_schedule", f"choose one of {', '.join(LR_SCHEDULES)}")
    if s["warmup_steps"] is not None and (isinstance(s["warmup_steps"], bool) or not isinstance(s["warmup_steps"], int)
                                          or s["warmup_steps"] < 0):
        bad("warmup_steps", "use an integer >= 0 (0: no warm-up)")
    if s["min_lr"] is not None and (isinstance(s["min_lr"], bool) or not isinstance(s["min_lr"], (int, float))
                                    or not 0 <= s["min_lr"] <= s["lr"]):
        bad("min_lr", f"use a finite number from 0 to lr={s['lr']}")


def _scheduled(s: dict[str, Any]) -> dict[str, Any]:
    """Checked settings with every computed default set: ``eval_every`` and ``save_every`` (five of each over
    the run), ``warmup_steps`` (5% of the steps) and ``min_lr`` (lr / 10)."""
    every = max(1, s["steps"] // 5)
    return {**s, "eval_every": s["eval_every"] or every, "save_every": s["save_every"] or every,
            "warmup_steps": s["steps"] // 20 if s["warmup_steps"] is None else s["warmup_steps"],
            "min_lr": s["lr"] / 10 if s["min_lr"] is None else s["min_lr"]}


def load_run_config(path: str | os.PathLike | None = None) -> tuple[QELMConfig, BackendSpec, dict[str, Any]]:
    """``(model config, backend spec, training settings)`` from a TOML file: the ``[model]`` table (or top-level
    fields), the optional ``[runtime]`` table (backend, shots, backend_options; a file written before it existed
    may hold them under ``[model]``) and the optional ``[train]`` table (keys of :data:`TRAIN_DEFAULTS`).
    ``None``: the tiny demo config."""
    p = Path(path) if path is not None else bundled_config()
    data = read_toml(p)
    model = model_table(data, f"config file {str(p)!r}")
    settings = data.get("train", {})
    if not isinstance(settings, dict):
        raise ConfigError(f"config file {str(p)!r}: [train] must be a table")
    unknown = sorted(set(settings) - set(TRAIN_DEFAULTS))
    if unknown:
        raise ConfigError(f"config file {str(p)!r}: unknown [train] setting(s) {', '.join(unknown)}; valid settings are "
                         f"{', '.join(TRAIN_DEFAULTS)}")
    try:
        fields, spec = split_runtime(model, data.get("runtime"))
        config = QELMConfig.from_dict(fields)
        spec.check()
    except (TypeError, ValueError) as e:
        raise ConfigError(f"config file {str(p)!r}: {e}") from None
    return config, spec, dict(settings)


def resolve_settings(given: TrainOverrides, file_settings: dict[str, Any], stored: dict[str, Any] | None) -> TrainSettings:
    """Settings by precedence: ``given`` > the resumed run's (``stored``) > the config file's [train] >
    defaults, checked, with every computed default set. On resume a given setting that would change the
    computed numbers must equal the stored one; the others (the total steps, how often to evaluate, save,
    log) may change."""
    settings = {**TRAIN_DEFAULTS, **file_settings}
    explicit = given.to_dict()
    if stored is not None:
        if "lr_schedule" not in stored:  # a run of an older qelm trained at a constant rate: it resumes so
            stored = {**stored, "lr_schedule": "constant"}
        for name in TRAIN_DEFAULTS:
            if name in stored:
                settings[name] = stored[name]
        for name in _FIXED_ON_RESUME:
            if explicit.get(name) is not None and name in stored and explicit[name] != stored[name]:
                raise CheckpointError(f"cannot resume with {name}={explicit[name]!r}: the run was trained with "
                                 f"{name}={stored[name]!r}; drop that option to resume exactly, or start a new run "
                                 f"in another --out")
    settings.update({k: v for k, v in explicit.items() if v is not None})
    check_settings(settings)
    return TrainSettings(**_scheduled(settings))
