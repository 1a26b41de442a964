"""The static plan that :mod:`qelm.backends.fused` executes: one circuit structure cut into a product-state
prefix, per-sample data stages and batch-invariant blocks.

A circuit's gate list (:func:`qelm.backends.gates.gate_list`) is read once. Each gate angle is a column of
the angle vector, and :meth:`qelm.circuits.Circuit.angle_layout` says whether that column is a data angle
(different for every sample) or a weight (shared by every sample of one weight set). Then:

* **prefix**: on each wire, the data, constant and fixed one-qubit gates that come before anything else
  touches the wire commute with everything earlier, so they act on ``|0>`` of that wire alone: the state
  after them is a Kronecker product of per-wire 2-vectors (``n`` small vectors, not a ``2**n`` simulation);
* **blocks**: maximal runs of batch-invariant gates (weights, constants, fixed gates). A block on ``k``
  wires is one ``2**k x 2**k`` unitary, built once per weight set and call, applied to all states by one
  matrix product. Fixed-gate-only blocks that permute basis states (CNOT, SWAP, CSWAP, ...) are one
  gather; blocks too wide to fuse are applied gate by gate;
* **data stages**: the per-sample gates between blocks. A data gate moves back past a block that does not
  touch its wires (they commute), which keeps blocks long.

Every rotation is ``exp(-i theta/2 P) = cos(theta/2) I + sin(theta/2) (-i P)`` for a Pauli string ``P``,
and ``-i P``, like every fixed permutation gate, is a *generalized permutation*: ``(G psi)[r] =
phase[r] * psi[perm[r]]`` with phases in {+-1, +-i} (:class:`GenPerm`). That is what lets the executor
work in real arithmetic on interleaved (re, im) states.

Wire 0 is the most significant bit of a basis index (PennyLane's convention).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache

import numpy as np
import pennylane as qml

from .gates import FIXED, ROTATIONS, gate_list

__all__ = ["Op", "GenPerm", "Layer", "Permute", "DenseMatrix", "Rotate", "BlockItem", "Block", "DataStage", "Stage",
           "Plan", "build_plan", "state_passes", "MAX_FUSED_WIRES", "UnsupportedGate"]

#: widest block fused into one unitary (2**10 x 2**10 complex: 16 MiB per weight set in complex128)
MAX_FUSED_WIRES = 10
#: a block is fused when 2**k <= this x its gate count: one GEMM beats that many elementwise passes
_FUSE_RATIO = 32

_PAULI = {"X": np.array([[0, 1], [1, 0]], dtype=complex), "Y": np.array([[0, -1j], [1j, 0]]),
          "Z": np.array([[1, 0], [0, -1]], dtype=complex)}
#: Pauli string of each rotation's generator: R(theta) = exp(-i theta/2 P); PhaseShift = e^{i theta/2} RZ
_GENERATOR = {"RX": "X", "RY": "Y", "RZ": "Z", "PhaseShift": "Z", "IsingXX": "XX", "IsingYY": "YY", "IsingZZ": "ZZ"}
#: gates whose matrices are real (a real state stays real under them)
_REAL = frozenset({"RY", "PauliX", "PauliZ", "Hadamard", "CNOT", "CZ", "SWAP", "CSWAP", "Toffoli"})


class UnsupportedGate(ValueError):
    """A circuit uses a gate the fused simulator has no kernel for."""


@dataclass(frozen=True)
class Op:
    """One gate of the plan. ``source``: "fixed" (no angle), "const" (``value``), "weight" (entry ``index``
    of the flat weights) or "data" (column ``index`` of the data angles)."""

    name: str
    wires: tuple[int, ...]
    source: str
    index: int = -1
    value: float = 0.0

    @property
    def rotation(self) -> bool:
        return self.name in ROTATIONS

    @property
    def real(self) -> bool:
        return self.name in _REAL


@lru_cache(maxsize=None)
def local_matrix(name: str, k: int) -> np.ndarray:
    """The ``2**k`` matrix of a fixed gate, or ``-i P`` (the rotation's generator term) of a rotation."""
    if name in _GENERATOR:
        m = np.array([[1.0 + 0j]])
        for p in _GENERATOR[name]:
            m = np.kron(m, _PAULI[p])
        return -1j * m
    if name not in FIXED:
        raise UnsupportedGate(name)
    if name.startswith("Adjoint("):
        op = qml.adjoint(getattr(qml, name[len("Adjoint("):-1])(wires=0))
    else:
        op = getattr(qml, name)(wires=range(k))
    return np.asarray(qml.matrix(op, wire_order=range(k)), dtype=complex)


@dataclass(frozen=True)
class GenPerm:
    """A generalized permutation of basis states: ``(G psi)[r] = phase[r] * psi[perm[r]]``."""

    perm: np.ndarray  # (D,) int64
    phase: np.ndarray  # (D,) complex
    #: every phase is real
    real: bool = field(init=False)
    #: every phase is one of +-1, +-i: then it is a signed permutation of interleaved (re, im)
    quarter_phases: bool = field(init=False)
    #: every phase is 1: a plain permutation
    unit_phases: bool = field(init=False)

    def __post_init__(self) -> None:  # plain booleans, decided once (the executor branches on them)
        object.__setattr__(self, "real", bool(np.all(self.phase.imag == 0)))
        object.__setattr__(self, "quarter_phases", bool(np.all(np.isin(np.round(self.phase, 12), (1, -1, 1j, -1j)))))
        object.__setattr__(self, "unit_phases", bool(np.all(self.phase == 1)))

    def interleaved(self) -> tuple[np.ndarray, np.ndarray]:
        """The same map on interleaved ``(re, im)`` vectors of length ``2D``: (perm2, sign2), real."""
        d = len(self.perm)
        perm2, sign2 = np.empty(2 * d, dtype=np.int64), np.empty(2 * d)
        ph = np.round(self.phase, 12)
        real = ph.imag == 0
        b = np.where(real, ph.real, ph.imag)
        # v = b: re' = b re[j], im' = b im[j];  v = i b: re' = -b im[j], im' = b re[j]
        perm2[0::2] = np.where(real, 2 * self.perm, 2 * self.perm + 1)
        perm2[1::2] = np.where(real, 2 * self.perm + 1, 2 * self.perm)
        sign2[0::2] = np.where(real, b, -b)
        sign2[1::2] = b
        return perm2, sign2

    def then(self, other: "GenPerm") -> "GenPerm":
        """``other`` applied after ``self``."""
        return GenPerm(self.perm[other.perm], other.phase * self.phase[other.perm])

    def dense(self) -> np.ndarray:
        d = len(self.perm)
        m = np.zeros((d, d), dtype=complex)
        m[np.arange(d), self.perm] = self.phase
        return m


def genperm(matrix: np.ndarray, wires: tuple[int, ...], n: int) -> GenPerm | None:
    """Lift a ``2**k`` local matrix on ``wires`` to a :class:`GenPerm` over ``n`` wires, or None when the
    matrix is not a generalized permutation (one non-zero per row and column)."""
    nz = np.abs(matrix) > 1e-12
    if not (np.all(nz.sum(0) == 1) and np.all(nz.sum(1) == 1)):
        return None
    lperm = nz.argmax(1)
    lphase = matrix[np.arange(len(matrix)), lperm]
    k = len(wires)
    idx = np.arange(2**n, dtype=np.int64)
    shifts = [n - 1 - w for w in wires]
    local = np.zeros_like(idx)
    for j, sh in enumerate(shifts):  # local index: the gate's first wire is its most significant bit
        local |= ((idx >> sh) & 1) << (k - 1 - j)
    src = lperm[local]
    perm = idx.copy()
    for j, sh in enumerate(shifts):
        bit = (src >> (k - 1 - j)) & 1
        perm = (perm & ~(1 << sh)) | (bit << sh)
    return GenPerm(perm, lphase[local].astype(complex))


# --- the moments of a fused block, on its local wires ------------------------------------------------------
@dataclass
class Layer:
    """One-qubit gates: ``chains[i]`` is local wire ``i``'s run of gates, in order."""

    chains: list[list[Op]]


@dataclass
class Permute:
    """Fixed multi-qubit gates whose product is the generalized permutation ``gp`` (local wires)."""

    gp: GenPerm


@dataclass
class DenseMatrix:
    """Fixed or constant multi-qubit gates as one local matrix."""

    matrix: np.ndarray


@dataclass
class Rotate:
    """A multi-qubit rotation ``op``: ``cos(theta/2) U + sin(theta/2) G U`` with ``G`` its generator term ``gp``."""

    op: Op
    gp: GenPerm


BlockItem = Layer | Permute | DenseMatrix | Rotate


@dataclass
class Block:
    """A run of batch-invariant gates on ``support`` (global wires, ascending).

    ``mode``: "perm" (fixed gates whose product is ``gp``, a :class:`GenPerm` over all wires), "matrix"
    (one unitary on ``support`` built from ``items``, in order) or "gates" (too wide to fuse: ``ops`` one
    by one).
    """

    ops: list[Op]
    support: tuple[int, ...] = ()
    mode: str = "matrix"
    gp: GenPerm | None = None
    items: list[BlockItem] = field(default_factory=list)

    @property
    def uses_weights(self) -> bool:
        return any(o.source == "weight" for o in self.ops)

    @property
    def signature(self) -> tuple:
        """What the unitary is as a function of its weight angles: blocks with equal signatures (the layers
        of a re-uploading circuit, the two states of a swap test) are built together in one pass."""
        def key(item: BlockItem) -> tuple:
            if isinstance(item, Layer):
                return ("layer",) + tuple(tuple((o.name, o.source, o.value) for o in ch) for ch in item.chains)
            if isinstance(item, Permute):
                return ("perm", item.gp.perm.tobytes(), item.gp.phase.tobytes())
            if isinstance(item, Rotate):
                return ("rot", item.gp.perm.tobytes(), item.gp.phase.tobytes(), item.op.name, item.op.source,
                        item.op.value)
            return ("dense", item.matrix.tobytes())
        return (len(self.support), self.real) + tuple(key(i) for i in self.items)

    @property
    def real(self) -> bool:
        return all(o.real for o in self.ops)


@dataclass
class DataStage:
    """Per-sample data gates between blocks, applied one by one (or as one layer of RY gates)."""

    ops: list[Op]


#: a stage of a plan: per-sample data gates or a batch-invariant block
Stage = DataStage | Block


@dataclass
class Plan:
    """What :mod:`qelm.backends.fused` runs for one circuit structure and angle layout."""

    n_wires: int
    observables: tuple[tuple[int, ...], ...]  # the Z strings measured
    prefix: list[list[Op]]  # per wire: its one-qubit gates on |0>
    stages: list[Stage]
    n_data: int
    n_weights: int
    #: fused blocks that use weights, grouped by :attr:`Block.signature`
    groups: list[list[Block]] = field(default_factory=list)


def _classify(circuit, layout) -> list[Op]:
    try:
        gates = gate_list(circuit)
    except ValueError as e:
        raise UnsupportedGate(str(e)) from None
    ops = []
    for g in gates:
        if g.name not in FIXED and g.name not in ROTATIONS:
            raise UnsupportedGate(g.name)
        if g.angle is not None:
            is_weight, j = layout[g.angle]
            ops.append(Op(g.name, g.wires, "weight" if is_weight else "data", j))
        elif g.value is not None:
            ops.append(Op(g.name, g.wires, "const", value=g.value))
        else:
            ops.append(Op(g.name, g.wires, "fixed"))
    return ops


def _split_prefix(ops: list[Op], n: int) -> tuple[list[list[Op]], list[Op]]:
    """Per wire, the leading one-qubit gates that are not weights; they commute with every earlier gate."""
    prefix: list[list[Op]] = [[] for _ in range(n)]
    blocked: set[int] = set()
    rest = []
    for op in ops:
        w = op.wires[0]
        if len(op.wires) == 1 and w not in blocked and op.source != "weight":
            prefix[w].append(op)
        else:
            blocked.update(op.wires)
            rest.append(op)
    return prefix, rest


@dataclass
class _Invariant:
    """The gates of a block to be: :func:`_stages` cuts them, :func:`_block` decides how they run."""

    ops: list[Op]


def _stages(ops: list[Op]) -> list[DataStage | _Invariant]:
    """Cut into alternating data stages and invariant blocks; a data gate joins the data stage before the
    last block when the block does not touch its wires, and a block stops growing at MAX_FUSED_WIRES."""
    stages: list[DataStage | _Invariant] = []
    for op in ops:
        if op.source == "data":
            if stages and isinstance(stages[-1], DataStage):
                stages[-1].ops.append(op)
            elif (len(stages) >= 2 and isinstance(stages[-2], DataStage)
                  and not set(op.wires) & {w for o in stages[-1].ops for w in o.wires}):
                stages[-2].ops.append(op)
            else:
                stages.append(DataStage([op]))
        else:
            if stages and isinstance(stages[-1], _Invariant):
                support = {w for o in stages[-1].ops for w in o.wires} | set(op.wires)
                if len(support) <= MAX_FUSED_WIRES or all(o.source == "fixed" for o in stages[-1].ops + [op]):
                    stages[-1].ops.append(op)
                    continue
            stages.append(_Invariant([op]))
    return stages


def _items(ops: list[Op], support: tuple[int, ...]) -> list[BlockItem]:
    """A fused block as moments on its local wires: layers of one-qubit chains, fixed multi-qubit gates
    (merged into one generalized permutation where they are), multi-qubit rotations."""
    k = len(support)
    loc = {w: i for i, w in enumerate(support)}
    items: list[BlockItem] = []
    last_multi = {i: -1 for i in range(k)}  # index in items of the last multi-qubit moment on each wire
    for op in ops:
        lw = tuple(loc[w] for w in op.wires)
        if len(lw) == 1:
            after = last_multi[lw[0]]
            target = next((i for i in range(after + 1, len(items)) if isinstance(items[i], Layer)), None)
            if target is None:
                items.append(Layer([[] for _ in range(k)]))
                target = len(items) - 1
            layer = items[target]
            assert isinstance(layer, Layer)
            layer.chains[lw[0]].append(op)
            continue
        m = local_matrix(op.name, len(lw))
        gp = genperm(m, lw, k)
        last = items[-1] if items else None
        if op.rotation:
            assert gp is not None  # a rotation's generator term is a Pauli string
            items.append(Rotate(op, gp))
        elif gp is not None and isinstance(last, Permute):
            items[-1] = Permute(last.gp.then(gp))
        elif gp is not None:
            items.append(Permute(gp))
        else:
            full = _embed(m, lw, k)
            if isinstance(last, DenseMatrix):
                items[-1] = DenseMatrix(full @ last.matrix)
            else:
                items.append(DenseMatrix(full))
        for w in lw:
            last_multi[w] = len(items) - 1
    return items


def _embed(m: np.ndarray, wires: tuple[int, ...], k: int) -> np.ndarray:
    """A gate's local matrix as a ``2**k`` matrix on wires ``0..k-1`` (plan time only, k small)."""
    return np.asarray(qml.matrix(qml.QubitUnitary(m, wires=wires), wire_order=range(k)), dtype=complex)


def _fused(ops: list[Op]) -> bool:
    """Whether a block of weights is applied as one unitary (else gate by gate): :func:`_block`'s rule."""
    k = len({w for o in ops for w in o.wires})
    return k <= MAX_FUSED_WIRES and 2**k <= _FUSE_RATIO * len(ops)


def state_passes(circuit, layout) -> int:
    """How many passes over the whole state a call makes after the product-state prefix: one per data gate,
    per gate-by-gate block gate, and per fused or permutation block. Each keeps a state for backward, so the
    call's memory grows with it (measured on the angle circuit, 2 layers: 4.7-6 states per sample up to 10
    qubits, 1 pass; 108 at 12 qubits, 65 passes; 173 at 14, 104 passes). Computed from the gate list alone,
    without the plan's tables, so a call can be refused before the plan is built."""
    _, rest = _split_prefix(_classify(circuit, layout), circuit.n_wires)
    passes = 0
    for stage in _stages(rest):
        block = isinstance(stage, _Invariant)
        fixed = block and all(o.source == "fixed" for o in stage.ops)
        passes += 1 if fixed or (block and _fused(stage.ops)) else len(stage.ops)
    return passes


def _block(ops: list[Op], n: int) -> Block:
    support = tuple(sorted({w for o in ops for w in o.wires}))
    if all(o.source == "fixed" for o in ops):
        gps = [genperm(local_matrix(o.name, len(o.wires)), o.wires, n) for o in ops]
        perms = [g for g in gps if g is not None]
        if len(perms) == len(gps):
            total = perms[0]
            for g in perms[1:]:
                total = total.then(g)
            return Block(ops, support, "perm", gp=total)
    if _fused(ops):
        return Block(ops, support, "matrix", items=_items(ops, support))
    return Block(ops, support, "gates")


def build_plan(circuit, layout) -> Plan:
    """The plan of ``circuit`` for an angle ``layout`` (see :meth:`qelm.circuits.Circuit.angle_layout`)."""
    n = circuit.n_wires
    ops = _classify(circuit, layout)
    prefix, rest = _split_prefix(ops, n)
    stages: list[Stage] = [s if isinstance(s, DataStage) else _block(s.ops, n) for s in _stages(rest)]
    n_data = 1 + max((j for w, j in layout if not w), default=-1)
    n_weights = 1 + max((j for w, j in layout if w), default=-1)
    groups: dict[tuple, list[Block]] = {}
    for block in stages:
        if isinstance(block, Block) and block.mode == "matrix" and block.uses_weights:
            groups.setdefault(block.signature, []).append(block)
    return Plan(n, tuple(circuit.z_strings), prefix, stages, n_data, n_weights, list(groups.values()))
