"""qelm: build, train and honestly measure tiny quantum-enhanced language models.

The public API is the names below. The verbs live in their modules: ``from qelm.train import train``,
``from qelm.evaluate import evaluate``, ``from qelm.compare import compare``.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from .version import DISTRIBUTION, __version__

#: where each public name lives: imported on first use (``qelm.QELM``), so ``import qelm`` and the command
#: line's ``--help`` load neither torch nor PennyLane
_HOMES = {
    "BackendSpec": "backends", "BackendUnavailable": "backends", "available_backends": "backends", "get_backend": "backends",
    "Checkpoint": "checkpoint", "load_checkpoint": "checkpoint", "save_checkpoint": "checkpoint",
    "CIRCUITS": "circuits", "Circuit": "circuits", "build_circuit": "circuits",
    "QELMConfig": "config",
    "TextDataset": "data",
    "generate_text": "evaluate",
    "QuantumAttentionHead": "layers", "QuantumEmbedding": "layers", "QuantumFeedForward": "layers",
    "QuantumMultiHeadAttention": "layers",
    "QELM": "model", "ClassicalLM": "model",
    "TrainOverrides": "train", "TrainResult": "train", "TrainSettings": "train",
}

if TYPE_CHECKING:  # what the names are, for type checkers and editors
    from .backends import BackendSpec, BackendUnavailable, available_backends, get_backend
    from .checkpoint import Checkpoint, load_checkpoint, save_checkpoint
    from .circuits import CIRCUITS, Circuit, build_circuit
    from .config import QELMConfig
    from .data import TextDataset
    from .evaluate import generate_text
    from .layers import QuantumAttentionHead, QuantumEmbedding, QuantumFeedForward, QuantumMultiHeadAttention
    from .model import QELM, ClassicalLM
    from .train import TrainOverrides, TrainResult, TrainSettings


def __getattr__(name: str) -> Any:
    """A public name, imported from its module the first time it is asked for (PEP 562)."""
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module 'qelm' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{home}"), name)
    globals()[name] = value  # the next lookup is a plain attribute
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))


__all__ = [
    "QELMConfig",
    "QELM",
    "ClassicalLM",
    "QuantumEmbedding",
    "QuantumAttentionHead",
    "QuantumMultiHeadAttention",
    "QuantumFeedForward",
    "Circuit",
    "CIRCUITS",
    "build_circuit",
    "get_backend",
    "available_backends",
    "BackendUnavailable",
    "BackendSpec",
    "TrainSettings",
    "TrainOverrides",
    "TrainResult",
    "generate_text",
    "TextDataset",
    "Checkpoint",
    "save_checkpoint",
    "load_checkpoint",
    "__version__",
    "DISTRIBUTION",
]
