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
permutation block, a block without weights or an RY stage; a complex ``W``. The one-qubit matrices of each
group of blocks (:meth:`~.fused_executor.Executor.chain_matrices`, a few operations that autograd
differentiates) are this function's inputs. Other feature plans build ``W`` step by step under autograd.
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


def program_matrix(prog: MatrixProgram, mats: list[torch.Tensor], lead: tuple[int, ...]) -> torch.Tensor:
    """``W`` as interleaved real rows ``(*lead, 2D, F)`` (rows ``2d + part``) from each used group's one-qubit
    matrices ``(*lead, nb, L, n, 2, 2)`` (:meth:`~.fused_executor.Executor.chain_matrices`)."""
    return MatrixW.apply(prog, lead, *mats)


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
    reverse, then :func:`kron_grad` once per group."""

    @staticmethod
    def forward(ctx, prog: MatrixProgram, lead: tuple[int, ...], *mats):
        Ks = [kron(m) for m in mats]  # (*S, nb, L, D, D)
        t = prog.start  # None: the identity
        inputs = []  # the columns each layer step met (None: the identity)
        for step in prog.steps:
            kind = step[0]
            if kind == "layer":
                K = Ks[step[1]][..., step[2], step[3], :, :]
                inputs.append(t)
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
        ctx.prog, ctx.inputs, ctx.Ks = prog, inputs, Ks
        ctx.save_for_backward(*mats)
        return torch.view_as_real(t).movedim(-1, -2).flatten(-3, -2)  # rows 2d + part

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad):
        prog, inputs, Ks = ctx.prog, ctx.inputs, ctx.Ks
        mats = ctx.saved_tensors
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
        return (None, None, *out)


def _eye(prog: MatrixProgram, mats) -> torch.Tensor:
    D = 2**prog.n
    return torch.eye(D, dtype=mats[0].dtype, device=mats[0].device)
