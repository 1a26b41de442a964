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
such gates into a few kernels; eager torch runs them as they are).

Backward is the adjoint method (:class:`_Adjoint`): nothing is kept per gate, so a Quixer step at 1,024
windows fits in a few states per sample rather than several hundred (autograd through every gate needed over
20 GB on the CPU). No library applies a per-sample circuit to per-sample states this way (PennyLane broadcasts one
``StatePrep`` and simulates gate by gate through complex einsums), which is why this is written here.
Wire 0 is the most significant bit of a basis index (PennyLane's convention).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from .fused_plan import UnsupportedGate
from .gates import CONTROLLED_ROTATIONS, gate_list

__all__ = ["EvolvePlan", "evolve_plan", "evolve_pairs", "EVOLVE_GATES", "bit_masks", "flip_wire"]

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


def bit_masks(n: int, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """``(n, 2**n)``: row ``w`` is the bit of wire ``w`` (0 or 1) in each basis index (a few tiny kernels per call;
    built in the call rather than cached, so ``torch.compile`` folds it into constants)."""
    index = torch.arange(2**n, device=device)
    return torch.stack([((index >> (n - 1 - w)) & 1) for w in range(n)]).to(dtype)


def flip_wire(t: torch.Tensor, wire: int, n: int) -> torch.Tensor:
    """``t`` with the bit of ``wire`` flipped in every basis index: ``t[..., i ^ bit(wire)]``."""
    lead = t.shape[:-1]
    return t.reshape(lead + (2**wire, 2, 2 ** (n - 1 - wire))).flip(-2).reshape(lead + (2**n,))


def _rotate(kind: str, w: int, c, s, re, im, bits, n):
    """The uncontrolled rotation ``kind`` ("X", "Y", "Z") of wire ``w`` with cos/sin of the half angle ``c, s``.
    Linear in ``(c, s)``: with ``(-s/2, c/2)`` in their place it gives the derivative by the angle."""
    if kind == "Y":  # [[c, -s], [s, c]]: y = c x + s (2 bit - 1) F x
        sgn = s * (2 * bits[w] - 1)
        return c * re + sgn * flip_wire(re, w, n), c * im + sgn * flip_wire(im, w, n)
    if kind == "X":  # c x - i s F x
        return c * re + s * flip_wire(im, w, n), c * im - s * flip_wire(re, w, n)
    sz = s * (1 - 2 * bits[w])  # Z: (c - i s z) x, z = 1 - 2 bit
    return c * re + sz * im, c * im - sz * re


def _gate(name: str, wires, c, s, re, im, bits, n):
    """One gate on ``(re, im)``. Rotations take ``(c, -s)`` for their inverse, which is also their transpose
    (the real form of a unitary is orthogonal); the fixed gates here are their own inverse and transpose."""
    w = wires[-1]  # the target
    if name in ("RX", "RY", "RZ"):
        return _rotate(name[-1], w, c, s, re, im, bits, n)
    if name in CONTROLLED_ROTATIONS:  # x + m (R x - x): R on the control's 1-half
        m = bits[wires[0]]
        rr, ri = _rotate(name[-1], w, c, s, re, im, bits, n)
        return re + m * (rr - re), im + m * (ri - im)
    if name == "PauliX":
        return flip_wire(re, w, n), flip_wire(im, w, n)
    if name == "CNOT":
        m = bits[wires[0]]
        return re + m * (flip_wire(re, w, n) - re), im + m * (flip_wire(im, w, n) - im)
    if name == "CZ":
        sign = 1 - 2 * bits[wires[0]] * bits[w]
        return sign * re, sign * im
    z = (1 - 2 * bits[w]) / math.sqrt(2)  # Hadamard: (z x + F x) / sqrt 2
    return z * re + flip_wire(re, w, n) / math.sqrt(2), z * im + flip_wire(im, w, n) / math.sqrt(2)


def _derivative(name: str, wires, c, s, re, im, bits, n):
    """``dG/dtheta x`` of a rotation gate (controlled: on the control's 1-half only)."""
    dr, di = _rotate(name[-1], wires[-1], -0.5 * s, 0.5 * c, re, im, bits, n)
    if name in CONTROLLED_ROTATIONS:
        m = bits[wires[0]]
        return m * dr, m * di
    return dr, di


def _run(plan: EvolvePlan, cos, sin, re, im, bits, reverse: bool = False, sign: int = 1):
    gates = reversed(plan.gates) if reverse else plan.gates
    for name, wires, col in gates:
        c, s = (cos[..., col : col + 1], sign * sin[..., col : col + 1]) if col is not None else (None, None)
        re, im = _gate(name, wires, c, s, re, im, bits, plan.n_wires)
    return re, im


class _Adjoint(torch.autograd.Function):
    """Adjoint differentiation (Jones & Gacon 2020) in torch: forward keeps only its output; backward walks the
    gates in reverse, undoing each on the state, taking ``<g, dG/dtheta x>`` for its angle and moving the
    cotangent back. A few states of memory per sample instead of several per gate."""

    @staticmethod
    def forward(ctx, plan, angles, re, im):
        half = 0.5 * angles
        bits = bit_masks(plan.n_wires, re.device, re.dtype)
        out = _run(plan, torch.cos(half), torch.sin(half), re, im, bits)
        ctx.plan = plan
        ctx.save_for_backward(angles, *out)
        return out

    @staticmethod
    def backward(ctx, g_re, g_im):
        angles, re, im = ctx.saved_tensors
        plan, n = ctx.plan, ctx.plan.n_wires
        bits = bit_masks(n, re.device, re.dtype)
        half = 0.5 * angles
        cos, sin = torch.cos(half), torch.sin(half)
        g_re = torch.zeros_like(re) if g_re is None else g_re
        g_im = torch.zeros_like(im) if g_im is None else g_im
        grads: list = [None] * angles.shape[-1]
        for name, wires, col in reversed(plan.gates):
            if col is None:  # a fixed gate: its own inverse and transpose
                re, im = _gate(name, wires, None, None, re, im, bits, n)
                g_re, g_im = _gate(name, wires, None, None, g_re, g_im, bits, n)
                continue
            c, s = cos[..., col : col + 1], sin[..., col : col + 1]
            re, im = _gate(name, wires, c, -s, re, im, bits, n)  # the state before this gate
            dr, di = _derivative(name, wires, c, s, re, im, bits, n)
            grads[col] = (g_re * dr + g_im * di).sum(-1)
            g_re, g_im = _gate(name, wires, c, -s, g_re, g_im, bits, n)
        zero = torch.zeros(angles.shape[:-1], dtype=angles.dtype, device=angles.device)
        ga = torch.stack([zero if g is None else g for g in grads], dim=-1)
        return None, ga, g_re, g_im


def evolve_pairs(plan: EvolvePlan, angles: torch.Tensor, re: torch.Tensor, im: torch.Tensor):
    """Apply the planned circuit to states given as real and imaginary parts ``re, im`` ``(N, 2**n)``, with
    angle vectors ``angles`` ``(N, n_angles)`` (broadcastable over N). Returns ``(re, im)``. Differentiated by
    the adjoint method (:class:`_Adjoint`) when a gradient is wanted."""
    angles = angles.to(re.dtype).expand(re.shape[0], -1)
    if torch.is_grad_enabled() and (angles.requires_grad or re.requires_grad or im.requires_grad):
        return _Adjoint.apply(plan, angles, re, im)
    half = 0.5 * angles
    return _run(plan, torch.cos(half), torch.sin(half), re, im, bit_masks(plan.n_wires, re.device, re.dtype))
