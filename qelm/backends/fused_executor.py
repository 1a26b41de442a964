"""The executor of :mod:`qelm.backends.fused`: one call of a :class:`~qelm.backends.fused_plan.Plan` on a
batch (the product-state prefix, the blocks' unitaries built once per call and weight set, the data
stages), and the constant tensors each part of a plan needs, made once per device and dtype."""

from __future__ import annotations

import math

import numpy as np
import torch

from .fused_kernels import Tensors, apply_matrix, complexify, genperm_apply, matrix_for, rotate, ry_layer
from .fused_plan import Block, DataStage, DenseMatrix, GenPerm, Layer, Op, Permute, Plan, Rotate, genperm, local_matrix
from .fused_ry_cuda import ry_layer_apply

__all__ = ["Executor"]


class Executor:
    """Runs a :class:`Plan` on data angles ``x`` ``(*S, n_data, M)`` and flat weights ``w`` ``(*S, n_weights)``."""

    # the tensors of the call in progress (:meth:`run` sets them and lets them go at its end)
    x: torch.Tensor
    cx: torch.Tensor
    sx: torch.Tensor
    w: torch.Tensor | None
    cw: torch.Tensor
    sw: torch.Tensor
    unitaries: dict[int, torch.Tensor]
    matrices: dict[tuple[int, bool], tuple[torch.Tensor, bool]]

    def __init__(self, plan: Plan, cache: Tensors) -> None:
        self.plan, self.cache = plan, cache
        self.n = plan.n_wires

    # --- angles ------------------------------------------------------------------------------------
    def _cos_sin(self, op) -> tuple[torch.Tensor, torch.Tensor]:
        """cos and sin of half the op's angle, shaped to broadcast over states ``(*S, Dc, M)``."""
        if op.source == "data":
            return self.cx[..., op.index: op.index + 1, :], self.sx[..., op.index: op.index + 1, :]
        if op.source == "weight":
            c, s = self.cw[..., op.index], self.sw[..., op.index]  # (*S,)
            return c.reshape(c.shape + (1, 1)), s.reshape(s.shape + (1, 1))
        return (torch.tensor(math.cos(op.value / 2), dtype=self.cache.real, device=self.cache.device),
                torch.tensor(math.sin(op.value / 2), dtype=self.cache.real, device=self.cache.device))

    # --- the product-state prefix ------------------------------------------------------------------
    def _prefix(self, lead: tuple[int, ...], m: int) -> tuple[torch.Tensor, bool]:
        """The state after the prefix: per-wire 2-vectors ``(..., 2, M)``, computed for each group of wires
        with the same gates by one vectorized formula, then their Kronecker product ``(..., D, M)``."""
        cache = self.cache
        spec = cache.get(("prefix", id(self.plan)), lambda: _prefix_spec(self.plan, cache))
        parts = []
        for group in spec["groups"]:
            v = None  # None: |0>
            for name, source, cols, gm in group["depths"]:
                if source in ("fixed", "const"):
                    mat = gm[0] if source == "const" else gm  # (2, 2) or per wire (g, 2, 2)
                    if v is not None and v.is_complex() != mat.is_complex():
                        v, mat = v.to(cache.cplx), mat.to(cache.cplx)
                    v = mat[..., :, 0:1] if v is None else mat @ v  # (g?, 2, 1) or (..., g, 2, M)
                    continue
                c, s = self.cx[..., cols, :].unsqueeze(-2), self.sx[..., cols, :].unsqueeze(-2)  # (..., g, 1, M)
                g = spec["gen"][name]  # -iP, (2, 2)
                if v is not None and v.is_complex() != g.is_complex():
                    v, g = v.to(cache.cplx), g.to(cache.cplx)
                if v is None:
                    v = c * spec["e0"].to(g.dtype) + s * g[:, 0:1]
                else:
                    v = c * v + s * (g @ v)
                if name == "PhaseShift":
                    v = v * torch.complex(c, s)
            parts.append(v)
        cplx = any(p is not None and p.is_complex() for p in parts)
        dtype = cache.cplx if cplx else cache.real
        # a group's (..., g, 2, M) vectors, or one (2, 1) vector shared by the group (a fixed first gate)
        wires = [spec["e0"] if parts[gi] is None else parts[gi] if parts[gi].dim() == 2 else parts[gi][..., i, :, :]
                 for gi, i in spec["where"]]
        st = wires[0].to(dtype)
        for v in wires[1:]:  # Kronecker product, wire 0 the most significant bit
            st = (st.unsqueeze(-2) * v.to(dtype).unsqueeze(-3)).flatten(-3, -2)
        if cplx:
            st = torch.view_as_real(st.movedim(-1, -2)).flatten(-2).movedim(-1, -2)  # (..., 2D, M)
        return st.expand(lead + (st.shape[-2], m)), cplx

    # --- blocks ------------------------------------------------------------------------------------
    def _unitary(self, block: Block) -> torch.Tensor:
        """The block's unitary on its support, ``(*S, K, K)`` (or ``(K, K)`` without weights). Blocks of
        one signature are built together, once per call."""
        if not block.uses_weights:
            return self.cache.get(("u", id(block)), lambda: self._build_unitaries([block])[..., 0, :, :])
        if id(block) not in self.unitaries:
            group = next(g for g in self.plan.groups if any(b is block for b in g))
            built = self._build_unitaries(group)  # (*S, len(group), K, K)
            for j, b in enumerate(group):
                self.unitaries[id(b)] = built[..., j, :, :]
        return self.unitaries[id(block)]

    def _build_unitaries(self, group: list[Block]) -> torch.Tensor:
        """The unitaries of blocks with one signature, ``(*S, nb, K, K)``: their items walked once, every
        tensor carrying the blocks along one axis."""
        cache = self.cache
        first = group[0]
        K = 2 ** len(first.support)
        spec = cache.get(("layers", tuple(id(b) for b in group)), lambda: _layer_spec(group, cache))
        layers = self._layers(spec) if spec["n_layers"] else None  # (*S, nb, L, K, K)
        u, li = None, 0
        for i, item in enumerate(first.items):
            if isinstance(item, Layer):
                assert layers is not None
                mat = layers[..., li, :, :]
                li += 1
                u = mat if u is None else mat @ u
            elif isinstance(item, Permute):
                gp = item.gp
                if u is None:
                    u = cache.get(("dense", id(gp)), lambda: torch.as_tensor(gp.dense(), dtype=cache.cplx, device=cache.device))
                else:
                    index = cache.get(("cperm", id(gp)), lambda: torch.as_tensor(gp.perm, device=cache.device))
                    u = u.index_select(-2, index)
                    if not gp.unit_phases:
                        u = cache.get(("cphase", id(gp)), lambda: torch.as_tensor(gp.phase, dtype=cache.cplx, device=cache.device)).unsqueeze(-1) * u
            elif isinstance(item, DenseMatrix):
                matrix = item.matrix
                mat = cache.get(("dense", id(matrix)), lambda: torch.as_tensor(matrix, dtype=cache.cplx, device=cache.device))
                u = mat if u is None else mat @ u
            else:  # multi-qubit rotation: c U + s G U, one angle per block of the group
                gp = item.gp
                cs = [self._cos_sin(_rotation(b, i)) for b in group]
                c = torch.stack([x[0].reshape(x[0].shape[:-2]) for x in cs], -1)[..., None, None]  # (*S, nb, 1, 1)
                s = torch.stack([x[1].reshape(x[1].shape[:-2]) for x in cs], -1)[..., None, None]
                g = cache.get(("dense", id(gp)), lambda: torch.as_tensor(gp.dense(), dtype=cache.cplx, device=cache.device))
                cur = torch.eye(K, dtype=cache.cplx, device=cache.device) if u is None else u
                u = c * cur + s * (g @ cur)
        if u is None:
            u = torch.eye(K, dtype=cache.cplx, device=cache.device)
        if u.dim() == 2:  # fixed gates only: the same for every block
            u = u.expand((len(group), K, K))
        return u

    def _layers(self, spec) -> torch.Tensor:
        """Every layer of one-qubit gates of a group of blocks as a ``K x K`` matrix, all at once: the
        Kronecker product over wires of :meth:`_chains`. ``(*S, nb, L, K, K)``."""
        m = self._chains(spec)
        # Pairwise products, not one torch.prod: prod's backward looks for zeros on the host, which a CUDA
        # graph capture forbids
        out = m[..., 0, :, :]
        for j in range(1, m.shape[-3]):
            out = (out.unsqueeze(-1).unsqueeze(-3) * m[..., j, :, :].unsqueeze(-2).unsqueeze(-4)).flatten(-4, -3).flatten(-2)
        return out

    def chain_matrices(self, group: list[Block]) -> torch.Tensor:
        """The one-qubit matrices of every layer of a group of blocks with weights, ``(*S, nb, L, k, 2, 2)``."""
        return self._chains(self.layer_spec(group))

    def layer_spec(self, group: list[Block]) -> dict:
        """The constant tensors :meth:`chain_matrices` builds a group's matrices from (made once)."""
        cache = self.cache
        return cache.get(("layers", tuple(id(b) for b in group)), lambda: _layer_spec(group, cache))

    def _chains(self, spec) -> torch.Tensor:
        """Each wire's one-qubit gates in every layer of a group of blocks multiplied out: the gates' 2x2
        matrices from their angles (one vectorized formula), then the chains. ``(*S, nb, L, k, 2, 2)``."""
        table = spec["fixed"]  # (F + 1, 2, 2): constant gates, then the identity
        if spec["n_weight"]:
            idx = spec["weight_index"]  # (nb, G): each block's weight entries
            if spec["weight_run"] is not None:  # a run of entries, block after block: a view, not a gather
                a, b = spec["weight_run"]
                c = self.cw[..., a:b].unflatten(-1, idx.shape)[..., None, None]  # (*S, nb, G, 1, 1)
                s = self.sw[..., a:b].unflatten(-1, idx.shape)[..., None, None]
            else:
                c, s = self.cw[..., idx, None, None], self.sw[..., idx, None, None]  # (*S, nb, G, 1, 1)
            mats = c * spec["eye"] + s * spec["gen_w"]  # (*S, nb, G, 2, 2)
            if spec["phase_w"] is not None:  # PhaseShift = e^{i theta/2} RZ
                mats = mats * torch.where(spec["phase_w"], torch.complex(c, s), torch.ones_like(c, dtype=mats.dtype))
            table = torch.cat([mats, table.expand(mats.shape[:-3] + table.shape)], dim=-3)
        else:
            table = table.expand((spec["n_blocks"],) + table.shape)
        t = table[..., spec["chain"], :, :]  # (*S, nb, L, k, C, 2, 2)
        m = t[..., 0, :, :]
        for j in range(1, t.shape[-3]):  # later gates act after earlier ones
            m = t[..., j, :, :] @ m
        return m

    def _block(self, t, cplx, block: Block):
        if block.mode == "perm":
            assert block.gp is not None  # a "perm" block has its permutation
            return genperm_apply(t, cplx, block.gp, self.cache)
        if block.mode == "gates":
            for op in block.ops:
                t, cplx = self._op(t, cplx, op)
            return t, cplx
        key = (id(block), cplx)
        if key not in self.matrices:  # (*S, K, K): each set's states meet its unitary in one batched GEMM
            self.matrices[key] = matrix_for(self._unitary(block), block.real, cplx)
        return apply_matrix(t, cplx, None, block.real, block.support, self.n, self.matrices[key])

    def _op(self, t, cplx, op):
        """One gate on the full state (data gates; gates of blocks too wide to fuse)."""
        gp = self.cache.get(("gp", op.name, op.wires, self.n), lambda: genperm(local_matrix(op.name, len(op.wires)), op.wires, self.n))
        if op.rotation:
            c, s = self._cos_sin(op)
            t, cplx = rotate(t, cplx, gp, c, s, self.cache)
            if op.name == "PhaseShift":  # e^{i theta/2}: multiplying by i is the generalized permutation i*I
                ident = self.cache.get(("i", self.n), lambda: GenPerm(np.arange(2**self.n), np.full(2**self.n, 1j)))
                t, cplx = rotate(t, cplx, ident, c, s, self.cache)
            return t, cplx
        if gp is not None:
            return genperm_apply(t, cplx, gp, self.cache)
        block = self.cache.get(("one", op, self.n), lambda: Block([op], tuple(sorted(op.wires)), "matrix",
                                                                  items=[DenseMatrix(_local_dense(op))]))
        return apply_matrix(t, cplx, self._unitary(block), op.real, block.support, self.n)

    # --- a call ------------------------------------------------------------------------------------
    def begin(self, w: torch.Tensor | None, matrices: dict | None = None) -> None:
        """Hold a call's weights (their half-angle cosines and sines) for the blocks; :meth:`end` lets go."""
        self.matrices = {} if matrices is None else matrices
        self.w = w
        if w is not None:
            half = w * 0.5
            self.cw, self.sw = torch.cos(half), torch.sin(half)
        self.unitaries = {}

    def end(self) -> None:
        for name in ("x", "cx", "sx", "w", "cw", "sw", "unitaries", "matrices"):
            setattr(self, name, None)  # the call's tensors are not kept past it

    def run(self, x: torch.Tensor, w: torch.Tensor | None, lead: tuple[int, ...], kind: str, matrices: dict | None = None):
        """``x``: data angles ``(*S, n_data, M)``; returns ``(*S, M, n_obs)`` or states ``(*S, M, D)``.
        ``matrices``: the blocks' matrices of an earlier call with the same weights (filled here)."""
        self.begin(w, matrices)
        m = x.shape[-1]
        self.x = x
        half = x * 0.5
        self.cx, self.sx = torch.cos(half), torch.sin(half)
        t, cplx = self._prefix(lead, m)
        for stage in self.plan.stages:
            if isinstance(stage, DataStage) and ry_layer(stage.ops):
                ops = stage.ops
                cols = self.cache.get(("cols", id(ops)), lambda: torch.as_tensor([o.index for o in ops], device=self.cache.device))
                half = (self.x.index_select(-2, cols) * 0.5).reshape((-1, len(ops), m))
                out = ry_layer_apply(t.reshape((-1,) + t.shape[-2:]), half, tuple(o.wires[0] for o in ops), self.n)
                t = out.reshape(t.shape)
            elif isinstance(stage, DataStage):
                for op in stage.ops:
                    t, cplx = self._op(t, cplx, op)
            else:
                t, cplx = self._block(t, cplx, stage)
        self.end()
        if kind == "state":
            if not cplx:
                t = complexify(t)
            return torch.view_as_complex(t.movedim(-1, -2).unflatten(-1, (-1, 2)).contiguous())
        return (self.cache.z(self.n, self.plan.observables, cplx).mT @ t.square()).movedim(-1, -2)


