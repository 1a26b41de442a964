"""``qelm.fused``: qelm's own exact state-vector simulator, in plain torch, built around fusion.

Why qelm writes a simulator: the general-purpose ones (PennyLane's default.qubit, Lightning, qiskit-aer)
simulate every sample gate by gate, although most gates of a qelm circuit have angles shared by the whole
batch (the variational weights, per call or per head). No library fuses by that split, so this module does.
It runs a plan from :mod:`qelm.backends.fused_plan`:

* the prefix of data rotations on ``|0...0>`` is a product state: per-wire 2-vectors and ``n - 1`` Kronecker
  products, no ``2**n`` simulation;
* each block of batch-invariant gates is one unitary per weight set, built in torch once per call (so
  autograd differentiates it), and applied to all states of its set by one matrix product, states laid out
  weight-set-major: ``(S, M, D) @ (S, D, D)``;
* data gates act per sample as ``c * psi + s * (G psi)``, ``G = -iP`` a signed permutation.

States are real tensors: ``(..., D)`` while every amplitude is real (a product of RY rotations is), then
interleaved ``(..., 2D)`` real and imaginary parts. A complex matrix product becomes one real GEMM
(``(N, 2D) @ (2D, 2D)``, or ``(N, D) @ (D, 2D)`` from a real state, half the work of a complex GEMM) and
every per-sample kernel is real arithmetic. Precision: ``dtype="complex128"`` (default; float64
arithmetic, agrees with default.qubit to ~1e-15) or ``"complex64"`` (float32, ~1e-7; about half the
memory traffic). Exact only: shots are refused (use qiskit.aer or default.qubit for sampling).
"""

from __future__ import annotations

import math

import numpy as np
import torch

from ..circuits import z_signs
from . import Backend, check_angles
from .cuda_graph import GraphPool
from .fused_plan import MAX_FUSED_WIRES, Block, GenPerm, Plan, UnsupportedGate, build_plan, genperm, local_matrix

__all__ = ["FusedBackend", "DTYPES"]

DTYPES = {"complex128": (torch.complex128, torch.float64), "complex64": (torch.complex64, torch.float32)}
_ALTERNATIVES = "'lightning.qubit' (one state at a time, no unitaries) or 'qiskit.aer' with method='matrix_product_state'"


def _available_bytes(device: torch.device) -> int:
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(free)
    from ..config import available_memory_bytes

    return available_memory_bytes()


class _Tensors:
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


# --- state kernels ---------------------------------------------------------------------------------------
# A state batch is ``t`` of shape ``(*S, Dc, M)``: weight sets first, then the amplitudes, then the M samples
# of each set last. Samples innermost make every per-wire kernel a pass over contiguous runs of M numbers
# and every block a wide GEMM ``(Dc', Dc) @ (Dc, M)``, the orientation BLAS runs fastest. ``Dc`` is ``D``
# for real states and ``2D`` for interleaved complex ones (``cplx``), amplitude-major: index ``2d + part``.
def _complexify(t: torch.Tensor) -> torch.Tensor:
    return torch.stack([t, torch.zeros_like(t)], dim=-2).flatten(-3, -2)


def _genperm(t: torch.Tensor, cplx: bool, gp: GenPerm, cache: _Tensors) -> tuple[torch.Tensor, bool]:
    """``G psi`` for a fixed generalized permutation."""
    if gp.quarter_phases and (cplx or gp.real):
        index, sign = cache.perm(gp, cplx)
        g = t.index_select(-2, index)
        return (g if sign is None else g * sign.unsqueeze(-1)), cplx
    # general phases (T gates): through a complex view, samples moved first and back
    tt = (t if cplx else _complexify(t)).movedim(-1, -2)  # (..., M, 2D)
    c = torch.view_as_complex(tt.unflatten(-1, (-1, 2)).contiguous())
    index = cache.get(("cperm", id(gp)), lambda: torch.as_tensor(gp.perm, device=cache.device))
    phase = cache.get(("cphase", id(gp)), lambda: torch.as_tensor(gp.phase, dtype=cache.cplx, device=cache.device))
    return torch.view_as_real(c.index_select(-1, index) * phase).flatten(-2).movedim(-1, -2), True


