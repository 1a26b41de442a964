"""The block executor of :mod:`qelm.backends.fused`: runs a :class:`~qelm.backends.fused_blocks.BlockPlan` on
a batch and differentiates it by the adjoint method (Jones & Gacon 2020, arXiv:2009.02823).

States are complex ``(B, M, D)``: weight sets, samples, amplitudes (one axis per wire in the plan's order).
Forward applies the steps under ``no_grad`` and keeps only the output state. Backward walks the steps in
reverse with the cotangent ``lam``: a step ``psi_out = U psi_in`` is undone on both (``psi_in = U^H
psi_out``, ``lam_in = U^H lam_out``) and ``dL/dU = lam_out psi_in^H``, summed over the samples of each
weight set, is handed to autograd, which carries it through the small ``K x K`` construction of ``U`` to the
weight angles. A data rotation's angle gradient is read per sample from its output: ``d psi_out / d(theta/2)
= G psi_out``. So the whole call keeps about four states per sample (output, cotangent, and the two being
undone), not one per gate, plus the blocks' unitaries.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch.autograd.function import once_differentiable

from .fused_blocks import BlockPlan, Dense, Reorder, Rotation
from .fused_plan import genperm, local_matrix

__all__ = ["BlockExecutor", "STATES_KEPT"]

#: states per sample alive at the peak of a forward + backward call (measured: see tests/test_fused_wide.py)
STATES_KEPT = 7


# --- plan constants on a device -------------------------------------------------------------------------
def _embed(m: np.ndarray, local: tuple[int, ...], k: int) -> np.ndarray:
    """A gate's matrix on local wires ``local`` of a ``k``-wire block (wire 0 most significant), ``2**k`` square."""
    g = len(local)
    t = np.eye(2**k, dtype=complex).reshape((2,) * k + (2**k,))
    t = np.tensordot(m.reshape((2,) * (2 * g)), t, axes=(list(range(g, 2 * g)), list(local)))
    return np.moveaxis(t, list(range(g)), list(local)).reshape(2**k, 2**k)


def _program(block: Dense, device, cplx) -> list:
    """Instructions that build a block's unitary from the weight angles: runs of constant gates multiplied
    out on the host ("const"), and weight rotations ``c U + s G U`` ("rot", with ``G`` as a gather)."""
    k, at = block.k, {w: i for i, w in enumerate(block.wires)}
    prog, pending = [], None
    for op in block.ops:
        local = tuple(at[w] for w in op.wires)
        if op.source == "weight":
            if pending is not None:
                prog.append(("const", torch.as_tensor(pending, dtype=cplx, device=device)))
                pending = None
            gp = genperm(local_matrix(op.name, len(local)), local, k)
            phase = None if np.all(gp.phase == 1) else torch.as_tensor(gp.phase, dtype=cplx, device=device)[:, None]
            extra = op.name == "PhaseShift"  # e^{i theta/2} RZ
            prog.append(("rot", op.index, torch.as_tensor(gp.perm, device=device), phase, extra,
                         torch.as_tensor(gp.dense(), dtype=cplx, device=device)))
            continue
        if op.source == "const":
            m = math.cos(op.value / 2) * np.eye(2 ** len(local)) + math.sin(op.value / 2) * local_matrix(op.name, len(local))
            if op.name == "PhaseShift":
                m = m * np.exp(0.5j * op.value)
        else:
            m = local_matrix(op.name, len(local))
        full = _embed(m, local, k)
        pending = full if pending is None else full @ pending
    if pending is not None:
        prog.append(("const", torch.as_tensor(pending, dtype=cplx, device=device)))
    return prog


def _readout_tables(plan: BlockPlan, device, real):
    """The Z strings as ``Zh^T P Zl`` on ``P`` split into its first ``h`` axes and the rest: sign tables
    ``(2**h, ch)``, ``(2**l, cl)`` and, per string, its entry of the flattened ``(ch, cl)`` product."""
    n = plan.n_wires
    h = n // 2
    pos = {w: i for i, w in enumerate(plan.order)}
    masks_h, masks_l, index = {}, {}, []
    for s in plan.observables:
        mh = sum(1 << (h - 1 - pos[w]) for w in s if pos[w] < h)
        ml = sum(1 << (n - 1 - pos[w]) for w in s if pos[w] >= h)
        index.append((masks_h.setdefault(mh, len(masks_h)), masks_l.setdefault(ml, len(masks_l))))

    def signs(bits, masks):
        idx = np.arange(2**bits)[:, None] & np.array(list(masks), dtype=np.int64)[None, :]
        parity = np.zeros_like(idx)
        for b in range(bits):
            parity ^= (idx >> b) & 1
        return torch.as_tensor(1 - 2 * parity, dtype=real, device=device)

    cl = len(masks_l)
    flat = torch.as_tensor([i * cl + j for i, j in index], device=device)
    return signs(h, masks_h).T.contiguous(), signs(n - h, masks_l), flat


