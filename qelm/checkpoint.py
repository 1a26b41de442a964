"""Checkpoints: a model, its tokenizer and (for resuming) its training state, saved as one folder and
loaded back. The folder format, its manifest and the commit protocol that makes a save one unit are
:mod:`qelm.model_files`; :mod:`qelm.model` builds the model from what it reads.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from .config import QELMConfig
from .errors import CheckpointError
from .model import QELM, load_model, model_kind
from .model_contents import read_state
from .model_files import BEST, TOKENIZER, TRAINING_STATE, WEIGHTS, snapshot, write_checkpoint
from .tokenizer import Tokenizer, load_tokenizer

__all__ = ["Checkpoint", "save_checkpoint", "load_checkpoint"]


def save_checkpoint(directory: str | os.PathLike, model: torch.nn.Module, tokenizer: Tokenizer, *,
                    training_state: dict[str, Any] | None = None, info: dict[str, Any] | None = None) -> Path:
    """Write ``model`` (a :class:`QELM` or :class:`ClassicalLM`), its config and ``tokenizer`` into
    ``directory`` (created if needed); with ``training_state`` (a dict holding at least ``step``) also
    ``training_state.pt``; ``info`` (JSON values) goes into the manifest. The save commits as one unit
    (:mod:`qelm.model_files`). Returns the folder.

    A model whose weights hold NaN or infinity is refused (``ValueError`` naming the tensors): a diverged
    model is never saved over a good checkpoint.

    Args:
        directory: the checkpoint folder (new, empty, or a checkpoint folder already).
        model: the model to save (a ``DistributedDataParallel`` wrapper saves its module).
        tokenizer: the tokenizer its token ids come from.
        training_state: optimizer and sampler state to resume from (at least ``step``), or None.
        info: JSON values recorded in the manifest.

    Returns:
        The folder.

    Examples:
        >>> import tempfile
        >>> from qelm import QELM, QELMConfig, TextDataset, load_checkpoint, save_checkpoint
        >>> data = TextDataset.from_text("the cat sat on the mat. " * 20)
        >>> model = QELM(QELMConfig(vocab_size=data.vocab_size, d_model=8, context_len=8, n_qubits=2, circuit_layers=1))
        >>> folder = save_checkpoint(tempfile.mkdtemp() + "/model", model, data.tokenizer)
        >>> loaded = load_checkpoint(folder)
        >>> loaded.kind, loaded.config == model.config, loaded.tokenizer.vocab_size
        ('qelm', True, 12)
    """
    model = getattr(model, "module", model)  # a DistributedDataParallel wrapper saves its module
    return write_checkpoint(directory, model_kind(model), model, tokenizer, training_state=training_state, info=info)


@dataclass
class Checkpoint:
    """A loaded checkpoint folder, as :func:`load_checkpoint` returns it. ``model`` is in eval mode.

    Examples:
        >>> import tempfile
        >>> from qelm import ClassicalLM, QELMConfig, TextDataset, load_checkpoint, save_checkpoint
        >>> data = TextDataset.from_text("the cat sat on the mat. " * 20)
        >>> twin = ClassicalLM(QELMConfig(vocab_size=data.vocab_size, d_model=8, context_len=8))
        >>> loaded = load_checkpoint(save_checkpoint(tempfile.mkdtemp() + "/twin", twin, data.tokenizer))
        >>> loaded.kind, type(loaded.model).__name__, loaded.model.training
        ('classical', 'ClassicalLM', False)
    """

    model: QELM
    """The model: a :class:`QELM`, or a :class:`ClassicalLM` when ``kind`` is ``"classical"``."""
    config: QELMConfig
    """The model's config: its architecture (how it runs, as loaded, is ``model.spec``)."""
    tokenizer: Tokenizer
    """The tokenizer saved with the model."""
    training_state: dict[str, Any] | None
    """The optimizer and sampler state saved for resuming, or None."""
    path: Path
    """The folder it was loaded from."""
    kind: str = "qelm"
    """``"qelm"`` or ``"classical"``."""
    step: int | None = None
    """Optimizer steps the weights took, where the manifest records them."""
    info: dict[str, Any] = field(default_factory=dict)
    """The manifest's info table (for a run's best: its step and validation loss)."""

    def describe(self) -> str:
        """Which checkpoint this is, in words: ``runs/x/qelm (qelm, step 800)``, or for a run's best
        ``runs/x/qelm/best (qelm, best by validation: step 600, val loss 2.1234)``."""
        if self.info.get("role") == "best":
            which = f"best by validation: step {self.info.get('step')}, val loss {self.info.get('val_loss', float('nan')):.4f}"
        elif self.step is not None:
            which = f"step {self.step}" + (", the last of its run" if (self.path / BEST).is_dir() else "")
        else:
            which = "no step recorded"
        return f"{self.path} ({self.kind}, {which})"