def _rotate(t: torch.Tensor, cplx: bool, gp: GenPerm, c: torch.Tensor, s: torch.Tensor, cache: _Tensors):
    """``exp(-i theta/2 P) psi = c psi + s (G psi)`` with ``G = -iP``; ``c, s`` broadcast over ``t``."""
    if not cplx and not gp.real:
        t, cplx = _complexify(t), True
    g, cplx = _genperm(t, cplx, gp, cache)
    return torch.addcmul(t * c, g, s), cplx


def _matrix_for(u: torch.Tensor, real_u: bool, cplx: bool) -> tuple[torch.Tensor, bool]:
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


def _apply_matrix(t: torch.Tensor, cplx: bool, u: torch.Tensor, real_u: bool, support: tuple[int, ...], n: int,
                  a: tuple[torch.Tensor, bool] | None = None):
    """Apply ``u`` (``(*S, K, K)`` or ``(K, K)``, on wires ``support``) to every state of ``t``: one GEMM.
    ``a``: ``_matrix_for(u, real_u, cplx)`` when the caller has it already."""
    a, out_cplx = a if a is not None else _matrix_for(u, real_u, cplx)
    k = len(support)
    if k == n:
        return a @ t, out_cplx
    # the block's wires (and the re/im part) to the front of the amplitude axes, one GEMM, back
    lead, m = t.shape[:-2], t.shape[-1]
    c_in, c_out = (2 if cplx else 1), (2 if out_cplx else 1)
    base = len(lead)
    v = t.reshape(lead + (2,) * n + (c_in, m))
    front = [base + w for w in support] + [base + n]
    v = v.movedim(front, list(range(base, base + k + 1)))  # (*S, wires of the block, part, other wires, M)
    rest = v.shape[base + k + 1: -1]
    v = a @ v.reshape(lead + (2**k * c_in, -1))
    v = v.reshape(lead + (2,) * k + (c_out,) + tuple(rest) + (m,))
    v = v.movedim(list(range(base, base + k + 1)), front)
    return v.reshape(lead + (2**n * c_out, m)), out_cplx


class _RYLayer(torch.autograd.Function):
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


def _ry_layer(ops) -> bool:
    """A data stage the RY kernel runs: only RY gates, each on its own wire."""
    wires = [o.wires[0] for o in ops]
    return all(o.name == "RY" for o in ops) and len(set(wires)) == len(wires)


