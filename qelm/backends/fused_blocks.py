"""The k-qubit block plan of :mod:`qelm.backends.fused`: a circuit cut into blocks of consecutive gates on
at most ``k`` wires, each applied to a batch of states as one batched contraction, for registers where one
``2**n x 2**n`` unitary per weight block costs more than it saves.

Applying a unitary on ``k`` wires to a state of ``n`` wires costs ``2**(n+k)`` multiply-adds; applying its
gates one by one costs one pass over the state each. So gates are fused into blocks of ``k`` = 3-6 wires
(as qsim and qiskit-aer do), and ``k`` is chosen per circuit by a cost model whose constants are measured
per device (:data:`COSTS`). Nothing here is ``2**n`` in size: a plan is built from the gate list alone.

The state is ``(B, M, 2, ..., 2)``: weight sets, samples, then one axis per wire in the plan's current
*order*. A dense block acts on the last ``k`` axes, where its contraction is one real GEMM on rows of
``2K`` interleaved (re, im) numbers, ``(B, M * 2**n / K, 2K) @ (2K, 2K)`` (small real GEMMs run several
times faster than complex ones, and need no transpose); a :class:`Reorder` moves a block's wires there
first when they are not (a relabelling of the axes, one copy: it is not a gate).

Steps, in order after the product-state prefix (:func:`qelm.backends.fused_plan._split_prefix`):

* :class:`Dense`: batch-invariant gates (weights, constants, fixed gates) on the last axes; its unitary is
  built once per weight set and call; with ``gather``, fixed permutation gates (CNOT, ...) on adjacent
  axes anywhere, applied as a gather of basis states;
* :class:`Rotation`: a rotation by a data angle, applied to every sample elementwise (no unitary);
* :class:`Reorder`: a permutation of the axes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cache
from typing import TypedDict

import numpy as np

from .fused_plan import Op, _classify, _split_prefix, genperm, local_matrix

__all__ = ["Dense", "Rotation", "Reorder", "BlockPlan", "build_block_plan", "block_bytes", "COSTS", "predicted_cost"]


class _Costs(TypedDict):
    """One device type's entry of :data:`COSTS`."""

    apply: dict[int, float]
    outer: dict[int, float]
    gather: float
    rotate: float
    rotation_grad: float
    reorder: float


#: Measured cost per amplitude of one sample, in nanoseconds, of the primitives a step is made of, per
#: device type (``benchmarks/block_costs.py``): ``apply[k]`` a k-wire unitary on a state, ``outer[k]`` the
#: gradient contraction of a k-wire block, ``gather`` a permutation block, ``rotate`` and ``rotation_grad``
#: a data rotation, ``reorder`` a permutation of the axes. CPU: ``block_costs.py --qubits 16`` on one
#: thread of a shared 2-core Intel Xeon (AVX-512, MKL), complex128, rounded. CUDA: ``block_costs.py --device
#: cuda`` on one H200 (16 qubits x 1,024 samples, complex128, minimum of 7), rounded: a block of 3-6 wires
#: costs about one pass over the state, narrower blocks pay their launches.
COSTS: dict[str, _Costs] = {
    "cpu": {"apply": {1: 1.65, 2: 1.15, 3: 1.35, 4: 1.95, 5: 3.1, 6: 5.7, 7: 11.5, 8: 22.5},
            "outer": {1: 1.05, 2: 0.95, 3: 1.2, 4: 2.05, 5: 3.3, 6: 6.3, 7: 12.4, 8: 22.3},
            "gather": 0.9, "rotate": 3.45, "rotation_grad": 3.6, "reorder": 1.1},
    "cuda": {"apply": {1: 0.046, 2: 0.024, 3: 0.014, 4: 0.009, 5: 0.009, 6: 0.012, 7: 0.02, 8: 0.037},
             "outer": {1: 0.026, 2: 0.014, 3: 0.009, 4: 0.008, 5: 0.009, 6: 0.011, 7: 0.019, 8: 0.035},
             "gather": 0.009, "rotate": 0.021, "rotation_grad": 0.024, "reorder": 0.008},
}
#: widest block the planner tries
MAX_BLOCK_WIRES = 8
#: widest permutation block (its gather table has 2**k entries)
MAX_GATHER_WIRES = 10


@dataclass
class Dense:
    """Batch-invariant gates on the axes ``start .. start + k - 1`` of the order in effect (``wires``, most
    significant first; a wire of the span no gate touches is acted on by the identity)."""

    ops: list[Op]
    wires: tuple[int, ...]
    start: int
    #: fixed permutation gates only: applied as a gather of basis states (with phases), no arithmetic
    gather: bool = False

    @property
    def k(self) -> int:
        return len(self.wires)

    @property
    def uses_weights(self) -> bool:
        return any(o.source == "weight" for o in self.ops)


