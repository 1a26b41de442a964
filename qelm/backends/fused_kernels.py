"""The state kernels of :mod:`qelm.backends.fused`: what one gate, one block or one layer of data rotations
does to a whole batch of states, in real arithmetic, and the device copies of a plan's constants.

A state batch is ``t`` of shape ``(*S, Dc, M)``: weight sets first, then the amplitudes, then the M samples
of each set last. Samples innermost make every per-wire kernel a pass over contiguous runs of M numbers
and every block a wide GEMM ``(Dc', Dc) @ (Dc, M)``, the orientation BLAS runs fastest. ``Dc`` is ``D``
for real states and ``2D`` for interleaved complex ones (``cplx``), amplitude-major: index ``2d + part``.
"""

from __future__ import annotations

import numpy as np
import torch

from ..circuits import z_signs
from .fused_plan import GenPerm

__all__ = ["Tensors", "complexify", "genperm_apply", "rotate", "matrix_for", "apply_matrix", "RYLayer", "ry_layer"]


class Tensors:
    """Device copies of a plan's constant tensors, made once per (device, dtype) and reused."""

    def __init__(self, device: torch.device, real: torch.dtype, cplx: torch.dtype) -> None:
        self.device, self.real, self.cplx = device, real, cplx
        self._cache: dict = {}

    def get(self, key, make):
        if key not in self._cache:
            self._cache[key] = make()
        return self._cache[key]

    def perm(self, gp: GenPerm, interleaved: bool):
        """(index, sign or None) of ``gp`` acting on real (D) or interleaved (2D) states."""
        def make():
            if interleaved:
                p, s = gp.interleaved()
            else:
                p, s = gp.perm, gp.phase.real
            sign = None if np.all(s == 1) else torch.as_tensor(s, dtype=self.real, device=self.device)
            return torch.as_tensor(p, device=self.device), sign
        return self.get(("perm", id(gp), interleaved), make)

    def z(self, n: int, wires, interleaved: bool) -> torch.Tensor:
        """Signs of the Z strings ``wires`` on each basis state, ``(D or 2D, n_obs)``."""
        def make():
            z = z_signs(n, wires, torch.empty(0, dtype=self.real, device=self.device))
            return z.repeat_interleave(2, dim=0) if interleaved else z
        return self.get(("z", n, tuple(wires), interleaved), make)


def complexify(t: torch.Tensor) -> torch.Tensor:
    return torch.stack([t, torch.zeros_like(t)], dim=-2).flatten(-3, -2)


def genperm_apply(t: torch.Tensor, cplx: bool, gp: GenPerm, cache: Tensors) -> tuple[torch.Tensor, bool]:
    """``G psi`` for a fixed generalized permutation."""
    if gp.quarter_phases and (cplx or gp.real):
        index, sign = cache.perm(gp, cplx)
        g = t.index_select(-2, index)
        return (g if sign is None else g * sign.unsqueeze(-1)), cplx
    # general phases (T gates): through a complex view, samples moved first and back
    tt = (t if cplx else complexify(t)).movedim(-1, -2)  # (..., M, 2D)
    c = torch.view_as_complex(tt.unflatten(-1, (-1, 2)).contiguous())
    index = cache.get(("cperm", id(gp)), lambda: torch.as_tensor(gp.perm, device=cache.device))
    phase = cache.get(("cphase", id(gp)), lambda: torch.as_tensor(gp.phase, dtype=cache.cplx, device=cache.device))
    return torch.view_as_real(c.index_select(-1, index) * phase).flatten(-2).movedim(-1, -2), True


def rotate(t: torch.Tensor, cplx: bool, gp: GenPerm, c: torch.Tensor, s: torch.Tensor, cache: Tensors):
    """``exp(-i theta/2 P) psi = c psi + s (G psi)`` with ``G = -iP``; ``c, s`` broadcast over ``t``."""
    if not cplx and not gp.real:
        t, cplx = complexify(t), True
    g, cplx = genperm_apply(t, cplx, gp, cache)
    return torch.addcmul(t * c, g, s), cplx


def matrix_for(u: torch.Tensor, real_u: bool, cplx: bool) -> tuple[torch.Tensor, bool]:
    """``u`` (``(..., K, K)`` complex) as the real matrix ``A`` with ``t_out = A @ t`` on real (K) or
    interleaved (2K) amplitudes; returns ``(A, output is complex)``."""
    if real_u:
        a = u.real
        if cplx:  # the same real matrix acts on re and im: kron(U, I2) in interleaved order
            a = (a.unsqueeze(-1).unsqueeze(-3) * torch.eye(2, dtype=a.dtype, device=a.device)[:, None, :]).flatten(-4, -3).flatten(-2)
        return a, cplx
    if not cplx:  # rows (re_out, im_out), columns real inputs
        return torch.view_as_real(u).movedim(-1, -2).flatten(-3, -2), True
    # rows (re_out, im_out), columns (re_in, im_in): [[Ur, -Ui], [Ui, Ur]] per entry, interleaved
    ri = torch.view_as_real(u)  # (..., K, K, 2): Ur, Ui
    top = torch.stack([ri[..., 0], -ri[..., 1]], dim=-1)  # re_out row: (Ur, -Ui) per input
    bottom = torch.stack([ri[..., 1], ri[..., 0]], dim=-1)  # im_out row: (Ui, Ur)
    return torch.stack([top, bottom], dim=-3).flatten(-4, -3).flatten(-2), True


