"""qelm: build, train and honestly measure tiny quantum-enhanced language models.

The public API is the names below. The verbs live in their modules: ``from qelm.train import train``,
``from qelm.evaluate import evaluate``, ``from qelm.compare import compare``.
"""

from .backends import BackendUnavailable, available_backends, get_backend
from .checkpoint import Checkpoint, load_checkpoint, save_checkpoint
from .circuits import CIRCUITS, Circuit, build_circuit
from .config import QELMConfig
from .data import TextDataset
from .evaluate import generate_text
from .layers import QuantumAttentionHead, QuantumEmbedding, QuantumFeedForward, QuantumMultiHeadAttention
from .model import QELM, ClassicalLM
from .train import TrainOverrides, TrainResult, TrainSettings
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
