"""The feature form's matrix ``W`` (:mod:`.fused_features`) from its blocks' one-qubit gate matrices, as one
hand-written autograd function: building and differentiating ``W`` is a third of a CPU training step of the
default model at T = 32.

Why by hand: ``W`` is a few 16 x 16 complex matrices (4 qubits) per weight set, so every operation that
builds it is tiny and its cost is the operation itself, not the arithmetic. Left to autograd, each Kronecker
product, gather, sign, scatter and product is a node of the graph, and its backward several more (complex
conjugates, reshapes, sums over broadcast axes). Here the forward runs without autograd's recording and the
backward is the chain written out: per step a product with the adjoint or the inverse gather, an RY stage
one sparse product each way (:func:`_ry_step`), and the gradients of every layer's one-qubit matrices from
its Kronecker product's gradient in one gather and one batched product (:func:`kron_grad`). Measured on the
2-core CPU, one thread: the attention call's ``W`` (6 weight sets) forward and backward ~1.3 ms, against
~1.6 ms step by step under autograd.

What it takes (:func:`matrix_program`): every stage of the feature plan a block on all wires built from layers
of one-qubit gates, fixed permutations and constant matrices (no multi-qubit weight rotation), a fixed
permutation block, a block without weights or an RY stage; a complex ``W``. Its input is the call's weights:
each group's one-qubit matrices (the gates' 2 x 2 matrices from the half angles, multiplied along each wire's
chain) are built inside it and differentiated by hand too (:func:`_chains`, :func:`_chains_grad`), where under
autograd the dozen tiny operations of :meth:`~.fused_executor.Executor.chain_matrices` and their backward
nodes cost more than they compute (default model, one thread: the two builds of a training step, forward and
backward, 2.53 -> 2.26 ms). Where a weighted gate is a PhaseShift, or the weights need no gradient, the
inputs are those matrices under autograd. Other feature plans build ``W`` step by step under autograd.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
import torch

from .fused_plan import Block, DenseMatrix, Layer, Permute

__all__ = ["MatrixProgram", "matrix_program", "program_matrix", "kron", "kron_grad"]


@dataclass
class MatrixProgram:
    """The steps that build ``W`` ``(*S, D, F)`` (complex) from the identity or the prefix's columns, in order:

    * ``("layer", group, block, layer)``: the Kronecker product of that layer's one-qubit matrices, times the columns;
    * ``("perm", index, inverse, phase)``: rows gathered (``out[r] = phase[r] * in[index[r]]``; ``phase`` None: all 1);
    * ``("dense", matrix)``: a constant matrix times the columns;
    * ``("ry", A, A^T, width)``: an RY stage (:func:`.fused_features.feature_matrix`) as a sparse real matrix;
    * ``("columns", index, width)``: columns summed into features (``out[:, index[c]] += in[:, c]``).
    """

    steps: list
    start: torch.Tensor | None  # (D, C0) complex; None: the identity (an RY on every wire's |0>)
    groups: list[int]  # the plan's groups (indices into plan.groups) whose one-qubit matrices are inputs
    n: int


def matrix_program(fp, ex, consts: dict) -> MatrixProgram | None:
    """The program of feature plan ``fp`` on executor ``ex`` (``consts``: :func:`.fused_features._constants`),
    or None where a stage is outside what :class:`MatrixW` runs."""
    cache, plan, n = ex.cache, ex.plan, ex.n
    if fp.real:
        return None  # a real W has half the rows: built step by step, not in complex here
    where = {id(b): (g, j) for g, group in enumerate(plan.groups) for j, b in enumerate(group)}
    used: list[int] = []
    steps: list = []
    ry = iter(consts["steps"])
    for kind, item in fp.stages:
        if kind == "ry":
            fold = steps.pop() if steps and steps[-1][0] == "perm" and steps[-1][3] is None else None
            steps.append(_ry_step(next(ry), 2**n, fold, cache))
        elif not isinstance(item, Block):
            return None
        elif item.mode == "perm":
            assert item.gp is not None
            steps.append(_perm_step(item.gp, cache))
        elif item.mode != "matrix" or tuple(item.support) != tuple(range(n)):
            return None
        elif not item.uses_weights:
            steps.append(("dense", ex._unitary(item)))
        else:
            g, j = where[id(item)]
            if g not in used:
                used.append(g)
            layer = 0
            for it in item.items:
                if isinstance(it, Layer):
                    steps.append(("layer", used.index(g), j, layer))
                    layer += 1
                elif isinstance(it, Permute):
                    steps.append(_perm_step(it.gp, cache))
                elif isinstance(it, DenseMatrix):
                    steps.append(("dense", torch.as_tensor(it.matrix, dtype=cache.cplx, device=cache.device)))
                else:
                    return None  # a multi-qubit weight rotation
    if not used:
        return None  # no weights: W is a constant, built once the usual way
    if fp.last is not None:
        steps.append(("columns", consts["last"], fp.n_features))
    start = None if consts["identity"] else consts["start"].to(cache.cplx)
    return MatrixProgram(steps, start, used, n)


def _ry_step(ry: tuple, D: int, fold: tuple | None, cache) -> tuple:
    """An RY stage (``index``, ``sign``, ``merge``, ``width`` as :func:`.fused_features._constants` makes them)
    as one sparse real matrix on the flattened columns, ``(D * width, D * C)``, with a permutation of rows
    before it (``fold``) folded in: ``("ry", A, A^T, width)``. One sparse product per call and direction,
    where a gather, a sign, a transpose and a scatter were four passes."""
    index, sign, merge, width = (t.cpu().numpy() if isinstance(t, torch.Tensor) else t for t in ry)
    n_sigma = sign.shape[0]
    C = len(merge) // n_sigma
    perm = index.reshape(n_sigma, D)  # rows of the input per (sigma, b)
    if fold is not None:
        perm = fold[1].cpu().numpy()[perm]
    sigma, b, c = np.meshgrid(np.arange(n_sigma), np.arange(D), np.arange(C), indexing="ij")
    rows = b * width + merge.reshape(n_sigma, C)[sigma, c]
    cols = perm[sigma, b] * C + c
    vals = np.broadcast_to(sign[:, :, :1], sigma.shape)
    with warnings.catch_warnings():  # torch calls sparse CSR tensors beta; these are built once per plan
        warnings.simplefilter("ignore")
        a = torch.sparse_coo_tensor(torch.as_tensor(np.stack([rows.ravel(), cols.ravel()])),
                                    torch.as_tensor(vals.ravel().copy()), (D * int(width), D * C),
                                    dtype=cache.real, device=cache.device).coalesce()
        return ("ry", a.to_sparse_csr(), a.t().coalesce().to_sparse_csr(), width)


def _sparse_apply(a: torch.Tensor, t: torch.Tensor, rows: int, cols: int) -> torch.Tensor:
    """The real sparse matrix ``a`` on the flattened columns of complex ``t`` ``(*S, D, C)``: one product with
    every set's real and imaginary parts as its columns; returns ``(*S, D, cols)``."""
    lead = t.shape[:-2]
    x = torch.view_as_real(t.reshape((-1,) + t.shape[-2:])).flatten(1, 2)  # (B, D*C, 2)
    y = a @ x.movedim(0, 1).flatten(1)  # (D*cols, 2B)
    y = y.unflatten(1, (-1, 2)).movedim(1, 0).contiguous()  # (B, D*cols, 2)
    return torch.view_as_complex(y).reshape(lead + (rows, cols))