class _Executor:
    """Runs a :class:`Plan` on data angles ``x`` ``(*S, n_data, M)`` and flat weights ``w`` ``(*S, n_weights)``."""

    def __init__(self, plan: Plan, cache: _Tensors) -> None:
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
            if item[0] == "layer":
                mat = layers[..., li, :, :]
                li += 1
                u = mat if u is None else mat @ u
            elif item[0] == "perm":
                gp = item[1]
                if u is None:
                    u = cache.get(("dense", id(gp)), lambda: torch.as_tensor(gp.dense(), dtype=cache.cplx, device=cache.device))
                else:
                    index = cache.get(("cperm", id(gp)), lambda: torch.as_tensor(gp.perm, device=cache.device))
                    u = u.index_select(-2, index)
                    if not gp.unit_phases:
                        u = cache.get(("cphase", id(gp)), lambda: torch.as_tensor(gp.phase, dtype=cache.cplx, device=cache.device)).unsqueeze(-1) * u
            elif item[0] == "dense":
                mat = cache.get(("dense", id(item[1])), lambda: torch.as_tensor(item[1], dtype=cache.cplx, device=cache.device))
                u = mat if u is None else mat @ u
            else:  # multi-qubit rotation: c U + s G U, one angle per block of the group
                gp = item[2]
                cs = [self._cos_sin(b.items[i][1]) for b in group]
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
        """Every layer of one-qubit gates of a group of blocks as a ``K x K`` matrix, all at once: the gates'
        2x2 matrices from their angles (one vectorized formula), each wire's chain multiplied out, then the
        Kronecker product over wires. ``(*S, nb, L, K, K)``."""
        table = spec["fixed"]  # (F + 1, 2, 2): constant gates, then the identity
        if spec["n_weight"]:
            idx = spec["weight_index"]  # (nb, G): each block's weight entries
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
        # (*S, nb, L, k, 2, 2) -> (*S, nb, L, K, K): the Kronecker product over the wires, wire 0 first.
        # Pairwise products, not one torch.prod: prod's backward looks for zeros on the host, which a CUDA
        # graph capture forbids
        out = m[..., 0, :, :]
        for j in range(1, m.shape[-3]):
            out = (out.unsqueeze(-1).unsqueeze(-3) * m[..., j, :, :].unsqueeze(-2).unsqueeze(-4)).flatten(-4, -3).flatten(-2)
        return out

    def _block(self, t, cplx, block: Block):
        if block.mode == "perm":
            return _genperm(t, cplx, block.gp, self.cache)
        if block.mode == "gates":
            for op in block.ops:
                t, cplx = self._op(t, cplx, op)
            return t, cplx
        key = (id(block), cplx)
        if key not in self.matrices:  # (*S, K, K): each set's states meet its unitary in one batched GEMM
            self.matrices[key] = _matrix_for(self._unitary(block), block.real, cplx)
        return _apply_matrix(t, cplx, None, block.real, block.support, self.n, self.matrices[key])

    def _op(self, t, cplx, op):
        """One gate on the full state (data gates; gates of blocks too wide to fuse)."""
        gp = self.cache.get(("gp", op.name, op.wires, self.n), lambda: genperm(local_matrix(op.name, len(op.wires)), op.wires, self.n))
        if op.rotation:
            c, s = self._cos_sin(op)
            t, cplx = _rotate(t, cplx, gp, c, s, self.cache)
            if op.name == "PhaseShift":  # e^{i theta/2}: multiplying by i is the generalized permutation i*I
                ident = self.cache.get(("i", self.n), lambda: GenPerm(np.arange(2**self.n), np.full(2**self.n, 1j)))
                t, cplx = _rotate(t, cplx, ident, c, s, self.cache)
            return t, cplx
        if gp is not None:
            return _genperm(t, cplx, gp, self.cache)
        block = self.cache.get(("one", op, self.n), lambda: Block([op], tuple(sorted(op.wires)), "matrix",
                                                                  items=[("dense", _local_dense(op))]))
        return _apply_matrix(t, cplx, self._unitary(block), op.real, block.support, self.n)

    # --- a call ------------------------------------------------------------------------------------
    def run(self, x: torch.Tensor, w: torch.Tensor | None, lead: tuple[int, ...], kind: str, matrices: dict | None = None):
        """``x``: data angles ``(*S, n_data, M)``; returns ``(*S, M, n_obs)`` or states ``(*S, M, D)``.
        ``matrices``: the blocks' matrices of an earlier call with the same weights (filled here)."""
        self.matrices = {} if matrices is None else matrices
        m = x.shape[-1]
        self.x = x
        half = x * 0.5
        self.cx, self.sx = torch.cos(half), torch.sin(half)
        if w is not None:
            half = w * 0.5
            self.cw, self.sw = torch.cos(half), torch.sin(half)
        self.unitaries = {}
        t, cplx = self._prefix(lead, m)
        for stage, content in self.plan.stages:
            if stage == "data" and _ry_layer(content):
                cols = self.cache.get(("cols", id(content)), lambda: torch.as_tensor([o.index for o in content], device=self.cache.device))
                half = (self.x.index_select(-2, cols) * 0.5).reshape((-1, len(content), m))
                out = _RYLayer.apply(t.reshape((-1,) + t.shape[-2:]), half, tuple(o.wires[0] for o in content), self.n)
                t = out.reshape(t.shape)
            elif stage == "data":
                for op in content:
                    t, cplx = self._op(t, cplx, op)
            else:
                t, cplx = self._block(t, cplx, content)
        self.x = self.cx = self.sx = self.cw = self.sw = self.unitaries = self.matrices = None
        if kind == "state":
            if not cplx:
                t = _complexify(t)
            return torch.view_as_complex(t.movedim(-1, -2).unflatten(-1, (-1, 2)).contiguous())
        return (self.cache.z(self.n, self.plan.observables, cplx).mT @ t.square()).movedim(-1, -2)


