"""qelm: build, train and honestly measure tiny quantum-enhanced language models.

``qelm.train``, ``qelm.compare`` and ``qelm.evaluate`` are modules that can be called as their function
of the same name: ``qelm.train(config, data, out=...)`` trains, ``import qelm.train`` gives the module.
"""

from . import compare, evaluate, train
from .backends import BackendUnavailable, available_backends, get_backend
from .checkpoint import Checkpoint, load_checkpoint, save_checkpoint
from .circuits import CIRCUITS, Circuit, build_circuit
from .config import QELMConfig
from .data import TextDataset
from .evaluate import generate_text
from .layers import QuantumAttentionHead, QuantumEmbedding, QuantumFeedForward, QuantumMultiHeadAttention
from .model import QELM, ClassicalLM
from .train import TrainResult, TrainSettings
from .version import DISTRIBUTION, __version__


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
    "compare",
    "train",
    "TrainSettings",
    "TrainResult",
    "evaluate",
    "generate_text",
    "TextDataset",
    "Checkpoint",
    "save_checkpoint",
    "load_checkpoint",
]
