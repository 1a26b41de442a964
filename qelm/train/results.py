"""What a training run hands back: a :class:`ModelRun` per trained model (its figures feed
``summary.json``) inside one :class:`TrainResult`, and the progress callback's type."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..data import TextDataset
from ..model import QELM

__all__ = ["ModelRun", "TrainResult", "Callback"]

Callback = Callable[[str, str, dict], None]  # (event: "start" | "step" | "end", model name, info)


@dataclass
class ModelRun:
    """One trained model of a run and its measured figures."""

    name: str  # "qelm", "twin" or "matched"
    model: QELM  # QELM or ClassicalLM, in train mode, on the training device
    path: Path  # its checkpoint folder
    history: list[dict[str, Any]]  # metrics records, earlier (resumed) steps included; rank 0 only
    val: dict[str, float]  # final evaluate() on the validation split; empty on ranks other than 0
    steps_run: int  # optimizer steps taken in this call (fewer than the total after a resume)
    best: dict[str, Any] | None = None  # the checkpoint in path / "best": step, val_loss, val_perplexity (rank 0)

    @property
    def losses(self) -> list[float]:
        return [r["loss"] for r in self.history]

    def figures(self) -> dict[str, Any]:
        """Parameter counts, validation loss/perplexity, throughput, memory: the summary.json entry."""
        secs = [r["step_seconds"] for r in self.history if "step_seconds" in r]
        tokens = sum(r["tokens"] for r in self.history if "step_seconds" in r)
        return {
            "class": type(self.model).__name__,
            "d_model": self.model.config.d_model,
            "d_hidden": self.model.config.d_hidden,
            "parameters": self.model.num_parameters(),
            "circuit_parameters": self.model.circuit_parameters(),
            "val_loss": self.val.get("loss"),
            "val_perplexity": self.val.get("perplexity"),
            "val_tokens": self.val.get("tokens"),
            "final_train_loss": self.history[-1]["loss"] if self.history else None,
            "tokens_per_s": tokens / sum(secs) if secs else None,  # over all logged steps
            "train_seconds": sum(secs),  # logged steps only: forward, backward, optimizer
            "peak_memory_bytes": max((r["peak_memory_bytes"] for r in self.history), default=None),
            "steps": self.history[-1]["step"] if self.history else 0,
            "best": self.best,  # the best checkpoint by validation loss (saved in best/), or None
        }


@dataclass
class TrainResult:
    """What :func:`train` returns. ``twin`` / ``matched`` are None when the run trains no twin / no
    parameter-matched model; ``summary`` is the content of ``summary.json`` (empty on ranks other than 0).

    Examples:
        >>> import tempfile
        >>> from qelm import QELMConfig, TextDataset
        >>> from qelm.train import train
        >>> data = TextDataset.from_text("the cat sat on the mat. " * 20)
        >>> config = QELMConfig(d_model=8, context_len=8, n_qubits=2, circuit_layers=1)
        >>> result = train(config, data, steps=2, batch_size=4, out=tempfile.mkdtemp() + "/run", matched=False)
        >>> sorted(result.runs()), result.matched is None
        (['qelm', 'twin'], True)
        >>> result.winner in ("qelm", "twin"), result.qelm.steps_run, "perplexity" in result.verdict
        (True, 2, True)
    """

    out: Path
    """The run folder."""
    qelm: ModelRun
    """The QELM's run: its model, parameters, losses and validation figures."""
    twin: ModelRun | None
    """The classical twin's run, or None when it was not trained."""
    matched: ModelRun | None
    """The parameter-matched classical model's run, or None when it was not trained."""
    unigram: dict[str, float]
    """The unigram baseline's validation loss and perplexity (a model should beat it)."""
    dataset: TextDataset
    """The tokenized corpus the models trained on."""
    summary: dict[str, Any] = field(default_factory=dict)
    """What ``summary.json`` holds."""

    @property
    def winner(self) -> str | None:
        """The model with the lowest validation perplexity (``"qelm"``, ``"twin"`` or ``"matched"``)."""
        return self.summary.get("winner")

    @property
    def verdict(self) -> str:
        """The run's result in one sentence, computed from the measured numbers."""
        return self.summary.get("verdict", "")

    def runs(self) -> dict[str, ModelRun]:
        """The models that trained, QELM first."""
        return {name: run for name, run in (("qelm", self.qelm), ("twin", self.twin), ("matched", self.matched))
                if run is not None}