def _perm_step(gp, cache) -> tuple:
    index = torch.as_tensor(gp.perm, device=cache.device)
    inverse = torch.as_tensor(np.argsort(gp.perm), device=cache.device)
    phase = None if gp.unit_phases else torch.as_tensor(gp.phase, dtype=cache.cplx, device=cache.device)[:, None]
    return ("perm", index, inverse, phase)


def program_matrix(prog: MatrixProgram, ex, lead: tuple[int, ...]) -> torch.Tensor:
    """``W`` as interleaved real rows ``(*lead, 2D, F)`` (rows ``2d + part``) from the call's weights on ``ex``
    (:meth:`~.fused_executor.Executor.begin`). Where every used group's gates are plain rotations (no
    PhaseShift) and the weights need a gradient, the weights are the function's input and the groups'
    one-qubit matrices are built and differentiated inside it (:func:`_chains`); else its inputs are those
    matrices ``(*lead, nb, L, n, 2, 2)`` (:meth:`~.fused_executor.Executor.chain_matrices`) under autograd."""
    groups = [ex.plan.groups[g] for g in prog.groups]
    specs = [ex.layer_spec(group) for group in groups]
    w = ex.w
    if w is not None and w.requires_grad and torch.is_grad_enabled() \
            and all(spec["n_weight"] and spec["phase_w"] is None for spec in specs):
        return MatrixW.apply(prog, lead, (specs, ex.cw.detach(), ex.sw.detach()), w)
    return MatrixW.apply(prog, lead, None, *[ex.chain_matrices(group) for group in groups])


