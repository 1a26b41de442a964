"""A circuit as a flat gate list, each gate angle tied to its column of the angle vector.

Backends that do not run PennyLane tapes (qiskit-aer, Lightning's kernels) need each circuit structure once
as plain data: gate name, wires, and for every angle either the angle-vector column that drives it or a
constant. ``circuit.apply`` is traced into a PennyLane tape with marker angles and decomposed to
:data:`GATE_SET`. Two traces with independent random markers tell gate angles (they follow the markers)
from constant angles (equal in both traces); anything else means arithmetic on an angle inside ``apply``,
which breaks the circuit contract of :mod:`qelm.circuits` and is reported.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pennylane as qml
import torch

from ..errors import BackendError

__all__ = ["Gate", "gate_list", "check_gates", "refusal", "FIXED", "ROTATIONS", "CONTROLLED_ROTATIONS", "GATE_SET"]

#: parameter-free gates kept by the decomposition
FIXED = frozenset({"Hadamard", "PauliX", "PauliY", "PauliZ", "S", "T", "SX", "Adjoint(S)", "Adjoint(T)",
                   "Adjoint(SX)", "CNOT", "CZ", "CY", "SWAP", "CSWAP", "Toffoli"})
#: one-parameter rotations whose generator has eigenvalues +-1/2, so the two-term shift rule is exact
ROTATIONS = frozenset({"RX", "RY", "RZ", "PhaseShift", "IsingXX", "IsingYY", "IsingZZ"})
#: controlled rotations (generator eigenvalues 0 and +-1/2: no two-term shift rule). Only a backend that
#: simulates them as they are asks for them (``gate_list(circuit, controlled=True)``: qelm.fused's evolve)
CONTROLLED_ROTATIONS = frozenset({"CRX", "CRY", "CRZ"})
_SKIP = frozenset({"Identity", "GlobalPhase", "Barrier"})  # no effect on expectation values
#: what the decomposition may leave; ``Rot`` is then expanded into RZ RY RZ by :func:`gate_list`
GATE_SET = FIXED | ROTATIONS | {"Rot"} | _SKIP


@dataclass(frozen=True)
class Gate:
    """One gate: ``angle`` is its angle-vector column, ``value`` a constant angle; both None if fixed."""

    name: str
    wires: tuple[int, ...]
    angle: int | None = None
    value: float | None = None


def _trace(circuit, angles: torch.Tensor, gate_set: frozenset) -> list:
    tape = qml.tape.make_qscript(circuit.apply)(angles)
    refused = sorted({op.name for op in tape.operations if op.name in CONTROLLED_ROTATIONS} - gate_set)
    if refused:
        raise BackendError(f"circuit {circuit.name!r} uses the controlled rotation {refused[0]}, which this backend does "
                         "not run (it has no two-term shift rule): run it on backend 'qelm.fused', 'default.qubit' or "
                         "'lightning.qubit'")
    (tape,), _ = qml.transforms.decompose(tape, gate_set=set(gate_set))
    return list(tape.operations)


def _scalar(p) -> float:
    p = p.detach().cpu() if isinstance(p, torch.Tensor) else p
    arr = np.asarray(p, dtype=np.float64)
    if arr.size != 1:
        raise BackendError(f"a gate parameter of shape {arr.shape} cannot be traced; trace with one angle vector")
    return float(arr.reshape(()))


def gate_list(circuit, controlled: bool = False) -> list[Gate]:
    """``circuit`` (a :class:`qelm.circuits.Circuit`) as gates of ``FIXED`` and ``ROTATIONS`` only, in order
    (and ``CONTROLLED_ROTATIONS`` kept as they are when ``controlled``; otherwise they are decomposed, which
    computes angles from angles and is refused below).

    Wires are PennyLane's (wire 0 the most significant bit). ``Rot(phi, theta, omega)`` becomes
    ``RZ(phi) RY(theta) RZ(omega)`` (its definition). Gates without effect on expectations are dropped.
    """
    n_angles = circuit.n_angles
    rng = np.random.default_rng(20240617)
    # two independent sets of distinct marker angles; a gate angle follows its marker in both traces
    marks_a = rng.permutation(np.linspace(0.31, 2.93, n_angles)) if n_angles else np.zeros(0)
    marks_b = rng.permutation(np.linspace(3.37, 5.99, n_angles)) if n_angles else np.zeros(0)
    index_a = {float(v): i for i, v in enumerate(marks_a)}
    index_b = {float(v): i for i, v in enumerate(marks_b)}
    gate_set = GATE_SET | CONTROLLED_ROTATIONS if controlled else GATE_SET
    rotations = ROTATIONS | CONTROLLED_ROTATIONS if controlled else ROTATIONS
    ops_a = _trace(circuit, torch.as_tensor(marks_a, dtype=torch.float64), gate_set)
    ops_b = _trace(circuit, torch.as_tensor(marks_b, dtype=torch.float64), gate_set)
    if [(o.name, tuple(o.wires)) for o in ops_a] != [(o.name, tuple(o.wires)) for o in ops_b]:
        raise BackendError(f"circuit {circuit.name!r}: its gate structure depends on the angle values; "
                         "a traced backend needs a fixed structure")
    used: dict[int, str] = {}

    def rotation(name: str, wires: tuple[int, ...], op_a, op_b, k: int) -> Gate:
        va, vb = _scalar(op_a.parameters[k]), _scalar(op_b.parameters[k])
        i = index_a.get(va)
        if i is not None and index_b.get(vb) == i:
            if i in used:
                raise BackendError(f"circuit {circuit.name!r}: angle {i} drives both {used[i]} and {op_a.name}; "
                                 "every angle must be used by one gate (repeat it in angles() instead)")
            used[i] = op_a.name
            return Gate(name, wires, angle=i)
        if va == vb:
            return Gate(name, wires, value=va)  # a constant angle of the decomposition
        raise BackendError(f"circuit {circuit.name!r}: gate {op_a.name} on wires {op_a.wires.tolist()} computes "
                         "its angle from the angle vector; every gate angle must be one entry, used as is")

    gates: list[Gate] = []
    for op_a, op_b in zip(ops_a, ops_b):
        name, wires = op_a.name, tuple(int(w) for w in op_a.wires)
        if name in _SKIP:
            continue
        if name in FIXED:
            gates.append(Gate(name, wires))
        elif name in rotations:
            gates.append(rotation(name, wires, op_a, op_b, 0))
        elif name == "Rot":
            gates.extend(rotation(r, wires, op_a, op_b, k) for k, r in enumerate(("RZ", "RY", "RZ")))
        else:  # pragma: no cover - the decomposition only leaves GATE_SET
            raise BackendError(f"circuit {circuit.name!r}: gate {name} is outside the traced gate set")
    return gates


def refusal(backend: str, circuit, reason: object, alternative: str = "'default.qubit'") -> BackendError:
    """The one-line error of backend ``backend`` refusing ``circuit`` for ``reason`` (a message, or the error of
    :func:`gate_list`), naming the backend that runs it instead."""
    why = str(reason)
    for prefix in (f"circuit {circuit.name!r}: ", f"circuit {circuit.name!r} "):
        why = why.removeprefix(prefix)
    lead = "it " if why.startswith("uses") else ""
    tail = "" if "run it on" in why else f"; run it on backend {alternative}"
    return BackendError(f"backend {backend!r} cannot run circuit {circuit.name!r}: {lead}{why}{tail}")


def check_gates(backend: str, circuit, controlled: bool = False) -> list[Gate]:
    """:func:`gate_list` of ``circuit`` for backend ``backend``, or its :func:`refusal` (what
    :meth:`qelm.backends.Backend.check_circuit` of a backend that runs gate lists does)."""
    try:
        return gate_list(circuit, controlled=controlled)
    except BackendError as e:
        raise refusal(backend, circuit, e) from None
