"""The classical baselines of the Quixer paper, at its settings: a causal Transformer encoder, an LSTM and an
FNet, each mapping a window of token ids ``(W, T)`` to the logits of the token after it ``(W, V)``.

They follow the reference code layer for layer (``torch.nn.TransformerEncoderLayer`` with a 4x feed-forward,
sinusoidal positions with dropout; a stacked ``torch.nn.LSTM``; FNet's 2-D Fourier mixing with post-norm
residuals), so their rows of the table are the published models, run by qelm's protocol.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn

__all__ = ["PositionalEncoding", "TransformerLM", "LSTMLM", "FNetLM"]


class PositionalEncoding(nn.Module):
    """Sinusoidal positions added to the embeddings, then dropout."""

    pe: torch.Tensor

    def __init__(self, d_model: int, dropout: float, max_len: int = 5000) -> None:
        super().__init__()
        self.dropout = nn.Dropout(dropout)
        position = torch.arange(max_len).unsqueeze(1)
        div = torch.exp(torch.arange(0, d_model, 2) * (-math.log(10000.0) / d_model))
        pe = torch.zeros(1, max_len, d_model)
        pe[0, :, 0::2] = torch.sin(position * div)
        pe[0, :, 1::2] = torch.cos(position * div[: d_model // 2])
        self.register_buffer("pe", pe, persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout(x + self.pe[:, : x.shape[1]])


class TransformerLM(nn.Module):
    """Embedding, positions, ``n_layers`` causal encoder layers (``n_heads`` heads, feed-forward ``4 d``),
    a linear map of the last position to the vocabulary."""

    def __init__(self, vocab_size: int, d_model: int = 96, n_heads: int = 1, n_layers: int = 1,
                 dropout: float = 0.1) -> None:
        super().__init__()
        self.embedding = nn.Embedding(vocab_size, d_model)
        self.positions = PositionalEncoding(d_model, dropout)
        layer = nn.TransformerEncoderLayer(d_model, n_heads, 4 * d_model, dropout, batch_first=True)
        self.encoder = nn.TransformerEncoder(layer, n_layers, enable_nested_tensor=False)
        self.project = nn.Linear(d_model, vocab_size)

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        x = self.positions(self.embedding(idx))
        mask = nn.Transformer.generate_square_subsequent_mask(x.shape[1], device=x.device, dtype=x.dtype)
        return self.project(self.encoder(x, mask=mask, is_causal=True)[:, -1])


class LSTMLM(nn.Module):
    """Embedding, an ``n_layers`` LSTM of width ``d_model`` (dropout between layers), the last output projected."""

    def __init__(self, vocab_size: int, d_model: int = 96, n_layers: int = 2, dropout: float = 0.3) -> None:
        super().__init__()
        self.embedding = nn.Embedding(vocab_size, d_model)
        self.rnn = nn.LSTM(d_model, d_model, n_layers, dropout=dropout, batch_first=True)
        self.project = nn.Linear(d_model, vocab_size)

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        out, _ = self.rnn(self.embedding(idx))
        return self.project(out[:, -1])


class FNetLM(nn.Module):
    """Embedding, positions, ``n_layers`` of ``LayerNorm(Re FFT2(x) + x)`` then ``LayerNorm(FF(x) + x)``
    (feed-forward ``4 d``, dropout), the last position projected. The Fourier mixing sees the whole window,
    which is causal here because only the token after the window is predicted."""

    def __init__(self, vocab_size: int, d_model: int = 96, n_layers: int = 2, dropout: float = 0.1) -> None:
        super().__init__()
        self.embedding = nn.Embedding(vocab_size, d_model)
        self.positions = PositionalEncoding(d_model, dropout)
        drop = nn.Dropout(dropout)
        self.ffs = nn.ModuleList(nn.Sequential(drop, nn.Linear(d_model, 4 * d_model), nn.ReLU(), drop,
                                               nn.Linear(4 * d_model, d_model)) for _ in range(n_layers))
        self.norms1 = nn.ModuleList(nn.LayerNorm(d_model) for _ in range(n_layers))
        self.norms2 = nn.ModuleList(nn.LayerNorm(d_model) for _ in range(n_layers))
        self.project = nn.Linear(d_model, vocab_size)

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        x = self.positions(self.embedding(idx))
        for ff, n1, n2 in zip(self.ffs, self.norms1, self.norms2):
            x = n1(torch.fft.fft2(x).real + x)
            x = n2(ff(x) + x)
        return self.project(x[:, -1])