def _bits(n: int) -> np.ndarray:
    """(n, 2**n): the bit of wire w in basis index b (wire 0 most significant)."""
    return (np.arange(2**n)[None, :] >> (n - 1 - np.arange(n))[:, None]) & 1


def _prefix_spec(plan: Plan, cache: _Tensors) -> dict:
    """Constant tensors of a plan's prefix: wires grouped by their gate sequence, so each group's
    2-vectors come from one vectorized formula."""
    groups: dict = {}
    for w, ops in enumerate(plan.prefix):
        groups.setdefault(tuple((o.name, o.source) for o in ops), []).append(w)
    out, where = [], [None] * plan.n_wires
    for gi, (signature, wires) in enumerate(groups.items()):
        for i, w in enumerate(wires):
            where[w] = (gi, i)
        depths = []
        for d, (name, source) in enumerate(signature):
            ops = [plan.prefix[w][d] for w in wires]
            gm = None
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


def _layer_spec(group: list[Block], cache: _Tensors) -> dict:
    """Constant tensors that build every one-qubit layer of a group of fused blocks (one signature) in one
    vectorized pass; the blocks differ only in which weight entries drive their gates."""
    block = group[0]
    weighted, fixed = [], []
    chains = [item[1] for item in block.items if item[0] == "layer"]
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
                index[li, wi, d] = w_pos.get(id(op), f_pos.get(id(op)))
    fixed_m = np.stack([_rotation_matrix(o.name, o.value) for o in fixed] + [np.eye(2)]).astype(complex)
    as_c = lambda a: torch.as_tensor(a, dtype=cache.cplx, device=cache.device)  # noqa: E731
    ps = [o.name == "PhaseShift" for o in weighted]
    # the same walk over every block of the group meets its gates in the same order: their weight entries
    per_block = [[o.index for item in b.items if item[0] == "layer" for ch in item[1] for o in ch if o.source == "weight"]
                 for b in group]
    return {
        "n_layers": len(chains), "n_weight": len(weighted), "n_blocks": len(group),
        "weight_index": torch.as_tensor(per_block, dtype=torch.long, device=cache.device),
        "eye": as_c(np.eye(2)),
        "gen_w": as_c(np.stack([local_matrix(o.name, 1) for o in weighted])) if weighted else None,
        "phase_w": torch.as_tensor(ps, device=cache.device)[:, None, None] if any(ps) else None,
        "fixed": as_c(fixed_m),
        "chain": torch.as_tensor(index, device=cache.device),
    }


def _local_dense(op) -> np.ndarray:
    """A non-permutation fixed gate's matrix on its own wires in ascending order."""
    m = local_matrix(op.name, len(op.wires))
    order = np.argsort(op.wires)
    if list(order) == list(range(len(order))):
        return m
    k = len(op.wires)
    t = m.reshape((2,) * (2 * k)).transpose(list(order) + [k + i for i in order])
    return t.reshape(2**k, 2**k)