class _Constants:
    """Device tensors of one plan (programs of the blocks, constant unitaries, readout tables)."""

    def __init__(self, plan: BlockPlan, device, real, cplx) -> None:
        self.programs = [None if not isinstance(s, Dense) else _program(s, device, cplx) for s in plan.steps]
        rot_cols = [s.op.index for s in plan.steps if isinstance(s, Rotation)]
        self.rot_cols = torch.as_tensor(rot_cols, dtype=torch.long, device=device)
        self.zh, self.zl, self.flat = _readout_tables(plan, device, real)
        self.gen = {name: torch.as_tensor(local_matrix(name, 1), dtype=cplx, device=device)
                    for ops in plan.prefix for name in {o.name for o in ops if o.rotation}}
        self.fixed = {}
        for ops in plan.prefix:
            for o in ops:
                if o.source == "fixed":
                    self.fixed[o.name] = torch.as_tensor(local_matrix(o.name, 1), dtype=cplx, device=device)
                elif o.source == "const":
                    m = math.cos(o.value / 2) * np.eye(2) + math.sin(o.value / 2) * local_matrix(o.name, 1)
                    m = m * np.exp(0.5j * o.value) if o.name == "PhaseShift" else m
                    self.fixed[(o.name, o.value)] = torch.as_tensor(m, dtype=cplx, device=device)
        self.eye2 = torch.eye(2, dtype=cplx, device=device)
        self.e0 = torch.tensor([1.0, 0.0], dtype=cplx, device=device)