@dataclass(frozen=True)
class Rotation:
    """A rotation ``exp(-i theta/2 P)`` by a data angle (PhaseShift: ``diag(1, e^{i theta})``) on the axes
    ``axes``: ``psi' = c psi + s G psi``, ``G = -iP`` a generalized permutation of the local basis
    (``perm``, ``phase``: ``(G psi)[j] = phase[j] psi[perm[j]]``)."""

    op: Op
    axes: tuple[int, ...]
    perm: tuple[int, ...]
    phase: tuple[complex, ...]

    @property
    def diagonal(self) -> bool:
        return all(p == j for j, p in enumerate(self.perm))


@dataclass(frozen=True)
class Reorder:
    """Permute the wire axes: new axis ``i`` is old axis ``perm[i]``."""

    perm: tuple[int, ...]


#: a step of a block plan
Step = Dense | Rotation | Reorder


@dataclass
class BlockPlan:
    """What the block executor runs for one circuit structure and angle layout."""

    n_wires: int
    k: int  # widest block
    observables: tuple[tuple[int, ...], ...]
    prefix: list[list[Op]]  # per wire: its one-qubit gates on |0> (a product state)
    steps: list[Step] = field(default_factory=list)
    order: tuple[int, ...] = ()  # wire of each axis after the last step
    n_data: int = 0
    n_weights: int = 0
    cost: float = 0.0  # predicted, in passes over the state

    @property
    def dense(self) -> list[Dense]:
        return [s for s in self.steps if isinstance(s, Dense)]

    @property
    def rotations(self) -> list[Rotation]:
        return [s for s in self.steps if isinstance(s, Rotation)]


@cache
def _local(name: str, g: int):
    """A gate's matrix on its own ``g`` wires as a generalized permutation, or None."""
    return genperm(local_matrix(name, g), tuple(range(g)), g)


def _rotation(op: Op, pos: dict[int, int]) -> Rotation:
    if op.name == "PhaseShift":  # diag(1, e^{i theta}): handled apart by the executor
        return Rotation(op, tuple(pos[w] for w in op.wires), (0, 1), (0j, 1j))
    gp = _local(op.name, len(op.wires))
    if gp is None or not gp.quarter_phases:  # pragma: no cover - every rotation generator is a Pauli string
        raise ValueError(f"gate {op.name} has no Pauli generator")
    return Rotation(op, tuple(pos[w] for w in op.wires), tuple(int(p) for p in gp.perm),
                    tuple(complex(p) for p in np.round(gp.phase, 12)))


def _is_perm(op: Op) -> bool:
    """A fixed gate that permutes basis states (with phases): CNOT, CZ, SWAP, Toffoli, Pauli gates, ..."""
    return op.source == "fixed" and _local(op.name, len(op.wires)) is not None


@dataclass
class _Group:
    """Gates :func:`_fuse` groups on ``wires``: ``kind`` "dense" (a block), "gather" (fixed permutation
    gates) or "data" (one data rotation)."""

    kind: str
    ops: list[Op]
    wires: set[int]


def _fuse(ops: list[Op], kmax: int, kperm: int) -> list[_Group]:
    """Greedy fusion in gate order into wire sets. A batch-invariant gate joins a block at or after the
    last step that touches its wires (it commutes past the rest) when the block's wires stay at most
    ``kmax``, preferring no growth, then the smallest block; otherwise it opens a block at the end. A fixed
    permutation gate (CNOT, ...) that no dense block spans already goes to a permutation block of at most
    ``kperm`` wires (a gather, no arithmetic). A data gate is a :class:`Rotation` at the end."""
    steps: list[_Group] = []
    last: dict[int, int] = {}
    for op in ops:
        if op.source == "data":
            steps.append(_Group("data", [op], set(op.wires)))
            for w in op.wires:
                last[w] = len(steps) - 1
            continue
        perm = kperm > 0 and _is_perm(op)
        p = max(last.get(w, -1) for w in op.wires)
        best: int | None = None
        best_key = (0, 0)
        for i in range(max(p, 0), len(steps)):
            kind, wires = steps[i].kind, steps[i].wires
            union = len(wires | set(op.wires))
            if kind == "gather":
                ok, key = perm and union <= kperm, (1, union)
            elif kind == "dense":
                ok, key = (union == len(wires) if perm else union <= kmax), (0 if union == len(wires) else 2, union)
            else:
                ok = False
            if ok and (best is None or key < best_key):
                best, best_key = i, key
        if best is None:
            steps.append(_Group("gather" if perm else "dense", [op], set(op.wires)))
            best = len(steps) - 1
        else:
            steps[best].ops.append(op)
            steps[best].wires |= set(op.wires)
        for w in op.wires:
            last[w] = max(last.get(w, -1), best)
    return steps


