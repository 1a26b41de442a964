"""The k-qubit block plan of :mod:`qelm.backends.fused`: a circuit cut into blocks of consecutive gates on
at most ``k`` wires, each applied to a batch of states as one batched contraction, for registers where one
``2**n x 2**n`` unitary per weight block costs more than it saves.

Applying a unitary on ``k`` wires to a state of ``n`` wires costs ``2**(n+k)`` multiply-adds; applying its
gates one by one costs one pass over the state each. So gates are fused into blocks of ``k`` = 3-6 wires
(as qsim and qiskit-aer do), and ``k`` is chosen per circuit by a cost model whose constants are measured
per device (:data:`COSTS`). Nothing here is ``2**n`` in size: a plan is built from the gate list alone.

The state is ``(B, M, 2, ..., 2)``: weight sets, samples, then one axis per wire in the plan's current
*order*. A block acts on wires that are adjacent in that order, so its contraction needs no transpose of
the state: ``(K, K) @ (B, M*L, K, R)``. When a gate's wires are far apart in the order, a :class:`Reorder`
step permutes the axes once (a relabelling: it is not a gate) and later blocks follow the new order.

Steps, in order after the product-state prefix (:func:`qelm.backends.fused_plan._split_prefix`):

* :class:`Dense`: batch-invariant gates (weights, constants, fixed gates) on adjacent axes; its unitary is
  built once per weight set and call (constant blocks once per device);
* :class:`Rotation`: a rotation by a data angle, applied to every sample elementwise (no unitary);
* :class:`Reorder`: a permutation of the axes.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .fused_plan import Op, _classify, _split_prefix, genperm, local_matrix

__all__ = ["Dense", "Rotation", "Reorder", "BlockPlan", "build_block_plan", "block_bytes", "COSTS", "predicted_cost"]

#: Measured cost of each step kind per amplitude of one sample, in units of one elementwise pass over the
#: state (a ``clone``), forward + adjoint backward together, per device type and precision.
#: ``dense[k]``: a k-wire block (apply, and in backward two applies and the gradient contraction);
#: ``rotation``: a data rotation; ``reorder``: a permutation of the axes. CPU: measured on a 2-core AMD EPYC
#: (AVX-512, MKL) at 16 and 20 qubits, complex128 (``benchmarks/block_costs.py``). CUDA: from arithmetic
#: (H200: 4.8 TB/s, 67 TFLOP/s FP64), until ``benchmarks/block_costs.py --device cuda`` measures it.
COSTS = {
    "cpu": {"dense": {1: 4.0, 2: 3.0, 3: 3.0, 4: 3.6, 5: 5.5, 6: 9.0, 7: 14.0, 8: 26.0},
            "rotation": 5.0, "reorder": 3.5},
    "cuda": {"dense": {1: 4.0, 2: 4.0, 3: 4.0, 4: 4.0, 5: 4.2, 6: 4.6, 7: 6.0, 8: 10.0},
             "rotation": 6.0, "reorder": 3.0},
}
#: widest block the planner tries
MAX_BLOCK_WIRES = 8


@dataclass
class Dense:
    """Batch-invariant gates on the axes ``start .. start + k - 1`` of the order in effect (``wires``, most
    significant first; a wire of the span no gate touches is acted on by the identity)."""

    ops: list[Op]
    wires: tuple[int, ...]
    start: int

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


@dataclass
class BlockPlan:
    """What the block executor runs for one circuit structure and angle layout."""

    n_wires: int
    k: int  # widest block
    observables: tuple[tuple[int, ...], ...]
    prefix: list[list[Op]]  # per wire: its one-qubit gates on |0> (a product state)
    steps: list = field(default_factory=list)  # Dense | Rotation | Reorder
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


def _rotation(op: Op, pos: dict[int, int]) -> Rotation:
    g = len(op.wires)
    if op.name == "PhaseShift":  # diag(1, e^{i theta}): handled apart by the executor
        return Rotation(op, tuple(pos[w] for w in op.wires), (0, 1), (0j, 1j))
    gp = genperm(local_matrix(op.name, g), tuple(range(g)), g)
    if gp is None or not gp.quarter_phases:  # pragma: no cover - every rotation generator is a Pauli string
        raise ValueError(f"gate {op.name} has no Pauli generator")
    return Rotation(op, tuple(pos[w] for w in op.wires), tuple(int(p) for p in gp.perm),
                    tuple(complex(p) for p in np.round(gp.phase, 12)))


def _fuse(ops: list[Op], n: int, kmax: int) -> tuple[list, tuple[int, ...]]:
    """Greedy fusion in gate order. A batch-invariant gate joins a block at or after the last step that
    touches its wires (it commutes past the rest) when the block's span stays within ``kmax`` axes of the
    order in effect there, preferring the smallest span; otherwise it opens a block at the end, after a
    :class:`Reorder` if its own wires are too far apart. A data gate is a :class:`Rotation` at the end."""
    order = list(range(n))
    pos = {w: i for i, w in enumerate(order)}
    steps: list = []
    spans: list = []  # per step: (lo, hi, pos map) for Dense, None otherwise
    last = [-1] * n
    upcoming = [o.wires for o in ops]
    for index, op in enumerate(ops):
        if op.source == "data":
            steps.append(_rotation(op, pos))
            spans.append(None)
            for w in op.wires:
                last[w] = len(steps) - 1
            continue
        p = max(last[w] for w in op.wires)
        best, best_span = None, None
        for i in range(max(p, 0), len(steps)):
            if spans[i] is None:
                continue
            lo, hi, at = spans[i]
            a = [at[w] for w in op.wires]
            nlo, nhi = min(lo, *a), max(hi, *a)
            if nhi - nlo + 1 <= kmax and (best is None or nhi - nlo < best_span[1] - best_span[0]):
                best, best_span = i, (nlo, nhi)
        if best is None:
            a = [pos[w] for w in op.wires]
            if max(a) - min(a) + 1 > kmax:
                new = _reorder_for(op, order, kmax, upcoming[index + 1:index + 1 + 2 * n])
                steps.append(Reorder(tuple(pos[w] for w in new)))
                spans.append(None)
                order, pos = new, {w: i for i, w in enumerate(new)}
                a = [pos[w] for w in op.wires]
            steps.append(Dense([op], (), 0))
            spans.append((min(a), max(a), pos))
            best = len(steps) - 1
        else:
            steps[best].ops.append(op)
            spans[best] = best_span + (spans[best][2],)
        for w in op.wires:
            last[w] = max(last[w], best)
    for s, span in zip(steps, spans):
        if span is not None:
            lo, hi, at = span
            inverse = {i: w for w, i in at.items()}
            s.wires, s.start = tuple(inverse[i] for i in range(lo, hi + 1)), lo
    return steps, tuple(order)


def _reorder_for(op: Op, order: list[int], kmax: int, upcoming: list[tuple[int, ...]]) -> list[int]:
    """A new order in which ``op``'s wires lie within ``kmax`` adjacent axes: of the cyclic rotations of the
    current order (they keep a ring of gates adjacent but for one cut) and the order with the gate's other
    wires moved next to its first, the one that leaves the fewest of the next gates too wide."""
    n = len(order)
    moved = list(op.wires[1:])
    rest = [w for w in order if w not in moved]
    at = rest.index(op.wires[0]) + 1
    candidates = [order[i:] + order[:i] for i in range(1, n)] + [rest[:at] + moved + rest[at:]]

    def misses(cand):
        pos = {w: i for i, w in enumerate(cand)}
        return sum(max(pos[w] for w in ws) - min(pos[w] for w in ws) + 1 > kmax for ws in upcoming if len(ws) > 1)

    best = None
    for cand in candidates:
        pos = {w: i for i, w in enumerate(cand)}
        a = [pos[w] for w in op.wires]
        if max(a) - min(a) + 1 <= kmax:
            score = misses(cand)
            if best is None or score < best[0]:
                best = (score, cand)
    return best[1]


def predicted_cost(steps: list, device: str) -> float:
    """Forward + backward cost of ``steps`` in passes over the state (:data:`COSTS`)."""
    table = COSTS["cuda" if device == "cuda" else "cpu"]
    total = 0.0
    for s in steps:
        if isinstance(s, Dense):
            total += table["dense"][s.k]
        elif isinstance(s, Rotation):
            total += table["rotation"]
        else:
            total += table["reorder"]
    return total


def block_bytes(plan: BlockPlan, item: int) -> int:
    """Bytes of one weight set's block unitaries and the steps that build them (kept for backward), at
    ``item`` bytes per complex amplitude; constant blocks are counted once with them."""
    total = 0
    for s in plan.dense:
        rotations = sum(o.source == "weight" for o in s.ops)
        total += 4**s.k * item * (3 * rotations + 2)
    return total


def build_block_plan(circuit, layout, k: int | None = None, device: str = "cpu") -> BlockPlan:
    """The block plan of ``circuit`` for an angle ``layout``: with blocks of at most ``k`` wires, or, when
    ``k`` is None, the ``k`` whose plan :func:`predicted_cost` finds cheapest on ``device``."""
    n = circuit.n_wires
    ops = _classify(circuit, layout)
    for o in ops:
        local_matrix(o.name, len(o.wires))  # raises UnsupportedGate for a gate without a kernel
    prefix, rest = _split_prefix(ops, n)
    widest = max((len(o.wires) for o in rest if o.source != "data"), default=1)
    candidates = [k] if k is not None else range(max(widest, 1), min(n, MAX_BLOCK_WIRES) + 1)
    best = None
    for kk in candidates:
        if kk < widest or kk > n:
            raise ValueError(f"k={kk} is invalid for circuit {circuit.name!r}: use {widest} <= k <= {n}")
        steps, order = _fuse(rest, n, kk)
        cost = predicted_cost(steps, device)
        if best is None or cost < best[0] - 1e-9:
            best = (cost, kk, steps, order)
    cost, kk, steps, order = best
    n_data = 1 + max((j for w, j in layout if not w), default=-1)
    n_weights = 1 + max((j for w, j in layout if w), default=-1)
    return BlockPlan(n, kk, tuple(circuit.z_strings), prefix, steps, order, n_data, n_weights, cost)
