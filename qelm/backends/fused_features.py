"""Narrow data re-uploading circuits as one feature map and one matrix per weight set: the fast path of
:mod:`qelm.backends.fused` for small circuits whose data gates are all RY.

Why: a re-uploading circuit on 4 qubits is ~2,000 multiply-adds per sample, but run stage by stage (the
product-state prefix, a unitary, a layer of per-sample RY butterflies, another unitary, the readout) it is
dozens of elementwise passes over the states forward and as many backward; on a CPU core those passes, not
the arithmetic, are the cost. Here the data dependence is taken out of the state simulation entirely.

Every data rotation is ``RY(x) = c I + s G`` with ``c, s = cos(x/2), sin(x/2)`` and ``G = -iY`` (real), and
the prefix is ``RY(x)|0> = c|0> + s|1>``. Multiplying the circuit out, its final state is a linear
combination of monomials in the ``c`` and ``s`` of its data angles, with coefficients that depend on the
weights only::

    psi(x) = W phi(x),    phi_f(x) = prod_a c_a^(r_a - e_a) s_a^e_a

where angle ``a`` drives ``r_a`` rotations (re-uploading repeats the same input angle in every layer, so
``r_a`` is the number of layers) and ``f`` runs over the exponents ``0 <= e_a <= r_a``: ``prod_a (r_a + 1)``
features (81 for 4 qubits and 2 layers). ``W`` (``(*S, Dc, F)``: interleaved real rows as in
:mod:`.fused_kernels`) is built once per call and weight set by running the circuit's blocks on the
``2**(data rotations)`` products of ``I`` and ``G`` at once (each RY stage multiplies the columns by
``2**k`` signed permutations), then summing the columns that share a monomial. A call is then three steps
per sample, each a few large tensor operations that autograd differentiates: the monomials and their
Kronecker product, one GEMM ``(Dc, F) @ (F, M)``, and the readout. Samples that share their inputs across
weight sets (the q, k and v circuits of a head see the same features) share ``phi``: one GEMM with all
their sets' rows.

It applies (:func:`feature_plan`) when every data gate is an RY (on ``|0>`` in the prefix, or in a layer of
RYs on distinct wires) and the work of the GEMM, ``F * Dc``, stays under :data:`MAX_FEATURE_WORK`; other
circuits run stage by stage.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from . import fused_features_cuda as features_cuda
from .fused_executor import Executor, _rotation_matrix
from .fused_features_matrix import matrix_program, program_matrix
from .fused_kernels import complexify, ry_layer
from .fused_plan import Block, DataStage, Plan

__all__ = ["FeaturePlan", "feature_plan", "run_features", "MAX_FEATURE_WORK"]

#: largest ``F * Dc`` (features times real rows of the state) run as features: past it the GEMM's extra
#: arithmetic outweighs the passes it saves (4 qubits, 2 layers: 81 * 32 = 2,592)
MAX_FEATURE_WORK = 4096
_G = np.array([[0.0, -1.0], [1.0, 0.0]])  # -iY: RY(x) = cos(x/2) I + sin(x/2) G
#: most raw columns (products of I and G over the data rotations) ``W`` is built from
_MAX_COLUMNS = 4096


@dataclass
class FeaturePlan:
    """What :func:`run_features` needs beside the :class:`Plan`: the distinct data angles, the monomials and
    how the columns of ``W`` are built."""

    columns: tuple[int, ...]  # per distinct angle, the data column that holds it
    powers: tuple[int, ...]  # per distinct angle, how many rotations it drives (r_a)
    start: np.ndarray  # (D, C0) the prefix's columns: the states its c and s monomials multiply
    stages: list  # ("block", Block) or ("ry", wires)
    merges: list  # per RY stage: the feature of each of its 2**k * C columns (sigma * C + c)
    last: np.ndarray | None  # the feature of each column after the last stage, or None: already in order
    n_features: int
    real: bool  # every block is real: W is real (half the rows)


def feature_plan(plan: Plan, same: list[int]) -> FeaturePlan | None:
    """The feature form of ``plan``, or None where it does not apply. ``same[j]``: the first data column
    equal to column ``j`` for every input (re-uploading repeats its inputs)."""
    n = plan.n_wires
    firsts = sorted(set(same))
    angle = {j: firsts.index(same[j]) for j in range(len(same))}  # data column -> distinct angle id
    powers = [0] * len(firsts)
    prefix_ids, prefix_wires, columns = [], [], []
    for w, ops in enumerate(plan.prefix):
        v = _wire_columns(ops)
        if v is None:
            return None
        columns.append(v)
        if v.shape[1] == 2:
            prefix_wires.append(w)
            prefix_ids.append(next(angle[o.index] for o in ops if o.source == "data"))
    start = columns[0]
    for v in columns[1:]:  # rows: basis states, wire 0 most significant; columns: c or s per prefix wire
        start = np.kron(start, v)
    stages: list = []
    for stage in plan.stages:
        if isinstance(stage, Block):
            if stage.mode == "gates":
                return None
            stages.append(("block", stage))
        elif isinstance(stage, DataStage) and ry_layer(stage.ops) and all(o.source == "data" for o in stage.ops):
            stages.append(("ry", tuple(o.wires[0] for o in stage.ops), [angle[o.index] for o in stage.ops]))
        else:
            return None
    for a in prefix_ids + [a for s in stages if s[0] == "ry" for a in s[2]]:
        powers[a] += 1
    used = [a for a in range(len(firsts)) if powers[a]]
    n_features = math.prod(powers[a] + 1 for a in used)
    if not used or n_features * 2 ** (n + 1) > MAX_FEATURE_WORK:  # 2 ** (n + 1): a complex state's real rows
        return None
    stride = [0] * len(firsts)
    step = 1
    for a in reversed(used):  # mixed radix, the first angle most significant
        stride[a], step = step, step * (powers[a] + 1)
    # the feature of each column: prefix column b is basis state b on the prefix wires (first most significant)
    bits = (np.arange(2 ** len(prefix_wires))[:, None] >> (len(prefix_wires) - 1 - np.arange(len(prefix_wires)))) & 1
    feature = bits @ np.array([stride[a] for a in prefix_ids], dtype=np.int64) if prefix_wires else np.zeros(1, np.int64)
    merges = []
    for s in stages:
        if s[0] != "ry":
            continue
        k = len(s[1])
        if len(feature) << k > _MAX_COLUMNS:
            return None
        sigma = (np.arange(2**k)[:, None] >> (k - 1 - np.arange(k))[None, :]) & 1  # (2**k, k), first op most significant
        shift = sigma @ np.array([stride[a] for a in s[2]], dtype=np.int64)
        feature, merge = np.unique((shift[:, None] + feature[None, :]).reshape(-1), return_inverse=True)
        merges.append((merge.reshape(-1), len(feature)))  # the columns of one monomial summed into one
    last = None if np.array_equal(feature, np.arange(n_features)) else feature  # else: columns to features at the end
    real = bool(np.all(start.imag == 0)) and all(item.real for kind, item, *_ in stages if kind == "block")
    return FeaturePlan(tuple(firsts[a] for a in used), tuple(powers[a] for a in used), start,
                       [s[:2] for s in stages], merges, last, n_features, real)


def _wire_columns(ops) -> np.ndarray | None:
    """A wire's prefix on ``|0>`` as columns ``(2, 1)`` (no data gate) or ``(2, 2)`` (one data RY: the
    columns its ``c`` and its ``s`` multiply); None where the prefix holds another data gate."""
    v = np.array([[1.0 + 0j], [0.0]])
    for op in ops:
        if op.source == "data":
            if op.name != "RY" or v.shape[1] == 2:
                return None
            v = np.concatenate([v, _G @ v], axis=1)  # RY(x) v = c v + s G v
        elif op.source in ("fixed", "const"):
            v = _rotation_matrix(op.name, op.value) @ v
        else:
            return None
    return v


def _flips(wires: tuple[int, ...], n: int) -> tuple[np.ndarray, np.ndarray]:
    """The products of ``G = -iY`` over every subset of ``wires`` as signed permutations of the ``2**n``
    basis states: ``(G_sigma psi)[b] = sign[sigma, b] * psi[perm[sigma, b]]``, ``(2**k, 2**n)`` each."""
    k, b = len(wires), np.arange(2**n)
    perm, sign = np.empty((2**k, 2**n), dtype=np.int64), np.ones((2**k, 2**n))
    for s in range(2**k):
        mask, sg = 0, np.ones(2**n)
        for i, w in enumerate(wires):
            if (s >> (k - 1 - i)) & 1:
                bit = 1 << (n - 1 - w)
                mask |= bit
                sg *= np.where(b & bit, 1.0, -1.0)  # G|0> = |1>, G|1> = -|0>
        perm[s], sign[s] = b ^ mask, sg
    return perm, sign


def feature_matrix(fp: FeaturePlan, ex: Executor, lead: tuple[int, ...]) -> tuple[torch.Tensor, bool]:
    """``W`` ``(*lead, Dc, F)`` and whether its rows are interleaved complex; ``ex`` holds the call's weights
    (:meth:`Executor.begin`). Built in complex arithmetic on ``2**n x C`` column blocks (C <= 4,096): the
    blocks' unitaries applied to the columns, each RY stage's ``2**k`` signed permutations, and the columns
    of one monomial summed as soon as they meet (the blocks are linear)."""
    cache, n = ex.cache, ex.n
    consts = cache.get(("features", id(fp)), lambda: _constants(fp, cache, n))
    program = cache.get(("feature program", id(fp)), lambda: matrix_program(fp, ex, consts)) \
        if cache.device.type == "cpu" else None  # measured on the CPU; CUDA (graph captures) keeps autograd's build
    if program is not None and not torch.compiler.is_compiling():  # one autograd function from the blocks' one-qubit
        # matrices (fused_features_matrix); dynamo cannot trace its backward (host-side index tables): autograd there
        return program_matrix(program, ex, lead), True
    t: torch.Tensor | None = None  # None: the prefix's basis columns, (D, C0) of 0 and 1
    steps = iter(consts["steps"])
    for kind, item in fp.stages:
        if kind == "block":
            t = _apply_block(ex, item, t, consts, n)
            continue
        perm, sign, merge, width = next(steps)  # (2**k * D,), (2**k, D, 1), (2**k * C,), columns after
        if t is None:
            t = consts["start"].to(cache.cplx).expand(lead + consts["start"].shape)
        D = 2**n
        v = (t.index_select(-2, perm).unflatten(-2, (-1, D)) * sign).movedim(-3, -2)  # (*lead, D, 2**k, C)
        t = t.new_zeros(t.shape[:-2] + (D, width)).index_add_(-1, merge, v.flatten(-2))  # one column per monomial
    if t is None:
        t = consts["start"].to(cache.cplx)
    if fp.last is not None:  # columns to features (no RY stage after the prefix)
        t = t.new_zeros(t.shape[:-1] + (fp.n_features,)).index_add_(-1, consts["last"], t)
    if t.shape[:-2] != lead:
        t = t.expand(lead + t.shape[-2:])
    if consts["real"]:
        return t.real, False
    return torch.view_as_real(t).movedim(-1, -2).flatten(-3, -2), True  # rows 2d + part


def _apply_block(ex: Executor, block: Block, t: torch.Tensor | None, consts: dict, n: int) -> torch.Tensor:
    """``block`` on the columns ``t`` ``(*lead, D, C)`` (None: the prefix's columns), complex."""
    cache, start = ex.cache, consts["start"]
    if block.mode == "perm":
        gp = block.gp
        assert gp is not None
        base = start.to(cache.cplx) if t is None else t
        index = cache.get(("cperm", id(gp)), lambda: torch.as_tensor(gp.perm, device=cache.device))
        out = base.index_select(-2, index)
        if not gp.unit_phases:
            out = out * cache.get(("cphase", id(gp)), lambda: torch.as_tensor(gp.phase, dtype=cache.cplx,
                                                                               device=cache.device)).unsqueeze(-1)
        return out
    u = ex._unitary(block)  # (*S, K, K) or (K, K)
    k = len(block.support)
    if k == n:
        if t is None and consts["identity"]:  # an RY on every wire's |0>: the prefix's columns are the identity
            return u
        return u @ (start.to(cache.cplx) if t is None else t)
    base = start.to(cache.cplx) if t is None else t
    lead, C = base.shape[:-2], base.shape[-1]
    b = len(lead)
    v = base.reshape(lead + (2,) * n + (C,)).movedim([b + w for w in block.support], list(range(b, b + k)))
    rest = v.shape[b + k:]
    v = (u @ v.reshape(lead + (2**k, -1))).reshape(u.shape[:-2] + (2,) * k + rest)
    b = v.dim() - n - 1
    return v.movedim(list(range(b, b + k)), [b + w for w in block.support]).reshape(v.shape[:b] + (2**n, C))


def _constants(fp: FeaturePlan, cache, n: int) -> dict:
    start = fp.start if not fp.real else fp.start.real
    identity = start.shape == (2**n, 2**n) and np.array_equal(start, np.eye(2**n))
    steps = []
    flips = [_flips(s[1], n) for s in fp.stages if s[0] == "ry"]
    for (perm, sign), (merge, width) in zip(flips, fp.merges):
        steps.append((torch.as_tensor(perm.reshape(-1), device=cache.device),
                      torch.as_tensor(sign, dtype=cache.real, device=cache.device)[:, :, None],
                      torch.as_tensor(merge, device=cache.device), width))
    return {"start": torch.as_tensor(start, dtype=cache.real if fp.real else cache.cplx, device=cache.device),
            "steps": steps, "real": fp.real, "identity": identity, "last": None if fp.last is None else torch.as_tensor(fp.last, device=cache.device)}


def monomials(fp: FeaturePlan, x: torch.Tensor) -> torch.Tensor:
    """``phi(x)`` ``(*lead, F, M)`` from data angles ``x`` ``(*lead, n_data, M)``: per distinct angle its
    ``r + 1`` monomials ``c^(r - e) s^e``, then their Kronecker product, the first angle most significant."""
    first, n = fp.columns[0], len(fp.columns)
    if list(fp.columns) == list(range(first, first + n)):  # a run of columns (re-uploading: the first layer's)
        cols = x[..., first:first + n, :]  # a view: its backward is one copy, an index's a scatter
    else:
        cols = x[..., list(fp.columns), :]
    half = cols * 0.5
    c, s = torch.cos(half), torch.sin(half)  # (*lead, A, M)
    parts = _per_angle(fp.powers, c, s)  # (*lead, r_a + 1, M) each
    while len(parts) > 1:  # Kronecker products pairwise, first angle most significant: (m0 m1)(m2 m3), not
        # ((m0 m1) m2) m3, fewer products of the largest size forward and backward (~0.15 ms a call at M = 2,048)
        paired = [(a.unsqueeze(-2) * b.unsqueeze(-3)).flatten(-3, -2) for a, b in zip(parts[::2], parts[1::2])]
        parts = paired + parts[len(paired) * 2:]
    return parts[0]


def _per_angle(powers: tuple[int, ...], c: torch.Tensor, s: torch.Tensor) -> list[torch.Tensor]:
    """Each angle's monomials ``c^(r - e) s^e``, ``e = 0..r``: ``(*lead, r + 1, M)`` per angle."""
    if len(set(powers)) == 1:  # the usual case: every angle in every layer, one vectorized formula
        return list(_monomials(powers[0], c, s).unbind(-3))  # (*lead, A, r + 1, M) -> per angle
    return [_monomials(r, c[..., a, :], s[..., a, :]) for a, r in enumerate(powers)]


def _monomials(r: int, c: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
    """``c^(r - e) s^e`` for ``e = 0..r`` stacked on a new axis before the last."""
    cp: list[torch.Tensor] = [c]  # c^1, c^2, ...
    sp: list[torch.Tensor] = [s]
    for _ in range(r - 1):
        cp.append(cp[-1] * c)
        sp.append(sp[-1] * s)
    terms = [cp[r - 1]] + [cp[r - e - 1] * sp[e - 1] for e in range(1, r)] + [sp[r - 1]]
    return torch.stack(terms, dim=-2)


def run_features(fp: FeaturePlan, ex: Executor, x: torch.Tensor, w: torch.Tensor | None, sets: tuple[int, ...],
                 shared: int, kind: str, matrices: dict | None = None) -> torch.Tensor:
    """One call: ``x`` ``(*S', M, n_data)`` the data angles (the caller's dtype) with ``S'`` the weight sets
    ``sets`` less their last ``shared`` axes (whose sets all see the same inputs), ``w`` ``(*sets, n_weights)``
    (None only where ``matrices`` holds ``W``). Returns ``(*sets, M, n_obs)`` (on CUDA without a gradient: in
    ``x``'s dtype, from one kernel, :mod:`.fused_features_cuda`) or states ``(*sets, M, D)``, as
    :meth:`Executor.run`. ``matrices``: reused across no-grad calls."""
    if matrices is not None and "features" in matrices:
        W, cplx = matrices["features"]
    else:
        assert w is not None, "the weights are needed to build W"
        ex.begin(w, matrices)
        try:
            W, cplx = feature_matrix(fp, ex, sets)  # (*sets, Dc, F)
        finally:
            ex.end()
        if matrices is not None:
            matrices["features"] = (W, cplx)
    outer = sets[:len(sets) - shared]
    group = math.prod(sets[len(outer):])
    dc = W.shape[-2]
    W = W.reshape(outer + (group * dc, -1))  # one GEMM per set of shared inputs
    z = ex.cache.z(ex.n, ex.plan.observables, cplx)
    if kind == "expval" and features_cuda.kernel_applies(x, W):
        if matrices is not None:  # the kernel reads W's rows contiguous: made so once per fixed W
            W = matrices.get(("rows", group))
            if W is None:
                W = matrices[("rows", group)] = matrices["features"][0].reshape(outer + (group * dc, -1)).contiguous()
        out = features_cuda.features_expval(fp.columns, fp.powers, x.reshape((-1,) + x.shape[-2:]),
                                            W.reshape((-1,) + W.shape[-2:]), z, group, x.dtype)
        if out is not None:  # (S', G, M, n_obs)
            return out.reshape(sets + out.shape[-2:])
    phi = monomials(fp, x.to(W.dtype).mT)  # (*S', F, M)
    m = phi.shape[-1]
    if kind == "state":
        psi = (W @ phi).reshape(sets + (dc, m))
        if not cplx:
            psi = complexify(psi)
        return torch.view_as_complex(psi.movedim(-1, -2).unflatten(-1, (-1, 2)).contiguous())
    out = Expval.apply(W, phi, z, group)  # (*S', group, n_obs, M)
    return out.reshape(sets + out.shape[-2:]).movedim(-1, -2)


class Expval(torch.autograd.Function):
    """``<Z>`` readout of ``psi = W phi``: ``z^T psi**2`` per sample, with a backward of three GEMMs and one
    product (autograd's own would add the square's and the reshapes' nodes). ``W`` ``(*S', G * Dc, F)``,
    ``phi`` ``(*S', F, M)``, ``z`` ``(Dc, n_obs)``; returns ``(*S', G, n_obs, M)``."""

    @staticmethod
    def forward(ctx, W, phi, z, group):
        psi = W @ phi  # (*S', G * Dc, M)
        p = psi.unflatten(-2, (group, -1))
        ctx.save_for_backward(W, phi, p, z)
        return z.mT @ (p * p)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, g):
        W, phi, p, z = ctx.saved_tensors
        gpsi = (z @ (2 * g)).mul_(p).flatten(-3, -2)  # (*S', G * Dc, M): d psi**2 = 2 psi
        gW = gpsi @ phi.mT if ctx.needs_input_grad[0] else None
        gphi = W.mT @ gpsi if ctx.needs_input_grad[1] else None
        return gW, gphi, None, None
