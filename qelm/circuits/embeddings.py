"""The embedding circuits: a token's learned inputs become a state by angle (``angle``), Bloch-sphere
(``polar``) or amplitude (``amplitude``) encoding, then variational layers."""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import pennylane as qml
import torch

from .base import Circuit, _apply_entangler

__all__ = ["AngleEmbeddingCircuit", "PolarEmbeddingCircuit", "AmplitudeEmbeddingCircuit", "amplitude_tree_angles"]


@dataclass(frozen=True)
class AngleEmbeddingCircuit(Circuit):
    """Token embedding: one RY angle per qubit (``qml.AngleEmbedding``), then ``n_layers`` of
    ``qml.StronglyEntanglingLayers``; outputs <Z> on every qubit.

    ``|psi(x)> = U(w) prod_i RY(x_i)|0>``, ``n_inputs = n_qubits``.
    """

    name = "angle"
    kind = "embedding"

    @property
    def n_inputs(self) -> int:
        return self.n_qubits

    def apply(self, angles: torch.Tensor) -> None:
        n = self.n_qubits
        qml.AngleEmbedding(angles[..., :n], wires=self.wires, rotation="Y")
        _apply_entangler(angles[..., n:], self.wires)


@dataclass(frozen=True)
class PolarEmbeddingCircuit(Circuit):
    """Token embedding as a point on each qubit's Bloch sphere: a radius ``r`` sets the polar angle
    (``theta = pi * sigmoid(r)``) and an angle ``phi`` plus the token's position times a per-qubit
    frequency sets the azimuth, so position lives in the state itself. Then ``n_layers`` of
    ``StronglyEntanglingLayers``; outputs <Z> on every qubit.

    Data inputs per instance: ``[r_0..r_{n-1}, phi_0+pos*f_0 .. phi_{n-1}+pos*f_{n-1}]`` (``2 n``).
    """

    name = "polar"
    kind = "embedding"

    @property
    def n_inputs(self) -> int:
        return 2 * self.n_qubits

    def frequencies(self) -> torch.Tensor:
        """Per-qubit position frequencies, geometric as in rotary embeddings: ``f_i = 10000^(-i/n)``."""
        return 10000.0 ** (-torch.arange(self.n_qubits, dtype=torch.float64) / self.n_qubits)

    def polar_inputs(self, r: torch.Tensor, phi: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        """``r, phi``: ``(..., n_qubits)``; ``positions``: broadcastable to ``r.shape[:-1]``."""
        f = self.frequencies().to(device=phi.device, dtype=phi.dtype)
        return torch.cat([r, phi + positions.to(phi.dtype).unsqueeze(-1) * f], dim=-1)

    def encode(self, inputs: torch.Tensor) -> torch.Tensor:
        n = self.n_qubits
        return torch.cat([math.pi * torch.sigmoid(inputs[..., :n]), inputs[..., n:]], dim=-1)

    def apply(self, angles: torch.Tensor) -> None:
        n = self.n_qubits
        qml.AngleEmbedding(angles[..., :n], wires=self.wires, rotation="Y")
        qml.AngleEmbedding(angles[..., n : 2 * n], wires=self.wires, rotation="Z")
        _apply_entangler(angles[..., 2 * n :], self.wires)


@lru_cache(maxsize=None)
def _gray_matrix(k: int) -> np.ndarray:
    """Mottonen et al. (2004) M matrix mapping uniformly-controlled angles alpha to the RY angles theta
    of its CNOT/RY decomposition: ``theta = M @ alpha / 2**k``. Entry (i, j) = (-1)^(b_j . g_i)."""
    size = 2**k
    m = np.empty((size, size))
    for i in range(size):
        g = i ^ (i >> 1)
        for j in range(size):
            m[i, j] = (-1) ** bin(j & g).count("1")
    return m / size


@lru_cache(maxsize=256)
def _gray_tensor(k: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """:func:`_gray_matrix` as a read-only tensor, built once per (k, dtype, device): a call never copies from
    the host, so it can be captured in a CUDA graph (as :func:`z_signs`)."""
    return torch.as_tensor(_gray_matrix(k), dtype=dtype, device=device)


def _gray_controls(k: int) -> list[int]:
    """Bit (from the least significant) that flips between consecutive Gray codes, cyclically."""
    size = 2**k
    return [int(math.log2((i ^ (i >> 1)) ^ (((i + 1) % size) ^ (((i + 1) % size) >> 1)))) for i in range(size)]


def amplitude_tree_angles(v: torch.Tensor, eps: float = 1e-12) -> list[torch.Tensor]:
    """Angles of the binary tree of RY rotations that prepares the real state ``v/|v|`` (``v``:
    ``(..., 2**n)``). Level ``k`` (target wire ``k``, controls ``0..k-1``) gets ``2**k`` angles, one per
    value of the controls. Inner levels split the norm, the last level uses signed ``atan2`` so the
    amplitudes keep their signs: cos/sin of ``theta/2`` cover the full circle."""
    n = int(round(math.log2(v.shape[-1])))
    levels = []
    # norms[k] has shape (..., 2**k): the norm of every subtree at depth k
    leaves = v
    for k in range(n - 1, -1, -1):
        pairs = leaves.reshape(leaves.shape[:-1] + (2**k, 2))
        a, b = pairs[..., 0], pairs[..., 1]
        if k == n - 1:
            levels.append(2.0 * torch.atan2(b, a + eps))
        else:
            levels.append(2.0 * torch.atan2(b, a))
        leaves = torch.sqrt(a * a + b * b + eps)
    return levels[::-1]


@dataclass(frozen=True)
class AmplitudeEmbeddingCircuit(Circuit):
    """Token embedding by amplitude encoding: a learned real vector ``v`` of length ``2**n_qubits``
    becomes the state ``v/|v|`` through a tree of uniformly-controlled RY rotations (Mottonen et al.,
    decomposed into RY and CNOT so that every angle is one gate), then ``n_layers`` of
    ``StronglyEntanglingLayers``; outputs <Z> on every qubit.

    Data inputs per instance: the ``2**n_qubits`` amplitudes, turned into ``2**n_qubits - 1`` RY angles by
    :meth:`encode` (torch, differentiable).
    """

    name = "amplitude"
    kind = "embedding"

    @property
    def n_inputs(self) -> int:
        return 2**self.n_qubits

    @property
    def n_angles(self) -> int:
        return 2**self.n_qubits - 1 + self.n_weights

    def encode(self, inputs: torch.Tensor) -> torch.Tensor:
        thetas = []
        for k, alpha in enumerate(amplitude_tree_angles(inputs)):
            thetas.append(alpha @ _gray_tensor(k, alpha.dtype, alpha.device).T)
        return torch.cat(thetas, dim=-1)

    def apply(self, angles: torch.Tensor) -> None:
        i = 0
        for k in range(self.n_qubits):
            # controls as seen by the Gray code: bit b (least significant first) is wire k-1-b
            controls = list(range(k - 1, -1, -1))
            flips = _gray_controls(k) if k else [None]
            for flip in flips:
                qml.RY(angles[..., i], wires=k)
                i += 1
                if flip is not None:
                    qml.CNOT(wires=[controls[flip], k])
        _apply_entangler(angles[..., i:], self.wires)