def _place(fused: list[_Group], n: int) -> tuple[list[Step], tuple[int, ...]]:
    """The steps with their axes: a dense block acts on the last axes (a real GEMM on rows), so a
    :class:`Reorder` moves its wires there first when they are not (measured on the CPU: a complex GEMM
    on the block's axes where they are costs more than the copy and the real GEMM together); a permutation
    block acts where its wires are adjacent, else at the end too; a rotation wherever its wires are."""
    order = list(range(n))
    steps: list[Step] = []
    for group in fused:
        kind, ops, wires = group.kind, group.ops, group.wires
        pos = {w: i for i, w in enumerate(order)}
        if kind == "data":
            steps.append(_rotation(ops[0], pos))
            continue
        at = sorted(pos[w] for w in wires)
        if kind == "dense" or at[-1] - at[0] + 1 != len(at):
            if set(order[n - len(wires):]) != wires:
                new = [w for w in order if w not in wires] + [w for w in order if w in wires]
                steps.append(Reorder(tuple(pos[w] for w in new)))
                order = new
            at = list(range(n - len(wires), n))
        steps.append(Dense(ops, tuple(order[at[0]:at[-1] + 1]), at[0], gather=kind == "gather"))
    return steps, tuple(order)


def predicted_cost(steps: list[Step], device: str) -> float:
    """Forward + adjoint backward of ``steps``, in nanoseconds per amplitude of one sample (:data:`COSTS`):
    a weight block is applied three times (forward, and undone on the state and the cotangent) and
    contracted once; a constant block or a gather applied three times; a rotation likewise, plus its
    angle's gradient."""
    c = COSTS["cuda" if device == "cuda" else "cpu"]
    total = 0.0
    for s in steps:
        if isinstance(s, Dense) and s.gather:
            total += 3 * c["gather"]
        elif isinstance(s, Dense):
            total += 3 * c["apply"][s.k] + (c["outer"][s.k] if s.uses_weights else 0.0)
        elif isinstance(s, Rotation):
            total += 3 * c["rotate"] + c["rotation_grad"]
        else:
            total += 3 * c["reorder"]
    return total


def block_bytes(plan: BlockPlan, item: int) -> int:
    """Bytes of one weight set's block unitaries and the steps that build them (kept for backward), at
    ``item`` bytes per complex amplitude; constant blocks are counted once with them."""
    total = 0
    for s in plan.dense:
        if s.gather:
            continue
        rotations = sum(o.source == "weight" for o in s.ops)
        total += 4**s.k * item * (3 * rotations + 2)
    return total


def build_block_plan(circuit, layout, k: int | None = None, device: str = "cpu") -> BlockPlan:
    """The block plan of ``circuit`` for an angle ``layout``: with blocks of at most ``k`` wires, or, when
    ``k`` is None, the ``k`` whose plan :func:`predicted_cost` finds cheapest on ``device``."""
    n = circuit.n_wires
    ops = _classify(circuit, layout)
    for name, g in {(o.name, len(o.wires)) for o in ops}:
        local_matrix(name, g)  # raises UnsupportedGate for a gate without a kernel
    prefix, rest = _split_prefix(ops, n)
    widest = max((len(o.wires) for o in rest if o.source != "data"), default=1)
    candidates = [k] if k is not None else range(max(widest, 1), min(n, MAX_BLOCK_WIRES) + 1)
    best: tuple[float, int, list[Step], tuple[int, ...]] | None = None
    for kk in candidates:
        if kk < widest or kk > n:
            raise ValueError(f"k={kk} is invalid for circuit {circuit.name!r}: use {widest} <= k <= {n}")
        steps, order = _place(_fuse(rest, kk, min(n, MAX_GATHER_WIRES)), n)
        cost = predicted_cost(steps, device)
        if best is None or cost < best[0] - 1e-9:
            best = (cost, kk, steps, order)
    assert best is not None  # candidates is never empty
    cost, kk, steps, order = best
    n_data = 1 + max((j for w, j in layout if not w), default=-1)
    n_weights = 1 + max((j for w, j in layout if w), default=-1)
    return BlockPlan(n, kk, tuple(circuit.z_strings), prefix, steps, order, n_data, n_weights, cost)
