"""The models of the Penn Treebank table, by name, at the settings the Quixer paper trained them with, and the
published figures qelm's runs are compared with.

``build_window_model(name, vocab_size, ...)`` gives a module mapping ``(W, window)`` token ids to ``(W, V)``
logits of the next token, initialised as the reference code does, and :func:`published_settings` the
learning rate and dropout of that row. The quantum rows run on a qelm backend (``qelm.fused`` by default).
"""

from __future__ import annotations

import torch
import torch.nn as nn

from .baselines import FNetLM, LSTMLM, TransformerLM
from .backends import BackendSpec
from .config import QELMConfig
from .errors import ConfigError
from .model import QELM, ClassicalLM
from .quixer import Quixer, QuixerConfig, QuixerTwin, init_like_reference

__all__ = ["MODELS", "PUBLISHED", "build_window_model", "published_settings", "LastToken"]

#: name -> (default width, learning rate, dropout): the reference code's hyper-parameters
MODELS = {
    "quixer": (512, 2e-3, 0.1),
    "quixer-twin": (512, 2e-3, 0.1),
    "transformer": (96, 1e-3, 0.1),
    "lstm": (96, 2e-3, 0.3),
    "fnet": (96, 2e-3, 0.1),
    "qelm": (96, 2e-3, 0.1),
    "qelm-matched": (96, 2e-3, 0.1),
}

#: an independent 10-seed reproduction of the paper's experiment (test perplexity, mean and sd; parameters at
#: V = 9,924): the figures qelm's runs are set beside, keyed by (model, width or qubits)
PUBLISHED = {
    ("transformer", 96): (100.0, 0.3, 2.03e6),
    ("transformer", 128): (97.1, 0.4, 2.75e6),
    ("fnet", 96): (120.2, 0.6, 2.06e6),
    ("lstm", 96): (202.7, 7.5, 2.06e6),
    ("lstm", 128): (185.2, 4.8, 2.81e6),
    ("quixer", 6): (121.0, 2.0, 10.23e6),
}


def published_settings(name: str) -> tuple[int, float, float]:
    """``(width, lr, dropout)`` of model ``name``."""
    if name not in MODELS:
        raise ConfigError(f"unknown model {name!r}: valid models are {', '.join(MODELS)}")
    return MODELS[name]


class LastToken(nn.Module):
    """A qelm language model (``idx -> (logits (B, T, V), loss)``) read at the last position only."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        return self.model(idx)[0][:, -1]


def build_window_model(name: str, vocab_size: int, *, dim: int | None = None, window: int = 32, n_qubits: int = 6,
                       ansatz_layers: int = 4, degree: int = 3, dropout: float | None = None,
                       backend: str = "qelm.fused", backend_options: dict | None = None) -> nn.Module:
    """The model of the table named ``name`` (see :data:`MODELS`); ``dim`` and ``dropout`` default to the row's."""
    width, _, drop = published_settings(name)
    dim = dim or width
    dropout = drop if dropout is None else dropout
    backend_options = backend_options or {}
    model: nn.Module
    if name in ("quixer", "quixer-twin"):
        config = QuixerConfig(vocab_size=vocab_size, n_qubits=n_qubits, window=window, degree=degree,
                              ansatz_layers=ansatz_layers, d_embed=dim, dropout=dropout)
        model = Quixer(config, backend, **backend_options) if name == "quixer" else QuixerTwin(config)
    elif name == "transformer":
        model = TransformerLM(vocab_size, dim, n_heads=1, n_layers=1, dropout=dropout)
    elif name == "lstm":
        model = LSTMLM(vocab_size, dim, n_layers=2, dropout=dropout)
    elif name == "fnet":
        model = FNetLM(vocab_size, dim, n_layers=2, dropout=dropout)
    else:  # qelm's own QELM and its parameter-matched classical model, read at the last position
        qelm = QELM(QELMConfig(vocab_size=vocab_size, d_model=dim, n_heads=2, d_hidden=4 * dim, n_layers=1,
                               context_len=window, n_qubits=n_qubits), BackendSpec(backend, None, backend_options))
        return LastToken(qelm if name == "qelm" else ClassicalLM.matched_to(qelm))
    return init_like_reference(model)