def kron(m: torch.Tensor) -> torch.Tensor:
    """``(..., k, 2, 2)`` one-qubit matrices -> their Kronecker product ``(..., 2**k, 2**k)``, wire 0 first."""
    out = m[..., 0, :, :]
    for j in range(1, m.shape[-3]):
        out = (out.unsqueeze(-1).unsqueeze(-3) * m[..., j, :, :].unsqueeze(-2).unsqueeze(-4)).flatten(-4, -3).flatten(-2)
    return out


_KRON_INDEX: dict = {}


def _kron_index(k: int, device) -> tuple[torch.Tensor, torch.Tensor]:
    """For :func:`kron_grad`: ``(k * 4 * 4**(k-1),)`` positions in a flattened ``2**k x 2**k`` matrix of entry
    ``(i, j)`` of wire ``q`` and ``(i_o, j_o)`` of the other wires (ascending, the first most significant),
    and ``(k, k - 1)`` the other wires of each wire."""
    key = (k, device)
    if key not in _KRON_INDEX:
        K = 2**k
        pairs = np.arange(4**k)  # (i_0 j_0, i_1 j_1, ...) base 4, wire 0 most significant
        digits = (pairs[:, None] // 4 ** (k - 1 - np.arange(k))[None, :]) % 4  # (4**k, k)
        rows = (digits // 2) @ (2 ** (k - 1 - np.arange(k)))
        cols = (digits % 2) @ (2 ** (k - 1 - np.arange(k)))
        flat = rows * K + cols  # position of each pair tuple in the flat matrix
        others = np.array([[o for o in range(k) if o != q] for q in range(k)], dtype=np.int64).reshape(k, k - 1)
        index = np.empty((k, 4, 4 ** (k - 1)), dtype=np.int64)
        for q in range(k):
            order = [q] + list(others[q])  # wire q's pair first, then the others: a transpose of the digits
            t = flat.reshape((4,) * k).transpose(order)
            index[q] = t.reshape(4, -1)
        _KRON_INDEX[key] = (torch.as_tensor(index.reshape(-1), device=device), torch.as_tensor(others, device=device))
    return _KRON_INDEX[key]


def kron_grad(g: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
    """The gradient of each one-qubit matrix ``m`` ``(..., k, 2, 2)`` from that of their Kronecker product
    ``g`` ``(..., 2**k, 2**k)`` (torch's convention for complex tensors: ``conj`` of the other factors):
    ``dm_q[i, j] = sum g[I, J] conj(prod_{o != q} m_o[i_o, j_o])`` over ``I, J`` with wire ``q``'s bits ``i, j``.
    One gather puts ``g`` in the order (wire ``q``'s entry, the others' entries), one product per wire
    beyond the second builds the others' Kronecker products, one batched product contracts them."""
    k = m.shape[-3]
    if k == 1:
        return g.unsqueeze(-3)
    index, others = _kron_index(k, g.device)
    flat = g.flatten(-2)
    # torch.gather, not index_select: on the last axis of a complex tensor it is several times faster
    G = flat.gather(-1, index.expand(flat.shape[:-1] + index.shape)).unflatten(-1, (k, 4, -1))  # (..., k, 4, 4**(k-1))
    rest = m.flatten(-2).index_select(-2, others.reshape(-1)).unflatten(-2, (k, k - 1))  # (..., k, k-1, 4)
    v = rest[..., 0, :]
    for t in range(1, k - 1):
        v = (v.unsqueeze(-1) * rest[..., t, :].unsqueeze(-2)).flatten(-2)  # (..., k, 4**(t+1))
    return (G @ v.conj().unsqueeze(-1)).squeeze(-1).unflatten(-1, (2, 2))


class MatrixW(torch.autograd.Function):
    """``W`` from one-qubit matrices (see the module): forward the program's steps, backward their adjoints in
    reverse, then :func:`kron_grad` once per group. ``weights``: None (the inputs are each group's one-qubit
    matrices), or ``(specs, cw, sw)`` (the input is the weights ``(*S, n_weights)``, ``cw`` and ``sw`` their
    half-angle cosines and sines without a gradient): the matrices built here by :func:`_chains` and the
    weights' gradient by :func:`_chains_grad`, no autograd graph between the angles and ``W``."""

    @staticmethod
    def forward(ctx, prog: MatrixProgram, lead: tuple[int, ...], weights: tuple | None, *inputs):
        if weights is None:  # the inputs: each group's one-qubit matrices
            mats, ctx.chains = list(inputs), None
        else:  # the input: the weights (*S, n_weights); their cosines and sines come beside them
            specs, cw, sw = weights
            built = [_chains(spec, cw, sw) for spec in specs]
            mats = [m for m, _ in built]
            ctx.chains, ctx.w_shape = (specs, cw, sw, [saved for _, saved in built]), inputs[0].shape
        Ks = [kron(m) for m in mats]  # (*S, nb, L, D, D)
        t = prog.start  # None: the identity
        steps_in: list = []  # the columns each layer step met (None: the identity)
        for step in prog.steps:
            kind = step[0]
            if kind == "layer":
                K = Ks[step[1]][..., step[2], step[3], :, :]
                steps_in.append(t)
                t = K if t is None else K @ t
            elif kind == "perm":
                base = _eye(prog, mats) if t is None else t
                t = base.index_select(-2, step[1])
                if step[3] is not None:
                    t = step[3] * t
            elif kind == "dense":
                t = step[1] if t is None else step[1] @ t
            elif kind == "ry":
                base = _eye(prog, mats) if t is None else t
                t = _sparse_apply(step[1], base, base.shape[-2], step[3])
            else:  # columns
                base = _eye(prog, mats) if t is None else t
                t = base.new_zeros(base.shape[:-1] + (step[2],)).index_add_(-1, step[1], base)
        assert t is not None
        if t.shape[:-2] != lead:
            t = t.expand(lead + t.shape[-2:])
        ctx.prog, ctx.inputs, ctx.Ks = prog, steps_in, Ks
        if ctx.chains is None:
            ctx.save_for_backward(*mats)
        else:  # the matrices are not inputs: kept beside the rest
            ctx.mats = mats
        return torch.view_as_real(t).movedim(-1, -2).flatten(-3, -2)  # rows 2d + part

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad):
        prog, inputs, Ks = ctx.prog, ctx.inputs, ctx.Ks
        mats = ctx.saved_tensors if ctx.chains is None else ctx.mats
        g = torch.view_as_complex(grad.unflatten(-2, (-1, 2)).movedim(-2, -1).contiguous())  # (*S, D, F)
        layers: list[dict] = [{} for _ in mats]  # per group: (block, layer) -> dL/dK
        li = len(inputs)
        for step in reversed(prog.steps):
            kind = step[0]
            if kind == "layer":
                li -= 1
                t, K = inputs[li], Ks[step[1]][..., step[2], step[3], :, :]
                layers[step[1]][(step[2], step[3])] = g if t is None else g @ t.mH
                if t is None:  # the identity: nothing before depends on the weights
                    break
                g = K.mH @ g
            elif kind == "perm":
                if step[3] is not None:
                    g = step[3].conj() * g
                g = g.index_select(-2, step[2])
            elif kind == "dense":
                g = step[1].mH @ g
            elif kind == "ry":
                g = _sparse_apply(step[2], g, g.shape[-2], step[2].shape[0] // g.shape[-2])
            else:  # columns
                g = g.index_select(-1, step[1])
        out = []
        for group, m in zip(layers, mats):
            nb, L = m.shape[-5], m.shape[-4]
            gK = torch.stack([group[(b, j)] for b in range(nb) for j in range(L)], -3)  # every layer was reached
            out.append(kron_grad(gK.unflatten(-3, (nb, L)), m))
        if ctx.chains is None:
            return (None, None, None, *out)
        specs, cw, sw, saved = ctx.chains
        gw = cw.new_zeros(ctx.w_shape)
        for spec, s, gm in zip(specs, saved, out):
            _chains_grad(spec, cw, sw, s, gm, gw)
        return None, None, None, gw


def _chains(spec: dict, cw: torch.Tensor, sw: torch.Tensor) -> tuple[torch.Tensor, tuple]:
    """:meth:`~.fused_executor.Executor._chains` without autograd (no PhaseShift among the weighted gates):
    each block's gates' 2 x 2 matrices ``c E + s G`` from the weights' half-angle cosines and sines ``cw``,
    ``sw`` ``(*S, n_weights)``, then each wire's chain multiplied out, ``(*S, nb, L, k, 2, 2)``; and what
    :func:`_chains_grad` needs. The products are ``torch.bmm`` on the flattened batch: ``matmul``'s
    broadcasting costs more than a 2 x 2 product."""
    idx = spec["weight_index"]  # (nb, G)
    if spec["weight_run"] is not None:
        a, b = spec["weight_run"]
        c, s = cw[..., a:b].unflatten(-1, idx.shape), sw[..., a:b].unflatten(-1, idx.shape)
    else:
        c, s = cw[..., idx], sw[..., idx]  # (*S, nb, G)
    mats = c[..., None, None] * spec["eye"] + s[..., None, None] * spec["gen_w"]  # (*S, nb, G, 2, 2)
    fixed = spec["fixed"]
    table = torch.cat([mats, fixed.expand(mats.shape[:-3] + fixed.shape)], dim=-3)
    t = table[..., spec["chain"], :, :]  # (*S, nb, L, k, depth, 2, 2)
    shape = t.shape
    t = t.reshape((-1,) + shape[-3:])
    prefix: list = [None]  # the product of the gates before gate j (None: none)
    m = t[:, 0]
    for j in range(1, shape[-3]):  # later gates act after earlier ones
        prefix.append(m)
        m = torch.bmm(t[:, j], m)
    return m.reshape(shape[:-3] + (2, 2)), (t, prefix, shape, table.shape[-3], c, s)


def _chains_grad(spec: dict, cw: torch.Tensor, sw: torch.Tensor, saved: tuple, g: torch.Tensor,
                 gw: torch.Tensor) -> None:
    """The gradient of the weights from that of :func:`_chains`' matrices ``g``, added to ``gw``
    ``(*S, n_weights)``: the product rule along each chain (``dt_j = Q_j^H g P_j^H``, ``P_j`` and ``Q_j`` the
    products before and after gate ``j``), the gates' gradients summed onto the table's entries, then
    onto ``c`` and ``s`` (``t = c E + s G``: ``dc = Re sum conj(dt) E``, torch's convention for a complex
    gradient) and onto the angles (``dc/dw = -s/2``, ``ds/dw = c/2``)."""
    t, prefix, shape, n_table, c, s = saved
    depth = shape[-3]
    grads: list = [None] * depth
    q = g.reshape(-1, 2, 2)  # Q_j^H g: the gradient past the gates after gate j
    for j in reversed(range(depth)):
        grads[j] = q if prefix[j] is None else torch.bmm(q, prefix[j].mH)
        if j:
            q = torch.bmm(t[:, j].mH, q)
    gt = torch.stack(grads, -3).reshape(shape[:-5] + (-1, 2, 2))  # (*S, nb, L * k * depth, 2, 2)
    gtab = gt.new_zeros(gt.shape[:-3] + (n_table, 2, 2)).index_add_(-3, spec["chain"].reshape(-1), gt)
    gm = torch.view_as_real(gtab[..., :spec["n_weight"], :, :])  # (*S, nb, G, 2, 2, 2)
    gc = (gm * torch.view_as_real(spec["eye"])).sum((-3, -2, -1))
    gs = (gm * torch.view_as_real(spec["gen_w"])).sum((-3, -2, -1))
    ga = (gs * c - gc * s).mul_(0.5).flatten(-2)  # (*S, nb * G)
    gw.index_add_(-1, spec["weight_index"].reshape(-1), ga)


def _eye(prog: MatrixProgram, mats) -> torch.Tensor:
    D = 2**prog.n
    return torch.eye(D, dtype=mats[0].dtype, device=mats[0].device)