def load_checkpoint(directory: str | os.PathLike, *, backend: str | None = None, **backend_options: Any) -> Checkpoint:
    """Load the newest complete checkpoint in a folder written by :func:`save_checkpoint`. ``backend``
    (and options such as ``shots``) run the circuits elsewhere than the saved ``[runtime]`` says; the weights
    are the same.

    Raises ``FileNotFoundError`` when a file is missing, ``ValueError`` naming the file and what is wrong
    when one is corrupt, edited after the save, or the weights do not match the config, and
    ``BackendUnavailable`` when the backend cannot run here.

    Args:
        directory: a folder written by :func:`save_checkpoint` (or by ``save_pretrained``, with a tokenizer).
        backend: the backend to run the circuits on, or None for the saved config's.
        **backend_options: the backend's options (``shots``, ``seed``, ...).

    Returns:
        Checkpoint: the model (in eval mode), its config, tokenizer, training state and where it came from.

    Examples:
        >>> import tempfile
        >>> from qelm import QELM, QELMConfig, TextDataset, load_checkpoint, save_checkpoint
        >>> data = TextDataset.from_text("the cat sat on the mat. " * 20)
        >>> model = QELM(QELMConfig(vocab_size=data.vocab_size, d_model=8, context_len=8, n_qubits=2, circuit_layers=1))
        >>> folder = save_checkpoint(tempfile.mkdtemp() + "/model", model, data.tokenizer)
        >>> load_checkpoint(folder, backend="default.qubit", shots=100).model.backend
        <qelm backend default.qubit (100 shots)>
    """
    folder = Path(directory)
    with snapshot(folder) as (paths, manifest):  # one consistent save, even while a run saves into the folder
        return _load_checkpoint(folder, paths, manifest, backend, backend_options)


def _load_checkpoint(folder: Path, paths: dict[str, Path], manifest: dict[str, Any] | None, backend: str | None,
                     backend_options: dict[str, Any]) -> Checkpoint:
    if TOKENIZER not in paths:
        raise FileNotFoundError(f"checkpoint {str(folder)!r} has no {TOKENIZER}: save the tokenizer beside the model "
                                f"(tokenizer.save_pretrained(folder)), or load the model alone with "
                                f"QELM.from_pretrained(folder)")
    try:
        tokenizer = load_tokenizer(paths[TOKENIZER])
    except ValueError as e:  # name the checkpoint's file, not the private copy it was parsed from
        raise type(e)(str(e).replace(str(paths[TOKENIZER]), str(folder / TOKENIZER))) from None
    kind, model, metadata = load_model(folder, paths, backend, backend_options, vocab_size=tokenizer.vocab_size)

    state = None
    if TRAINING_STATE in paths:
        state = read_state(folder, paths[TRAINING_STATE])
        saved_step = metadata.get("step")
        if saved_step is not None and int(saved_step) != int(state["step"]):
            raise CheckpointError(f"checkpoint {str(folder)!r} is inconsistent: {WEIGHTS} is from step {saved_step} but "
                             f"{TRAINING_STATE} from step {state['step']} (a save was interrupted); resume from "
                             f"another copy or start again")
    manifest = manifest or {}
    recorded = manifest.get("info")
    info: dict[str, Any] = recorded if isinstance(recorded, dict) else {}
    step = manifest.get("step") if isinstance(manifest.get("step"), int) else info.get("step")
    return Checkpoint(model=model, config=model.config, tokenizer=tokenizer, training_state=state, path=folder,
                      kind=kind, step=step, info=info)