class FusedBackend(Backend):
    """``qelm.fused``: exact, autograd-differentiable, CPU or CUDA (follows the tensors); see the module."""

    name = "qelm.fused"
    supports_state = True
    traceable = True
    options = ("dtype", "cuda_graph")

    def __init__(self, shots: int | None = None, seed: int | None = None, dtype: str = "complex128",
                 cuda_graph: bool = True) -> None:
        if shots is not None:
            raise ValueError(f"backend 'qelm.fused' computes exact expectations and takes no shots (got shots={shots!r}): "
                             "for sampled estimates use backend 'qiskit.aer' or 'default.qubit' with shots")
        super().__init__(shots=None, seed=seed)
        if isinstance(dtype, torch.dtype):
            dtype = str(dtype).replace("torch.", "")
        if dtype not in DTYPES:
            raise ValueError(f"dtype={dtype!r} is invalid for backend 'qelm.fused': choose one of {', '.join(DTYPES)}")
        self.dtype = dtype
        if not isinstance(cuda_graph, bool):
            raise ValueError(f"cuda_graph={cuda_graph!r} is invalid: use True or False")
        # CUDA graphs replay a training call's kernels with one launch (qelm.backends.cuda_graph): on a GPU a
        # batch up to ~1M circuits is bound by launching a few hundred small kernels, not by the arithmetic
        # (H200: 5.2 ms eager, 0.67 ms replayed at N = 4,096). On by default; only CUDA calls that will be
        # differentiated are recorded, so CPU runs and evaluation are untouched
        self._graphs = GraphPool() if cuda_graph else None
        self._plans: dict = {}
        self._tensors: dict = {}
        self._reuse: dict = {}  # block matrices of the last no-grad call per (plan, weight shape), by weight value

    def describe(self) -> str:
        return f"{self.name} (exact, {self.dtype})"

    _transient = Backend._transient + ("_plans", "_tensors", "_reuse")  # device tensors and ids: rebuilt on demand

    # --- plans -------------------------------------------------------------------------------------
    def _plan(self, circuit, split: bool) -> Plan:
        key = (type(circuit), circuit.key, split)
        if key not in self._plans:
            layout = circuit.angle_layout() if split else tuple((False, j) for j in range(circuit.n_angles))
            if split:
                _check_layout(circuit, layout)
            try:
                self._plans[key] = build_plan(circuit, layout)
            except UnsupportedGate as e:
                raise UnsupportedGate(f"backend 'qelm.fused' cannot run gate {e} of circuit {circuit.name!r}: "
                                      "run this circuit on backend 'default.qubit' or 'lightning.qubit'") from None
        return self._plans[key]

    def _cache(self, device: torch.device) -> _Tensors:
        key = (device, self.dtype)
        if key not in self._tensors:
            cplx, real = DTYPES[self.dtype]
            self._tensors[key] = _Tensors(device, real, cplx)
        return self._tensors[key]

    def _check_memory(self, circuit, n_states: int, n_sets: int, device: torch.device) -> None:
        """Refuse, before any allocation (the plan included), a call whose states and unitaries cannot fit:
        interleaved states, about two kept per layer of the circuit for backward, and the unitaries."""
        if torch.compiler.is_compiling() or (device.type == "cuda" and torch.cuda.is_current_stream_capturing()):
            return  # checked when the model ran eagerly; neither the compiler nor a graph capture can ask
        item = torch.empty(0, dtype=DTYPES[self.dtype][1]).element_size()
        n = circuit.n_wires
        states = n_states * 2 * 2**n * item * (4 * circuit.n_layers + 6)
        unitaries = n_sets * 2 * 4 ** min(n, MAX_FUSED_WIRES) * item * 8
        plan_tables = 24 * 2**n * (4 * circuit.n_layers + 4)  # generalized permutations over all wires
        need, have = states + unitaries + plan_tables, _available_bytes(device)
        if need > have:
            raise MemoryError(
                f"circuit {circuit.name!r} on {n} wires (n_qubits={circuit.n_qubits}) needs about "
                f"{need / 2**30:.1f} GiB for {n_states} states and {n_sets} weight set(s) on backend 'qelm.fused', "
                f"more than the {have / 2**30:.1f} GiB free on {device}: use fewer qubits or a smaller batch, "
                f"or backend {_ALTERNATIVES}")

    # --- the interface -----------------------------------------------------------------------------
    def _execute(self, circuit, inputs, weights, kind, sets, batch) -> torch.Tensor:
        self._check_memory(circuit, math.prod(batch), math.prod(sets), inputs.device)
        if self._graphs is not None and GraphPool.applies(inputs, weights):
            self._plan(circuit, split=True)  # built before recording: the recorder must not see the host work
            return self._graphs((circuit.key, kind), lambda i, w: self._simulate(circuit, i, w, kind, sets, batch),
                                inputs, weights)
        return self._simulate(circuit, inputs, weights, kind, sets, batch)

    def _simulate(self, circuit, inputs, weights, kind, sets, batch) -> torch.Tensor:
        plan = self._plan(circuit, split=True)
        real = DTYPES[self.dtype][1]
        x = circuit.data_angles(inputs).to(real)  # (*batch, n_data), computed in the caller's dtype
        x = x.reshape(sets + (math.prod(batch[len(sets):]), x.shape[-1])).mT  # (*S, n_data, M): samples last
        w = weights.to(inputs.dtype).to(real).reshape(sets + (-1,))  # (*S, n_weights)
        out = _Executor(plan, self._cache(inputs.device)).run(x, w, sets, kind, self._reusable(plan, w))
        out = out.reshape(batch + out.shape[-1:])
        return out if kind == "state" else out.to(inputs.dtype)

    def _reusable(self, plan: Plan, w: torch.Tensor) -> dict | None:
        """The block matrices of the last call with these weight values, when no gradient is wanted
        (evaluation, generation: the weights do not change between calls, so neither do the unitaries);
        None (build them) when training. Keyed by value, not identity: an optimizer step changes them."""
        if torch.is_grad_enabled() and w.requires_grad or torch.compiler.is_compiling():
            return None
        key = (id(plan), tuple(w.shape), w.dtype, w.device)
        held = self._reuse.get(key)
        if held is None or not torch.equal(held[0], w):
            held = (w.detach().clone(), {})
            self._reuse[key] = held
        return held[1]

    def _angles(self, circuit, angles: torch.Tensor, kind: str) -> torch.Tensor:
        check_angles(circuit, angles)
        self._check_memory(circuit, angles.shape[0], 1, angles.device)
        plan = self._plan(circuit, split=False)  # every angle per sample: no weight block to fuse
        x = angles.to(DTYPES[self.dtype][1]).mT  # (n_angles, N)
        return _Executor(plan, self._cache(angles.device)).run(x, None, (), kind)

    def expval(self, circuit, angles: torch.Tensor) -> torch.Tensor:
        return self._angles(circuit, angles, "expval").to(angles.dtype)

    def state(self, circuit, angles: torch.Tensor) -> torch.Tensor:
        return self._angles(circuit, angles, "state")


def _check_layout(circuit, layout) -> None:
    """``circuit.angles`` must be ``data_angles`` and the weights placed as ``angle_layout`` says (checked
    once per circuit with random values: a custom circuit that overrides ``angles`` alone would be run wrong)."""
    g = torch.Generator().manual_seed(0)
    inputs = torch.rand(circuit.input_shape, generator=g, dtype=torch.float64)
    weights = torch.rand(circuit.weight_shape, generator=g, dtype=torch.float64)
    angles = circuit.angles(inputs, weights)
    data, flat = circuit.data_angles(inputs), weights.reshape(-1)
    if len(layout) != circuit.n_angles or angles.shape[-1] != circuit.n_angles:
        raise ValueError(f"circuit {circuit.name!r}: angle_layout() has {len(layout)} columns, n_angles is {circuit.n_angles}")
    built = torch.stack([flat[j] if is_w else data[j] for is_w, j in layout])
    if not torch.allclose(built, angles, atol=1e-12, rtol=0):
        raise ValueError(f"circuit {circuit.name!r}: angles() does not equal data_angles() and the weights placed by "
                         "angle_layout(); override angle_layout (and data_angles) to match, or use backend 'default.qubit'")
