"""qelm: build, train and honestly measure tiny quantum-enhanced language models."""

from . import evaluate, train
from .backends import available_backends, get_backend
from .circuits import CIRCUITS, Circuit, build_circuit
from .checkpoint import load_checkpoint, save_checkpoint
from .compare import compare
from .config import QELMConfig
from .evaluate import generate_text
from .layers import QuantumAttentionHead, QuantumEmbedding, QuantumFeedForward, QuantumMultiHeadAttention
from .model import QELM, ClassicalLM
from .train import TrainResult, TrainSettings

__version__ = "0.1.0"

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
    "compare",
    "train",
    "TrainSettings",
    "TrainResult",
    "evaluate",
    "generate_text",
    "save_checkpoint",
    "load_checkpoint",
]