def apply_matrix(t: torch.Tensor, cplx: bool, u: torch.Tensor | None, real_u: bool, support: tuple[int, ...], n: int,
                  a: tuple[torch.Tensor, bool] | None = None):
    """Apply ``u`` (``(*S, K, K)`` or ``(K, K)``, on wires ``support``) to every state of ``t``: one GEMM.
    ``a``: ``matrix_for(u, real_u, cplx)`` when the caller has it already (``u`` may then be None)."""
    if a is None:
        assert u is not None, "apply_matrix needs u or its matrix a"
        a = matrix_for(u, real_u, cplx)
    mat, out_cplx = a
    k = len(support)
    if k == n:
        return mat @ t, out_cplx
    # the block's wires (and the re/im part) to the front of the amplitude axes, one GEMM, back
    lead, m = t.shape[:-2], t.shape[-1]
    c_in, c_out = (2 if cplx else 1), (2 if out_cplx else 1)
    base = len(lead)
    v = t.reshape(lead + (2,) * n + (c_in, m))
    front = [base + w for w in support] + [base + n]
    v = v.movedim(front, list(range(base, base + k + 1)))  # (*S, wires of the block, part, other wires, M)
    rest = v.shape[base + k + 1: -1]
    v = mat @ v.reshape(lead + (2**k * c_in, -1))
    v = v.reshape(lead + (2,) * k + (c_out,) + tuple(rest) + (m,))
    v = v.movedim(list(range(base, base + k + 1)), front)
    return v.reshape(lead + (2**n * c_out, m)), out_cplx


class RYLayer(torch.autograd.Function):
    """RY rotations of per-sample angles on distinct wires of states ``t`` ``(B, Dc, M)`` (RY is real, so
    it rotates the re and im parts of interleaved states alike). The hot kernel of every re-uploading
    circuit, written by hand because autograd would keep one state per wire for the backward pass.

    Forward: one butterfly per wire. Backward: the RYs of distinct wires commute and ``d RY(theta)/d theta =
    RY(theta) G / 2`` with ``G = -iY``, so every angle's gradient is ``<g, G_w psi_out> / 2``, read from the
    *output* alone; the states' gradient is ``R(-theta) g``.
    """

    @staticmethod
    def forward(ctx, t, half, wires, n):  # half: (B, k, M) half-angles, one row per wire in ``wires``
        c, s = torch.cos(half), torch.sin(half)
        out = _butterflies(t, c, s, wires)
        ctx.save_for_backward(out, c, s)
        ctx.wires = wires
        return out

    @staticmethod
    def backward(ctx, g):
        out, c, s = ctx.saved_tensors
        wires = ctx.wires
        B, M = g.shape[0], g.shape[-1]
        grad_half = None
        if ctx.needs_input_grad[1]:
            rows = []
            for w in wires:  # <g, G_w psi> with G = [[0, -1], [1, 0]] on wire w, per sample
                gv, pv = g.view(B, 2**w, 2, -1, M), out.view(B, 2**w, 2, -1, M)
                d = torch.addcmul(gv[:, :, 1] * pv[:, :, 0], gv[:, :, 0], pv[:, :, 1], value=-1)
                rows.append(d.sum((1, 2)))
            grad_half = torch.stack(rows, dim=1)
        grad_t = _butterflies(g, c, -s, wires, reverse=True) if ctx.needs_input_grad[0] else None
        return grad_t, grad_half, None, None


def _butterflies(t, c, s, wires, reverse=False):
    """Apply RY(2 half) = [[c, -s], [s, c]] on each wire of ``wires`` (rows of c, s in that order)."""
    B, M = t.shape[0], t.shape[-1]
    order = range(len(wires) - 1, -1, -1) if reverse else range(len(wires))
    for j in order:
        w = wires[j]
        v = t.view(B, 2**w, 2, -1, M)
        cj, sj = c[:, None, j:j + 1, :], s[:, None, j:j + 1, :]  # (B, 1, 1, M)
        p0, p1 = v[:, :, 0], v[:, :, 1]
        if torch.compiler.is_compiling():  # functional form: the compiler fuses it into one loop anyway
            t = torch.stack([p0 * cj - p1 * sj, p0 * sj + p1 * cj], dim=2).view(t.shape)
            continue
        new = torch.empty_like(v)  # eager: no temporaries, two passes per half
        torch.mul(p0, cj, out=new[:, :, 0])
        new[:, :, 0].addcmul_(p1, sj, value=-1)
        torch.mul(p0, sj, out=new[:, :, 1])
        new[:, :, 1].addcmul_(p1, cj)
        t = new.view(t.shape)
    return t


def ry_layer(ops) -> bool:
    """A data stage the RY kernel runs: only RY gates, each on its own wire."""
    wires = [o.wires[0] for o in ops]
    return all(o.name == "RY" for o in ops) and len(set(wires)) == len(wires)
