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
from . import Backend, check_run_shapes
from .fused_plan import Block, GenPerm, Plan, UnsupportedGate, build_plan, genperm, local_matrix

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
        def make():
            z = z_signs(n, wires, torch.empty(0, dtype=self.real, device=self.device))
            return z.repeat_interleave(2, dim=0) if interleaved else z
        return self.get(("z", n, tuple(wires), interleaved), make)


# --- state kernels: t is (..., D) real or (..., 2D) interleaved; cplx says which ---------------------------
def _complexify(t: torch.Tensor) -> torch.Tensor:
    return torch.stack([t, torch.zeros_like(t)], dim=-1).flatten(-2)


def _genperm(t: torch.Tensor, cplx: bool, gp: GenPerm, cache: _Tensors) -> tuple[torch.Tensor, bool]:
    """``G psi`` for a fixed generalized permutation."""
    if gp.quarter_phases and (cplx or gp.real):
        index, sign = cache.perm(gp, cplx)
        g = t.index_select(-1, index)
        return (g if sign is None else g * sign), cplx
    # general phases (T gates): through a complex view
    c = torch.view_as_complex((t if cplx else _complexify(t)).unflatten(-1, (-1, 2)))
    index = cache.get(("cperm", id(gp)), lambda: torch.as_tensor(gp.perm, device=cache.device))
    phase = cache.get(("cphase", id(gp)), lambda: torch.as_tensor(gp.phase, dtype=cache.cplx, device=cache.device))
    return torch.view_as_real(c.index_select(-1, index) * phase).flatten(-2), True


def _rotate(t: torch.Tensor, cplx: bool, gp: GenPerm, c: torch.Tensor, s: torch.Tensor, cache: _Tensors):
    """``exp(-i theta/2 P) psi = c psi + s (G psi)`` with ``G = -iP``; ``c, s`` broadcast over ``t``."""
    if not cplx and not gp.real:
        t, cplx = _complexify(t), True
    g, cplx = _genperm(t, cplx, gp, cache)
    return torch.addcmul(t * c, g, s), cplx


def _apply_matrix(t: torch.Tensor, cplx: bool, u: torch.Tensor, real_u: bool, support: tuple[int, ...], n: int):
    """Apply ``u`` (``(..., K, K)``, complex, on wires ``support``) to every state of ``t``: one GEMM."""
    k = len(support)
    K = 2**k
    ut = u.mT
    if real_u:
        w, out_cplx = ut.real, cplx
        if cplx:  # the same real matrix acts on re and im: (K, K) -> interleaved (2K, 2K)
            w = (w.unsqueeze(-1).unsqueeze(-3) * torch.eye(2, dtype=w.dtype, device=w.device)[:, None, :]).flatten(-4, -3).flatten(-2)
    elif not cplx:
        w, out_cplx = torch.view_as_real(ut).flatten(-2), True  # (K, 2K): re and im of the output
    else:
        # rows (re_in, im_in), columns (re_out, im_out): [[Ur, Ui], [-Ui, Ur]] per entry, interleaved
        w = torch.stack([torch.view_as_real(ut), torch.view_as_real(ut * 1j)], dim=-3).flatten(-4, -3).flatten(-2)
        out_cplx = True
    if k == n:
        return t @ w, out_cplx
    # wires of the block to the end (before the re/im axis), one GEMM, wires back
    lead = t.shape[:-1]
    c_in, c_out = (2 if cplx else 1), (2 if out_cplx else 1)
    v = t.reshape(lead + (2,) * n + (c_in,))
    base = len(lead)
    axes = [base + w for w in support]
    v = v.movedim(axes, list(range(base + n - k, base + n)))  # (..., rest, 2^k wires, c)
    rest = v.shape[base: base + n - k]
    v = v.reshape(lead[:-1] + (-1, K * c_in))  # (*S, M * rest, K c): a set's unitary meets its samples
    v = (v @ w).reshape(lead + tuple(rest) + (2,) * k + (c_out,))
    v = v.movedim(list(range(base + n - k, base + n)), axes)
    return v.reshape(lead + (2**n * c_out,)), out_cplx


