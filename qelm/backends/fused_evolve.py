"""``qelm.fused``'s evolve: a circuit applied to *given* states, one angle vector per state.

Quixer-style layers (a linear combination of token unitaries, then a polynomial of it) need ``U(theta_n)
psi_n`` for states that are not ``|0...0>`` and angles that all differ per state: nothing is shared by the
batch, so the plan/block machinery of :mod:`.fused_plan` has nothing to fuse. What is left is the gate
sequence itself, and every gate qelm's circuits use acts on a state as

    ``y = a * x + b * F(x)``

with ``F`` the flip of one wire's bit (a view and a ``flip``), and ``a``, ``b`` per-sample coefficients
times constant per-amplitude masks (the control bit of a controlled rotation, the sign pattern of RY).
So a gate is a handful of pointwise operations on real ``(N, 2**n)`` tensors of real and imaginary
parts: no gathers, no complex dtypes, nothing ``torch.compile`` cannot fuse (inductor turns a chain of
such gates into a few kernels; eager torch runs them as they are). Autograd differentiates it.

No library applies a per-sample circuit to per-sample states this way (PennyLane broadcasts one
``StatePrep`` and simulates gate by gate through complex einsums), which is why this is written here.
Wire 0 is the most significant bit of a basis index (PennyLane's convention).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from .fused_plan import UnsupportedGate
from .gates import CONTROLLED_ROTATIONS, gate_list

__all__ = ["EvolvePlan", "evolve_plan", "evolve_pairs", "EVOLVE_GATES"]

#: the gates the evolve engine applies
EVOLVE_GATES = frozenset({"RX", "RY", "RZ"}) | CONTROLLED_ROTATIONS | frozenset({"PauliX", "CNOT", "CZ", "Hadamard"})


@dataclass(frozen=True)
class EvolvePlan:
    """A circuit as ``(name, wires, angle column or None)`` triples, read once per circuit structure."""

    n_wires: int
    gates: tuple[tuple[str, tuple[int, ...], int | None], ...]


def evolve_plan(circuit) -> EvolvePlan:
    """Read ``circuit``'s gate list (controlled rotations kept) and check every gate is one this engine
    applies; constant-angle gates are refused (no built-in circuit has one here)."""
    gates = []
    for g in gate_list(circuit, controlled=True):
        if g.name not in EVOLVE_GATES or (g.angle is None and g.value is not None):
            raise UnsupportedGate(f"backend 'qelm.fused' cannot evolve states through gate {g.name} of circuit "
                                  f"{circuit.name!r}: use backend 'default.qubit' for it")
        gates.append((g.name, g.wires, g.angle))
    return EvolvePlan(circuit.n_wires, tuple(gates))


def _masks(n: int, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """``(n, 2**n)``: row ``w`` is the bit of wire ``w`` (0 or 1) in each basis index (a few tiny kernels per call;
    built in the call rather than cached, so ``torch.compile`` folds it into constants)."""
    index = torch.arange(2**n, device=device)
    return torch.stack([((index >> (n - 1 - w)) & 1) for w in range(n)]).to(dtype)


def _flip(t: torch.Tensor, wire: int, n: int) -> torch.Tensor:
    """``t`` with the bit of ``wire`` flipped in every basis index: ``t[..., i ^ bit(wire)]``."""
    lead = t.shape[:-1]
    return t.reshape(lead + (2**wire, 2, 2 ** (n - 1 - wire))).flip(-2).reshape(lead + (2**n,))


def evolve_pairs(plan: EvolvePlan, angles: torch.Tensor, re: torch.Tensor, im: torch.Tensor):
    """Apply the planned circuit to states given as real and imaginary parts ``re, im`` ``(N, 2**n)``, with
    angle vectors ``angles`` ``(N, n_angles)`` (broadcastable over N). Returns ``(re, im)``."""
    n = plan.n_wires
    bits = _masks(n, re.device, re.dtype)
    half = 0.5 * angles.to(re.dtype)
    cos, sin = torch.cos(half), torch.sin(half)
    for name, wires, col in plan.gates:
        if col is not None:
            c, s = cos[..., col : col + 1], sin[..., col : col + 1]
        w = wires[-1]  # the target
        if name == "RY":  # [[c, -s], [s, c]]: y = c x + s (2 bit - 1) F x
            sgn = 2 * bits[w] - 1
            re, im = c * re + (s * sgn) * _flip(re, w, n), c * im + (s * sgn) * _flip(im, w, n)
        elif name == "RX":  # c x - i s F x
            re, im = c * re + s * _flip(im, w, n), c * im - s * _flip(re, w, n)
        elif name == "RZ":  # (c - i s z) x, z = 1 - 2 bit
            sz = s * (1 - 2 * bits[w])
            re, im = c * re + sz * im, c * im - sz * re
        elif name in CONTROLLED_ROTATIONS:  # x + m ((R - 1) x) on the control's 1-half
            m = bits[wires[0]]
            cm, sm = (c - 1) * m, s * m
            if name == "CRX":
                re, im = re + cm * re + sm * _flip(im, w, n), im + cm * im - sm * _flip(re, w, n)
            elif name == "CRY":
                sm = sm * (2 * bits[w] - 1)
                re, im = re + cm * re + sm * _flip(re, w, n), im + cm * im + sm * _flip(im, w, n)
            else:  # CRZ
                sm = sm * (1 - 2 * bits[w])
                re, im = re + cm * re + sm * im, im + cm * im - sm * re
        elif name == "PauliX":
            re, im = _flip(re, w, n), _flip(im, w, n)
        elif name == "CNOT":
            m = bits[wires[0]]
            re, im = re + m * (_flip(re, w, n) - re), im + m * (_flip(im, w, n) - im)
        elif name == "CZ":
            sign = 1 - 2 * bits[wires[0]] * bits[w]
            re, im = sign * re, sign * im
        else:  # Hadamard: (z x + F x) / sqrt 2
            z = (1 - 2 * bits[w]) / math.sqrt(2)
            re, im = z * re + _flip(re, w, n) / math.sqrt(2), z * im + _flip(im, w, n) / math.sqrt(2)
    return re, im