def _bits(n: int) -> np.ndarray:
    """(n, 2**n): the bit of wire w in basis index b (wire 0 most significant)."""
    return (np.arange(2**n)[None, :] >> (n - 1 - np.arange(n))[:, None]) & 1


def _prefix_spec(plan: Plan, cache: Tensors) -> dict:
    """Constant tensors of a plan's prefix: wires grouped by their gate sequence, so each group's
    2-vectors come from one vectorized formula."""
    groups: dict[tuple[tuple[str, str], ...], list[int]] = {}
    for w, ops in enumerate(plan.prefix):
        groups.setdefault(tuple((o.name, o.source) for o in ops), []).append(w)
    out: list[dict] = []
    where: list[tuple[int, int] | None] = [None] * plan.n_wires
    for gi, (signature, wires) in enumerate(groups.items()):
        for i, w in enumerate(wires):
            where[w] = (gi, i)
        depths = []
        for d, (name, source) in enumerate(signature):
            ops = [plan.prefix[w][d] for w in wires]
            gm: torch.Tensor | tuple[torch.Tensor] | None = None
            if source == "fixed":
                gm = torch.as_tensor(local_matrix(name, 1), dtype=cache.cplx, device=cache.device)
                gm = gm if not ops[0].real else gm.real
            elif source == "const":
                m = np.stack([_rotation_matrix(o.name, o.value) for o in ops])  # (g, 2, 2)
                real = all(o.real for o in ops)
                gm = (torch.as_tensor(m.real if real else m, dtype=cache.real if real else cache.cplx, device=cache.device),)
            cols = torch.as_tensor([o.index for o in ops], device=cache.device)
            depths.append((name, source, cols, gm))
        out.append({"depths": depths})
    gen = {}
    for ops in plan.prefix:
        for o in ops:
            if o.rotation:
                g = torch.as_tensor(local_matrix(o.name, 1), dtype=cache.cplx, device=cache.device)
                gen[o.name] = g.real if o.real else g
    return {"groups": out, "gen": gen, "where": where,
            "e0": torch.tensor([[1.0], [0.0]], dtype=cache.real, device=cache.device)}