class _Executor:
    """Runs a :class:`Plan` on data angles ``x`` ``(*S, M, n_data)`` and flat weights ``w`` ``(*S, n_weights)``."""

    def __init__(self, plan: Plan, cache: _Tensors) -> None:
        self.plan, self.cache = plan, cache
        self.n = plan.n_wires

    # --- angles ------------------------------------------------------------------------------------
    def _cos_sin(self, op, sets: int) -> tuple[torch.Tensor, torch.Tensor]:
        """cos and sin of half the op's angle, shaped to broadcast over states ``(*S, M, D)``."""
        if op.source == "data":
            return self.cx[..., op.index: op.index + 1], self.sx[..., op.index: op.index + 1]
        if op.source == "weight":
            c, s = self.cw[..., op.index], self.sw[..., op.index]  # (*S,)
            return c.reshape(c.shape + (1, 1)), s.reshape(s.shape + (1, 1))
        return (torch.tensor(math.cos(op.value / 2), dtype=self.cache.real, device=self.cache.device),
                torch.tensor(math.sin(op.value / 2), dtype=self.cache.real, device=self.cache.device))

    # --- the product-state prefix ------------------------------------------------------------------
    def _wire_vector(self, ops) -> torch.Tensor:
        """One wire's 2-vector after its prefix gates on |0>: real (..., 2) or complex (..., 2)."""
        cache = self.cache
        v = torch.tensor([1.0, 0.0], dtype=cache.real, device=cache.device)
        for op in ops:
            m = cache.get(("local", op.name), lambda: torch.as_tensor(local_matrix(op.name, 1), dtype=cache.cplx, device=cache.device))
            if not op.real:
                v = v.to(cache.cplx)
            mm = m if v.is_complex() else m.real
            if op.rotation:
                c, s = self._cos_sin(op, 0)
                c, s = (c, s) if op.source == "data" else (c.reshape(()), s.reshape(()))
                gv = v @ mm.T  # G v, G = -iP (2x2)
                v = c * v + s * gv
                if op.name == "PhaseShift":  # e^{i theta/2} RZ(theta)
                    v = v * torch.complex(c, s)
            else:
                v = v @ mm.T
        return v

    def _prefix(self, lead: tuple[int, ...]) -> tuple[torch.Tensor, bool]:
        vectors = [self._wire_vector(ops) for ops in self.plan.prefix]
        st = vectors[0]
        for v in vectors[1:]:
            st = (st.unsqueeze(-1) * v.unsqueeze(-2)).flatten(-2)
        cplx = st.is_complex()
        if cplx:
            st = torch.view_as_real(st).flatten(-2)
        return st.expand(lead + st.shape[-1:]), cplx

    # --- blocks ------------------------------------------------------------------------------------
    def _unitary(self, block: Block) -> torch.Tensor:
        """The block's unitary on its support, ``(*S, K, K)`` (or ``(K, K)`` without weights)."""
        if not block.uses_weights:
            return self.cache.get(("u", id(block)), lambda: self._build_unitary(block))
        return self._build_unitary(block)

    def _build_unitary(self, block: Block) -> torch.Tensor:
        cache = self.cache
        k = len(block.support)
        K = 2**k
        eye2 = torch.eye(2, dtype=cache.cplx, device=cache.device)
        u = None

        def left(m, u):
            return m if u is None else m @ u

        for item in block.items:
            if item[0] == "layer":
                u = left(self._layer(item[1], eye2), u)
            elif item[0] == "perm":
                gp = item[1]
                if u is None:
                    u = cache.get(("dense", id(gp)), lambda: torch.as_tensor(gp.dense(), dtype=cache.cplx, device=cache.device))
                else:
                    index = cache.get(("cperm", id(gp)), lambda: torch.as_tensor(gp.perm, device=cache.device))
                    phase = cache.get(("cphase", id(gp)), lambda: torch.as_tensor(gp.phase, dtype=cache.cplx, device=cache.device))
                    u = phase.unsqueeze(-1) * u.index_select(-2, index)
            elif item[0] == "dense":
                m = cache.get(("dense", id(item[1])), lambda: torch.as_tensor(item[1], dtype=cache.cplx, device=cache.device))
                u = left(m, u)
            else:  # multi-qubit rotation: c U + s G U
                op, gp = item[1], item[2]
                c, s = self._cos_sin(op, 1)
                c, s = (c.reshape(c.shape[:-1] + (1,)), s.reshape(s.shape[:-1] + (1,))) if op.source == "weight" else (c, s)
                g = cache.get(("dense", id(gp)), lambda: torch.as_tensor(gp.dense(), dtype=cache.cplx, device=cache.device))
                cur = torch.eye(K, dtype=cache.cplx, device=cache.device) if u is None else u
                u = c * cur + s * (g @ cur)
        if u is None:
            u = torch.eye(K, dtype=cache.cplx, device=cache.device)
        return u

    def _layer(self, chains, eye2) -> torch.Tensor:
        """Kronecker product over the block's wires of each wire's chain of one-qubit gates."""
        factors = []
        for chain in chains:
            m = eye2
            for op in chain:
                g = self.cache.get(("local", op.name), lambda: torch.as_tensor(local_matrix(op.name, 1), dtype=self.cache.cplx, device=self.cache.device))
                if op.rotation:
                    c, s = self._cos_sin(op, 1)
                    if op.source == "weight":
                        c, s = c.reshape(c.shape[:-2] + (1, 1)), s.reshape(s.shape[:-2] + (1, 1))
                    r = c * eye2 + s * g
                    if op.name == "PhaseShift":
                        r = r * torch.complex(c, s)
                    m = r @ m
                else:
                    m = g @ m
            factors.append(m)
        out = factors[0]
        for f in factors[1:]:
            out = (out.unsqueeze(-1).unsqueeze(-3) * f.unsqueeze(-2).unsqueeze(-4)).flatten(-4, -3).flatten(-2)
        return out

    def _block(self, t, cplx, block: Block, sets: int):
        cache = self.cache
        if block.mode == "perm":
            return _genperm(t, cplx, block.gp, cache)
        if block.mode == "gates":
            for op in block.ops:
                t, cplx = self._op(t, cplx, op, sets)
            return t, cplx
        u = self._unitary(block)  # (*S, K, K): states (*S, M, D) meet their set's unitary in one batched GEMM
        return _apply_matrix(t, cplx, u, block.real, block.support, self.n)

    def _op(self, t, cplx, op, sets: int):
        """One gate on the full state (data gates; gates of blocks too wide to fuse)."""
        gp = self.cache.get(("gp", op.name, op.wires, self.n), lambda: genperm(local_matrix(op.name, len(op.wires)), op.wires, self.n))
        if op.rotation:
            c, s = self._cos_sin(op, sets)
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
    def run(self, x: torch.Tensor | None, w: torch.Tensor | None, lead: tuple[int, ...], sets: int, kind: str):
        if x is not None:
            half = x * 0.5
            self.cx, self.sx = torch.cos(half), torch.sin(half)
        if w is not None:
            half = w * 0.5
            self.cw, self.sw = torch.cos(half), torch.sin(half)
        t, cplx = self._prefix(lead)
        for stage, content in self.plan.stages:
            if stage == "data":
                for op in content:
                    t, cplx = self._op(t, cplx, op, sets)
            else:
                t, cplx = self._block(t, cplx, content, sets)
        self.cx = self.sx = self.cw = self.sw = None
        if kind == "state":
            if not cplx:
                t = _complexify(t)
            return torch.view_as_complex(t.unflatten(-1, (-1, 2)).contiguous())
        return t.square() @ self.cache.z(self.n, self.plan.observables, cplx)


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
    options = ("dtype",)

    def __init__(self, shots: int | None = None, seed: int | None = None, dtype: str = "complex128") -> None:
        if shots is not None:
            raise ValueError(f"backend 'qelm.fused' computes exact expectations and takes no shots (got shots={shots!r}): "
                             "for sampled estimates use backend 'qiskit.aer' or 'default.qubit' with shots")
        super().__init__(shots=None, seed=seed)
        if isinstance(dtype, torch.dtype):
            dtype = str(dtype).replace("torch.", "")
        if dtype not in DTYPES:
            raise ValueError(f"dtype={dtype!r} is invalid for backend 'qelm.fused': choose one of {', '.join(DTYPES)}")
        self.dtype = dtype
        self._plans: dict = {}
        self._tensors: dict = {}

    def describe(self) -> str:
        return f"{self.name} (exact, {self.dtype})"

    def __getstate__(self):  # caches hold device tensors and ids; rebuilt on demand
        return {**self.__dict__, "_plans": {}, "_tensors": {}}

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

    def _check_memory(self, circuit, plan: Plan, n_states: int, n_sets: int, device: torch.device) -> None:
        """Refuse, before any allocation, a call whose states and unitaries cannot fit."""
        item = torch.empty(0, dtype=DTYPES[self.dtype][1]).element_size()
        widest = max((len(b.support) for s, b in plan.stages if s == "block" and b.mode == "matrix"), default=0)
        states = n_states * 2 * 2**plan.n_wires * item * (2 * len(plan.stages) + 4)  # kept for backward
        unitaries = n_sets * 2 * 4**widest * item * 8
        need, have = states + unitaries, _available_bytes(device)
        if need > have:
            raise MemoryError(
                f"circuit {circuit.name!r} on {plan.n_wires} wires (n_qubits={circuit.n_qubits}) needs about "
                f"{need / 2**30:.1f} GiB for {n_states} states and {n_sets} weight set(s) on backend 'qelm.fused', "
                f"more than the {have / 2**30:.1f} GiB free on {device}: use fewer qubits or a smaller batch, "
                f"or backend {_ALTERNATIVES}")

    # --- the interface -----------------------------------------------------------------------------
    def run(self, circuit, inputs: torch.Tensor, weights: torch.Tensor, kind: str = "expval") -> torch.Tensor:
        sets, batch = check_run_shapes(circuit, inputs, weights, kind)
        plan = self._plan(circuit, split=True)
        real = DTYPES[self.dtype][1]
        n_sets = math.prod(sets)
        x = circuit.data_angles(inputs).to(real)  # (*batch, n_data), computed in the caller's dtype
        x = x.reshape(sets + (math.prod(batch[len(sets):]), x.shape[-1]))  # (*S, M, n_data)
        w = weights.to(inputs.dtype).to(real).reshape(sets + (-1,))  # (*S, n_weights)
        self._check_memory(circuit, plan, x.shape[:-1].numel(), n_sets, inputs.device)
        out = _Executor(plan, self._cache(inputs.device)).run(x, w, tuple(x.shape[:-1]), len(sets), kind)
        out = out.reshape(batch + out.shape[-1:])
        return out if kind == "state" else out.to(inputs.dtype)

    def _angles(self, circuit, angles: torch.Tensor, kind: str) -> torch.Tensor:
        if angles.dim() != 2 or angles.shape[-1] != circuit.n_angles:
            raise ValueError(f"angles must be (N, {circuit.n_angles}) for circuit {circuit.name!r}, got {tuple(angles.shape)}")
        plan = self._plan(circuit, split=False)  # every angle per sample: no weight block to fuse
        self._check_memory(circuit, plan, angles.shape[0], 1, angles.device)
        x = angles.to(DTYPES[self.dtype][1])
        return _Executor(plan, self._cache(angles.device)).run(x, None, (angles.shape[0],), 0, kind)

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
