"""The block executor of :mod:`qelm.backends.fused`: runs a :class:`~qelm.backends.fused_blocks.BlockPlan` on
a batch and differentiates it by the adjoint method (Jones & Gacon 2020, arXiv:2009.02823).

States are complex ``(B, M, D)``: weight sets, samples, amplitudes (one axis per wire in the plan's order).
One autograd node covers the whole circuit: forward applies the steps and keeps only the output states.
Backward builds the cotangent ``lam`` of the states from that of the expectations and walks the steps in
reverse: a step ``psi_out = U psi_in`` is undone on both (``psi_in = U^H psi_out``, ``lam_in = U^H
lam_out``) and ``dL/dU = lam_out psi_in^H``, summed over the samples of each weight set, is handed to
autograd, which carries it through the small ``K x K`` construction of ``U`` to the weight angles. A data
rotation's angle gradient is read per sample from its output: ``d psi_out / d(theta/2) = G psi_out``. The
samples run in chunks, so the call holds the output states and one chunk's few working states, not one
state per gate, plus the blocks' unitaries.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch.autograd.function import once_differentiable

from .fused_blocks import BlockPlan, Dense, Rotation
from .fused_plan import GenPerm, genperm, local_matrix
from .fused_unitaries import Unitaries

__all__ = ["BlockExecutor", "STATES_KEPT", "CHUNK_STATES", "chunk_size"]

#: states per sample held through a forward + backward call: the output kept for backward, with margin
#: (1.6 measured as peak resident memory on the CPU at 14 and 16 qubits, 256-1024 samples)
STATES_KEPT = 2
#: states per sample of one chunk alive at once while it runs: input, output, cotangent and what a step
#: makes from them
CHUNK_STATES = 8


# --- plan constants on a device -------------------------------------------------------------------------
def _readout_tables(plan: BlockPlan, device, real):
    """The Z strings as ``Zh^T P Zl`` on ``P`` split into its first ``h`` axes and the rest: sign tables
    ``(2**h, ch)``, ``(2**l, cl)`` and, per string, its entry of the flattened ``(ch, cl)`` product."""
    n = plan.n_wires
    h = n // 2
    pos = {w: i for i, w in enumerate(plan.order)}
    masks_h: dict[int, int] = {}
    masks_l: dict[int, int] = {}
    index = []
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


#: a permutation with its phases on a device: ``out[j] = phase[j] in[perm[j]]`` (phase None: every phase is 1)
_Gather = tuple[torch.Tensor, torch.Tensor | None]


def _gather(block: Dense, device, cplx) -> tuple[_Gather, _Gather]:
    """A permutation block as ``(perm, phase)`` and its inverse, on the block's ``2**k`` local states:
    ``out[j] = phase[j] in[perm[j]]`` (phase None where every phase is 1)."""
    at = {w: i for i, w in enumerate(block.wires)}
    total: GenPerm | None = None
    for op in block.ops:
        local = tuple(at[w] for w in op.wires)
        gp = genperm(local_matrix(op.name, len(local)), local, block.k)
        assert gp is not None  # a gather block holds permutation gates only
        total = gp if total is None else total.then(gp)
    assert total is not None
    inv = np.empty_like(total.perm)
    inv[total.perm] = np.arange(len(total.perm))
    inv_phase = np.conj(total.phase[inv])

    def tensors(perm, phase) -> _Gather:
        ph = None if np.all(phase == 1) else torch.as_tensor(phase, dtype=cplx, device=device)[:, None]
        return torch.as_tensor(perm, device=device), ph
    return tensors(total.perm, total.phase), tensors(inv, inv_phase)


class _Constants:
    """Device tensors of one plan (programs of the blocks, constant unitaries, readout tables)."""

    def __init__(self, plan: BlockPlan, device, real, cplx) -> None:
        self.programs: list[tuple[_Gather, _Gather] | None] = [_gather(s, device, cplx) if isinstance(s, Dense) and s.gather else None for s in plan.steps]
        self.unitaries = Unitaries(plan, device, cplx)
        rot_cols = [s.op.index for s in plan.steps if isinstance(s, Rotation)]
        self.rot_cols = torch.as_tensor(rot_cols, dtype=torch.long, device=device)
        self.zh, self.zl, self.flat = _readout_tables(plan, device, real)
        self.gen = {name: torch.as_tensor(local_matrix(name, 1), dtype=cplx, device=device)
                    for ops in plan.prefix for name in {o.name for o in ops if o.rotation}}
        self.fixed: dict[str | tuple[str, float], torch.Tensor] = {}
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
def _rows(x: torch.Tensor, k: int) -> torch.Tensor:
    """A state ``(B, M, D)`` whose last ``k`` axes form a block, as real rows ``(B, X, 2K)``."""
    return torch.view_as_real(x).view(x.shape[0], -1, 2 ** (k + 1))


def _apply_dense(x: torch.Tensor, a: torch.Tensor, k: int) -> torch.Tensor:
    """A block on the last ``k`` axes of ``x`` ``(B, M, D)``, given by its real form ``a`` ``(2K, 2K)`` or per
    set ``(B, 2K, 2K)`` (:func:`~qelm.backends.fused_unitaries.real_form`): one real GEMM on rows of ``2K``."""
    if a.dim() == 3 and a.shape[0] == 1:
        a = a[0]
    return torch.view_as_complex((_rows(x, k) @ a).view(x.shape + (2,)))


def _outer(lam: torch.Tensor, psi: torch.Tensor, k: int) -> torch.Tensor:
    """``dL/da`` of :func:`_apply_dense` from the cotangent of its output and its input, summed over the
    samples of each set: ``rows_in^T rows_lam`` ``(B, 2K, 2K)``."""
    return _rows(psi, k).mT @ _rows(lam, k)


def _slices(n: int, axes: tuple[int, ...]):
    """Index tuples of ``(BM, 2, ..., 2)`` selecting each local basis state ``j`` of ``axes``."""
    g = len(axes)
    out = []
    for j in range(2**g):
        idx: list[slice | int] = [slice(None)] * (n + 1)
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
    B, M, _ = psi.shape
    lv, pv = lam.view((B * M,) + (2,) * n), psi.view((B * M,) + (2,) * n)
    idx = _slices(n, step.axes)
    dims = tuple(range(1, n + 1 - len(step.axes)))
    if step.op.name == "PhaseShift":  # d/d(theta/2) of e^{i theta} psi_1 = 2i psi_1
        t = (lv[idx[1]].conj() * pv[idx[1]]).sum(dims)
        return (-2 * t.imag).view(B, M)
    total: torch.Tensor | None = None
    for j, (p, ph) in enumerate(zip(step.perm, step.phase)):
        t = (lv[idx[j]].conj() * pv[idx[p]]).sum(dims) * ph
        total = t.real if total is None else total + t.real
    assert total is not None  # a rotation acts on at least one basis state
    return total.view(B, M)


def _reorder(x: torch.Tensor, perm: tuple[int, ...], n: int) -> torch.Tensor:
    """Permute the wire axes of ``x`` ``(B, M, D)`` (new axis ``i`` = old axis ``perm[i]``), runs of axes that
    stay together moved as one (a permute of few large axes copies far faster than of many of size 2)."""
    runs: list[list[int]] = []
    for p in perm:
        if runs and p == runs[-1][-1] + 1:
            runs[-1].append(p)
        else:
            runs.append([p])
    old = sorted(runs, key=lambda r: r[0])  # the runs in the old order
    B, M, D = x.shape
    v = x.view((B, M) + tuple(2 ** len(r) for r in old))
    where = {r[0]: i for i, r in enumerate(old)}
    return v.permute((0, 1) + tuple(2 + where[r[0]] for r in runs)).reshape(B, M, D)


def _inverse(perm: tuple[int, ...]) -> tuple[int, ...]:
    return tuple(sorted(range(len(perm)), key=perm.__getitem__))


def _apply_gather(x: torch.Tensor, perm: torch.Tensor, phase, start: int, k: int, n: int) -> torch.Tensor:
    B, M, D = x.shape
    K, R = 2**k, 2 ** (n - start - k)
    out = x.view(-1, K, R).index_select(1, perm)
    return (out if phase is None else out * phase).view(B, M, D)


def _product(wires: torch.Tensor) -> torch.Tensor:
    """The Kronecker product of per-wire 2-vectors ``(B, m, n, 2)``, wire 0 most significant: ``(B, m, D)``."""
    st = wires[:, :, 0]
    for i in range(1, wires.shape[2]):
        st = (st.unsqueeze(-1) * wires[:, :, i].unsqueeze(-2)).flatten(-2)
    return st


def _product_grad(wires: torch.Tensor, lam: torch.Tensor) -> torch.Tensor:
    """The cotangent of the per-wire vectors ``(B, m, n, 2)`` from that of their product ``lam`` ``(B, m, D)``
    (torch's convention: ``conj`` of the other factors), the product's chain rule from its last wire back:
    about two passes over ``lam``."""
    B, m, n = wires.shape[:3]
    partial = [wires[:, :, 0]]
    for i in range(1, n - 1):
        partial.append((partial[-1].unsqueeze(-1) * wires[:, :, i].unsqueeze(-2)).flatten(-2))
    grads: list[torch.Tensor | None] = [None] * n
    g = lam
    for j in range(n - 1, 0, -1):
        gj = g.view(B, m, -1, 2)  # (left index, this wire's bit)
        grads[j] = (partial[j - 1].conj().unsqueeze(-2) @ gj).squeeze(-2)
        g = (gj @ wires[:, :, j].conj().unsqueeze(-1)).squeeze(-1)
    grads[0] = g
    return torch.stack([x for x in grads if x is not None], dim=2)


def _forward(plan: BlockPlan, consts: _Constants, psi: torch.Tensor, half: torch.Tensor, mats: list) -> torch.Tensor:
    n, r, d = plan.n_wires, 0, 0
    for step, prog in zip(plan.steps, consts.programs):
        if isinstance(step, Dense) and step.gather:
            assert prog is not None
            perm, phase = prog[0]
            psi = _apply_gather(psi, perm, phase, step.start, step.k, n)
        elif isinstance(step, Dense):
            psi = _apply_dense(psi, mats[d], step.k)
            d += 1
        elif isinstance(step, Rotation):
            h = half[..., r] * (2 if step.op.name == "PhaseShift" else 1)
            psi = _rotate(psi, step, torch.cos(h), torch.sin(h), n)
            r += 1
        else:
            psi = _reorder(psi, step.perm, n)
    return psi


def _backward(plan: BlockPlan, consts: _Constants, psi, lam, half, mats, grad_half, grad_mats) -> torch.Tensor:
    """Walk the steps back from the output ``psi`` with the cotangent ``lam`` (one chunk of samples);
    accumulates into ``grad_half`` (this chunk's rows) and ``grad_mats`` (None: not wanted); returns the
    cotangent of the input state."""
    n = plan.n_wires
    r, d = half.shape[-1], len(mats)
    for step, prog in zip(reversed(plan.steps), reversed(consts.programs)):
        if isinstance(step, Dense) and step.gather:
            assert prog is not None
            perm, phase = prog[1]
            psi = _apply_gather(psi, perm, phase, step.start, step.k, n)
            lam = _apply_gather(lam, perm, phase, step.start, step.k, n)
        elif isinstance(step, Dense):
            d -= 1
            inverse = mats[d].mT  # the real form of a unitary is orthogonal
            psi = _apply_dense(psi, inverse, step.k)
            if grad_mats[d] is not None:
                g = _outer(lam, psi, step.k)
                grad_mats[d] += g if grad_mats[d].dim() == 3 else g.sum(0)
            lam = _apply_dense(lam, inverse, step.k)
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
    return lam


def _expectations(psi: torch.Tensor, consts, n: int) -> torch.Tensor:
    """``<Z_S>`` of every string of the plan from states ``(B, m, D)``: ``Zh^T P Zl`` on the probabilities
    ``P`` split into the first ``n // 2`` axes and the rest, ``(B, m, n_obs)``."""
    p = torch.view_as_real(psi).square().sum(-1)
    p = p.view(p.shape[:2] + (2 ** (n // 2), -1))
    return ((consts.zh @ p) @ consts.zl).flatten(-2).index_select(-1, consts.flat)


def _cotangent(psi: torch.Tensor, g: torch.Tensor, consts, n: int) -> torch.Tensor:
    """The cotangent of the states from that of their expectations ``g`` ``(B, m, n_obs)``: ``2 psi W`` with
    ``W = sum_S g_S Z_S`` on the basis states, built as ``Zh G Zl^T``."""
    B, m = g.shape[:2]
    ch, cl = consts.zh.shape[0], consts.zl.shape[1]
    G = torch.zeros((B, m, ch * cl), dtype=g.dtype, device=g.device).index_add_(-1, consts.flat, g)
    W = consts.zh.mT @ G.view(B, m, ch, cl) @ consts.zl.mT  # (B, m, 2**h, 2**l)
    return psi * (2 * W).view(B, m, -1)


class _Adjoint(torch.autograd.Function):
    """The circuit on every sample, from the per-wire 2-vectors of its product-state prefix ``wires``
    ``(B, M, n, 2)``, the data rotations' half-angles ``half`` ``(B, M, n_rotations)`` and the blocks'
    unitaries ``mats``: the expectations ``(B, M, n_obs)`` (``kind`` "expval") or the states ``(B, M, D)``
    in the plan's final order, differentiable in all three by the adjoint method. The samples run in chunks
    of ``chunk``; only the output states are kept for backward."""

    @staticmethod
    def forward(ctx, plan, consts, chunk, kind, wires, half, *mats):
        B, M = wires.shape[:2]
        out = torch.empty((B, M, 2**plan.n_wires), dtype=wires.dtype, device=wires.device)
        exps = []
        for m0 in range(0, M, chunk):
            part = slice(m0, m0 + chunk)
            psi = _forward(plan, consts, _product(wires[:, part]), half[:, part], list(mats))
            out[:, part] = psi
            if kind == "expval":
                exps.append(_expectations(psi, consts, plan.n_wires))
        ctx.plan, ctx.consts, ctx.chunk, ctx.kind = plan, consts, chunk, kind
        ctx.save_for_backward(out, wires, half, *mats)
        if kind == "state":
            return out
        return exps[0] if len(exps) == 1 else torch.cat(exps, dim=1)

    @staticmethod
    @once_differentiable
    def backward(ctx, g):
        out, wires, half, *mats = ctx.saved_tensors
        want, n = ctx.needs_input_grad, ctx.plan.n_wires
        grad_wires = torch.zeros_like(wires) if want[4] else None
        grad_half = torch.zeros_like(half) if want[5] else None
        grad_mats = [torch.zeros_like(m) if w else None for m, w in zip(mats, want[6:])]
        for m0 in range(0, wires.shape[1], ctx.chunk):
            part = slice(m0, m0 + ctx.chunk)
            psi = out[:, part].contiguous()
            lam = g[:, part].contiguous() if ctx.kind == "state" else _cotangent(psi, g[:, part], ctx.consts, n)
            lam0 = _backward(ctx.plan, ctx.consts, psi, lam, half[:, part], mats,
                             None if grad_half is None else grad_half[:, part], grad_mats)
            if grad_wires is not None:  # through the product state
                grad_wires[:, part] = _product_grad(wires[:, part], lam0)
        return (None, None, None, None, grad_wires, grad_half, *grad_mats)


class BlockExecutor:
    """Runs a :class:`BlockPlan` on data angles ``x`` ``(*S, n_data, M)`` and flat weights ``w`` ``(*S, n_weights)``."""

    def __init__(self, plan: BlockPlan, constants: _Constants, cplx: torch.dtype) -> None:
        self.plan, self.k, self.cplx = plan, constants, cplx

    @staticmethod
    def constants(plan: BlockPlan, device, real, cplx) -> _Constants:
        return _Constants(plan, device, real, cplx)

    # --- the product-state prefix --------------------------------------------------------------------
    def _wires(self, half: torch.Tensor) -> list[torch.Tensor]:
        """Each wire's 2-vector after its prefix gates on |0>, ``(B, M, 2)``, in the natural order."""
        B, M = half.shape[:2]
        out = []
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
            out.append(v)
        return out

    # --- a call ------------------------------------------------------------------------------------
    def run(self, x: torch.Tensor, w: torch.Tensor | None, lead: tuple[int, ...], kind: str) -> torch.Tensor:
        """``x``: ``(*S, n_data, M)``; returns ``(*S, M, n_obs)`` or states ``(*S, M, D)``."""
        plan, n = self.plan, self.plan.n_wires
        M = x.shape[-1]
        B = math.prod(lead)
        half = (x * 0.5).reshape(B, -1, M).mT  # (B, M, n_data)
        cw = sw = None
        if w is not None and w.shape[-1]:
            hw = w.reshape(B, -1) * 0.5
            cw, sw = torch.cos(hw), torch.sin(hw)
        wires = torch.stack(self._wires(half), dim=2).to(self.cplx)  # (B, M, n, 2)
        mats = self.k.unitaries.build(cw, sw, B)
        rot = half.index_select(-1, self.k.rot_cols)
        chunk = chunk_size(n, B, M, self.cplx, x.device)
        out = _Adjoint.apply(plan, self.k, chunk, kind, wires, rot, *mats)  # (B, M, n_obs) or (B, M, D)
        if kind == "state":
            natural = tuple(plan.order.index(w) for w in range(n))
            out = out if natural == tuple(range(n)) else _reorder(out, natural, n)
        return out.reshape(lead + (M, -1))


#: bytes of the states of one chunk: on the CPU the samples run this many at a time so that the few states
#: a step touches stay in the cache; on a GPU chunks only bound the memory of the backward pass
CHUNK_BYTES = {"cpu": 1 << 20, "cuda": 1 << 30}


def chunk_size(n: int, sets: int, m: int, cplx: torch.dtype, device: torch.device) -> int:
    """Samples per chunk of the adjoint pass: as many as fit :data:`CHUNK_BYTES` (at least one)."""
    item = torch.empty(0, dtype=cplx).element_size()
    limit = CHUNK_BYTES["cpu" if device.type == "cpu" else "cuda"]
    return max(1, min(m, limit // (sets * item * 2**n)))