# --- the state kernels ------------------------------------------------------------------------------
def _apply_dense(x: torch.Tensor, u: torch.Tensor, start: int, k: int, n: int) -> torch.Tensor:
    """``u`` (``(K, K)`` or per set ``(B, K, K)``) on the axes ``start..start+k-1`` of ``x`` ``(B, M, D)``."""
    B, M, D = x.shape
    K, R = 2**k, 2 ** (n - start - k)
    if u.dim() == 3 and u.shape[0] == 1:
        u = u[0]
    if R == 1:  # the block's axes are the last: one GEMM per set, rows of K amplitudes
        out = x.view(B, -1, K) @ u.mT
    elif u.dim() == 2:
        out = u @ x.view(B * M * (D // (K * R)), K, R)
    else:
        v = x.view(B, -1, K, R)
        out = torch.empty_like(v)
        for b in range(B):  # a per-set loop: broadcasting u over the batch would copy it per row
            torch.matmul(u[b], v[b], out=out[b])
    return out.view(B, M, D)


def _outer(lam: torch.Tensor, psi: torch.Tensor, start: int, k: int, n: int) -> torch.Tensor:
    """``sum over samples and the other axes of lam psi^H`` on the block's axes: ``(B, K, K)``."""
    B = lam.shape[0]
    K, R = 2**k, 2 ** (n - start - k)
    if R == 1:
        return (psi.view(B, -1, K).mH @ lam.view(B, -1, K)).mT
    if R >= K:
        return (lam.view(B, -1, K, R) @ psi.view(B, -1, K, R).mH).sum(1)
    return torch.einsum("bxkr,bxjr->bkj", lam.view(B, -1, K, R), psi.view(B, -1, K, R).conj())


def _slices(n: int, axes: tuple[int, ...]):
    """Index tuples of ``(BM, 2, ..., 2)`` selecting each local basis state ``j`` of ``axes``."""
    g = len(axes)
    out = []
    for j in range(2**g):
        idx = [slice(None)] * (n + 1)
        for i, a in enumerate(axes):
            idx[1 + a] = (j >> (g - 1 - i)) & 1
        out.append(tuple(idx))
    return out


def _rotate(x: torch.Tensor, step: Rotation, c: torch.Tensor, s: torch.Tensor, n: int) -> torch.Tensor:
    """``c psi + s G psi`` (PhaseShift: ``diag(1, c + i s)``, c and s of the full angle) for every sample;
    ``c, s``: ``(B, M)``."""
    B, M, D = x.shape
    v = x.view((B * M,) + (2,) * n)
    out = torch.empty_like(v)
    g = len(step.axes)
    shape = (B * M,) + (1,) * (n - g)
    c, s = c.reshape(shape), s.reshape(shape)
    idx = _slices(n, step.axes)
    if step.op.name == "PhaseShift":
        out[idx[0]] = v[idx[0]]
        torch.mul(v[idx[1]], torch.complex(c, s), out=out[idx[1]])
        return out.view(B, M, D)
    for j, (p, ph) in enumerate(zip(step.perm, step.phase)):
        coef = s * ph if ph.imag else s * ph.real
        if step.diagonal:
            torch.mul(v[idx[j]], c + coef, out=out[idx[j]])
        else:
            torch.mul(v[idx[j]], c, out=out[idx[j]])
            out[idx[j]].addcmul_(v[idx[p]], coef.to(out.dtype))
    return out.view(B, M, D)


def _rotation_grad(lam: torch.Tensor, psi: torch.Tensor, step: Rotation, n: int) -> torch.Tensor:
    """``Re <lam, d psi_out / d(theta/2)>`` per sample, from the output ``psi`` alone: ``(B, M)``."""
    B, M, D = psi.shape
    lv, pv = lam.view((B * M,) + (2,) * n), psi.view((B * M,) + (2,) * n)
    idx = _slices(n, step.axes)
    dims = tuple(range(1, n + 1 - len(step.axes)))
    if step.op.name == "PhaseShift":  # d/d(theta/2) of e^{i theta} psi_1 = 2i psi_1
        t = (lv[idx[1]].conj() * pv[idx[1]]).sum(dims)
        return (-2 * t.imag).view(B, M)
    total = None
    for j, (p, ph) in enumerate(zip(step.perm, step.phase)):
        t = (lv[idx[j]].conj() * pv[idx[p]]).sum(dims) * ph
        total = t.real if total is None else total + t.real
    return total.view(B, M)


def _reorder(x: torch.Tensor, perm: tuple[int, ...], n: int) -> torch.Tensor:
    B, M, D = x.shape
    return x.view((B, M) + (2,) * n).permute((0, 1) + tuple(2 + p for p in perm)).reshape(B, M, D)


def _inverse(perm: tuple[int, ...]) -> tuple[int, ...]:
    inv = [0] * len(perm)
    for i, p in enumerate(perm):
        inv[p] = i
    return tuple(inv)


def _forward(plan: BlockPlan, psi: torch.Tensor, half: torch.Tensor, mats: list) -> torch.Tensor:
    n, r, d = plan.n_wires, 0, 0
    for step in plan.steps:
        if isinstance(step, Dense):
            psi = _apply_dense(psi, mats[d], step.start, step.k, n)
            d += 1
        elif isinstance(step, Rotation):
            h = half[..., r] * (2 if step.op.name == "PhaseShift" else 1)
            psi = _rotate(psi, step, torch.cos(h), torch.sin(h), n)
            r += 1
        else:
            psi = _reorder(psi, step.perm, n)
    return psi


class _Adjoint(torch.autograd.Function):
    """``psi_out = steps(psi_in)``: differentiable in ``psi_in``, the rotations' half-angles ``half``
    ``(B, M, n_rotations)`` and the blocks' unitaries ``mats``, by the adjoint method."""

    @staticmethod
    def forward(ctx, plan, psi, half, *mats):
        out = _forward(plan, psi, half, list(mats))
        ctx.plan = plan
        ctx.save_for_backward(out, half, *mats)
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx, lam):
        plan = ctx.plan
        out, half, *mats = ctx.saved_tensors
        n = plan.n_wires
        want_mats = ctx.needs_input_grad[3:]
        grad_mats = [None] * len(mats)
        grad_half = torch.zeros_like(half) if ctx.needs_input_grad[2] else None
        psi, lam = out, lam.contiguous()
        r, d = half.shape[-1], len(mats)
        for step in reversed(plan.steps):
            if isinstance(step, Dense):
                d -= 1
                uh = mats[d].mH
                psi = _apply_dense(psi, uh, step.start, step.k, n)
                if want_mats[d]:
                    grad_mats[d] = _outer(lam, psi, step.start, step.k, n)
                lam = _apply_dense(lam, uh, step.start, step.k, n)
            elif isinstance(step, Rotation):
                r -= 1
                if grad_half is not None:
                    grad_half[..., r] = _rotation_grad(lam, psi, step, n)
                h = half[..., r] * (2 if step.op.name == "PhaseShift" else 1)
                c, s = torch.cos(h), -torch.sin(h)
                psi = _rotate(psi, step, c, s, n)
                lam = _rotate(lam, step, c, s, n)
            else:
                inv = _inverse(step.perm)
                psi, lam = _reorder(psi, inv, n), _reorder(lam, inv, n)
        for d, g in enumerate(grad_mats):
            if g is not None and mats[d].dim() == 2:
                grad_mats[d] = g.sum(0)
        return (None, lam, grad_half, *grad_mats)


class BlockExecutor:
    """Runs a :class:`BlockPlan` on data angles ``x`` ``(*S, n_data, M)`` and flat weights ``w`` ``(*S, n_weights)``."""

    def __init__(self, plan: BlockPlan, constants: _Constants, cplx: torch.dtype) -> None:
        self.plan, self.k, self.cplx = plan, constants, cplx

    @staticmethod
    def constants(plan: BlockPlan, device, real, cplx) -> _Constants:
        return _Constants(plan, device, real, cplx)

    # --- the product-state prefix --------------------------------------------------------------------
    def _prefix(self, half: torch.Tensor) -> torch.Tensor:
        """Per-wire 2-vectors from each wire's prefix gates on |0>, then their Kronecker product in the
        initial (natural) order: ``(B, M, D)``."""
        B, M = half.shape[:2]
        st = None
        for ops in self.plan.prefix:
            v = self.k.e0.expand(B, M, 2)
            for o in ops:
                if o.source == "data":
                    h = half[..., o.index]
                    if o.name == "PhaseShift":
                        v = torch.stack([v[..., 0], v[..., 1] * torch.polar(torch.ones_like(h), 2 * h)], -1)
                        continue
                    c, s = torch.cos(h)[..., None, None], torch.sin(h)[..., None, None]
                    m = c * self.k.eye2 + s * self.k.gen[o.name]
                else:
                    m = self.k.fixed[o.name if o.source == "fixed" else (o.name, o.value)]
                v = (m @ v.unsqueeze(-1)).squeeze(-1)
            st = v if st is None else (st.unsqueeze(-1) * v.unsqueeze(-2)).flatten(-2)
        return st.reshape(B, M, -1)

    # --- the blocks' unitaries -----------------------------------------------------------------------
    def _unitaries(self, cw: torch.Tensor | None, sw: torch.Tensor | None) -> list[torch.Tensor]:
        """One ``(K, K)`` unitary per constant block, ``(B, K, K)`` per weight block (autograd builds
        their gradient from ``dL/dU``)."""
        mats = []
        for step, prog in zip(self.plan.steps, self.k.programs):
            if prog is None:
                continue
            u = None
            for ins in prog:
                if ins[0] == "const":
                    u = ins[1] if u is None else ins[1] @ u
                    continue
                _, j, perm, phase, extra, dense = ins
                c, s = cw[:, j, None, None], sw[:, j, None, None]
                if u is None:
                    u = c * torch.eye(dense.shape[0], dtype=self.cplx, device=dense.device) + s * dense
                else:
                    g = u.index_select(-2, perm)
                    u = c * u + s * (g if phase is None else phase * g)
                if extra:
                    u = torch.complex(c, s) * u
            mats.append(u)
        return mats

    # --- a call ------------------------------------------------------------------------------------
    def run(self, x: torch.Tensor, w: torch.Tensor | None, lead: tuple[int, ...], kind: str) -> torch.Tensor:
        """``x``: ``(*S, n_data, M)``; returns ``(*S, M, n_obs)`` or states ``(*S, M, D)``."""
        plan = self.plan
        M = x.shape[-1]
        B = math.prod(lead)
        half = (x * 0.5).reshape(B, -1, M).mT  # (B, M, n_data)
        cw = sw = None
        if w is not None and w.shape[-1]:
            hw = w.reshape(B, -1) * 0.5
            cw, sw = torch.cos(hw), torch.sin(hw)
        psi = self._prefix(half).to(self.cplx)
        mats = self._unitaries(cw, sw)
        rot = half.index_select(-1, self.k.rot_cols)
        psi = _Adjoint.apply(plan, psi, rot, *mats)
        if kind == "state":
            if plan.order != tuple(range(plan.n_wires)):
                psi = _reorder(psi, tuple(plan.order.index(w) for w in range(plan.n_wires)), plan.n_wires)
            return psi.reshape(lead + (M, -1))
        p = torch.view_as_real(psi).square().sum(-1)  # (B, M, D)
        h = plan.n_wires // 2
        p = p.view(B, M, 2**h, -1)
        t = (self.k.zh @ p) @ self.k.zl  # (B, M, ch, cl)
        return t.flatten(-2).index_select(-1, self.k.flat).reshape(lead + (M, -1))