def _rotation_matrix(name: str, theta: float) -> np.ndarray:
    """The 2x2 matrix of a one-qubit gate with a constant angle (or a fixed gate)."""
    g = local_matrix(name, 1)
    if name not in ("RX", "RY", "RZ", "PhaseShift"):
        return g
    m = math.cos(theta / 2) * np.eye(2) + math.sin(theta / 2) * g
    return m * np.exp(0.5j * theta) if name == "PhaseShift" else m


def _layer_spec(group: list[Block], cache: Tensors) -> dict:
    """Constant tensors that build every one-qubit layer of a group of fused blocks (one signature) in one
    vectorized pass; the blocks differ only in which weight entries drive their gates."""
    block = group[0]
    weighted: list[Op] = []
    fixed: list[Op] = []
    chains = [item.chains for item in block.items if isinstance(item, Layer)]
    for layer in chains:
        for chain in layer:
            for op in chain:
                (weighted if op.source == "weight" else fixed).append(op)
    w_pos = {id(o): i for i, o in enumerate(weighted)}
    f_pos = {id(o): len(weighted) + i for i, o in enumerate(fixed)}
    identity = len(weighted) + len(fixed)
    k = len(block.support)
    depth = max((len(ch) for layer in chains for ch in layer), default=1) or 1
    index = np.full((len(chains), k, depth), identity, dtype=np.int64)
    for li, layer in enumerate(chains):
        for wi, chain in enumerate(layer):
            for d, op in enumerate(chain):
                index[li, wi, d] = w_pos[id(op)] if id(op) in w_pos else f_pos[id(op)]
    fixed_m = np.stack([_rotation_matrix(o.name, o.value) for o in fixed] + [np.eye(2)]).astype(complex)
    as_c = lambda a: torch.as_tensor(a, dtype=cache.cplx, device=cache.device)  # noqa: E731
    ps = [o.name == "PhaseShift" for o in weighted]
    # the same walk over every block of the group meets its gates in the same order: their weight entries
    per_block = [[o.index for item in b.items if isinstance(item, Layer) for ch in item.chains for o in ch if o.source == "weight"]
                 for b in group]
    flat = np.asarray(per_block, dtype=np.int64).reshape(-1)
    run = (int(flat[0]), int(flat[0]) + flat.size) if flat.size and np.array_equal(flat, flat[0] + np.arange(flat.size)) else None
    return {
        "n_layers": len(chains), "n_weight": len(weighted), "n_blocks": len(group), "weight_run": run,
        "weight_index": torch.as_tensor(per_block, dtype=torch.long, device=cache.device),
        "eye": as_c(np.eye(2)),
        "gen_w": as_c(np.stack([local_matrix(o.name, 1) for o in weighted])) if weighted else None,
        "phase_w": torch.as_tensor(ps, device=cache.device)[:, None, None] if any(ps) else None,
        "fixed": as_c(fixed_m),
        "chain": torch.as_tensor(index, device=cache.device),
    }


def _rotation(block: Block, i: int):
    """The gate of the rotation that is item ``i`` of ``block``."""
    item = block.items[i]
    assert isinstance(item, Rotate)
    return item.op


def _local_dense(op) -> np.ndarray:
    """A non-permutation fixed gate's matrix on its own wires in ascending order."""
    m = local_matrix(op.name, len(op.wires))
    order = np.argsort(op.wires)
    if list(order) == list(range(len(order))):
        return m
    k = len(op.wires)
    t = m.reshape((2,) * (2 * k)).transpose(list(order) + [k + i for i in order])
    return t.reshape(2**k, 2**k)
