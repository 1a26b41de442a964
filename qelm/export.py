"""Circuits leaving qelm: OpenQASM 2 (:func:`to_qasm`), a ``qiskit.QuantumCircuit`` (:func:`to_qiskit`) and
a resource summary measured twice, by PennyLane and by qiskit on the export (:func:`resources`).

OpenQASM 2 is written by ``qml.to_openqasm`` after decomposing to gates of the original ``qelib1.inc``
(CSWAP becomes Toffoli + CNOT), so any OpenQASM 2 reader, ``qiskit.qasm2.loads`` included, loads it without
custom instructions. PennyLane wire ``i`` is written as ``q[i]``; PennyLane counts wire 0 as the most
significant bit and qiskit counts qubit 0 as the least, so a qiskit ``Statevector`` of the loaded circuit
equals PennyLane's state after ``QuantumCircuit.reverse_bits()``.
"""

from __future__ import annotations

import pennylane as qml
import torch

from .backends.aer import translate
from .circuits import Circuit
from .circuits.angles import angles_and_decimals, qnode, symbolic_angles, weight_mask

__all__ = ["QELIB1_GATES", "to_qasm", "to_qiskit", "resources"]

#: PennyLane gates whose OpenQASM names are in the original qelib1.inc (what qiskit.qasm2.loads reads)
QELIB1_GATES = frozenset({
    "CNOT", "CZ", "Toffoli", "CRZ", "U1", "U2", "U3", "PhaseShift", "Identity", "PauliX", "PauliY", "PauliZ",
    "Hadamard", "S", "Adjoint(S)", "T", "Adjoint(T)", "RX", "RY", "RZ",
})


def _device_tape(circuit: Circuit, angles: torch.Tensor):
    return qml.workflow.construct_tape(qnode(circuit), level="device")(angles)


def to_qasm(circuit: Circuit, angles: torch.Tensor | None = None, *, precision: int | None = None,
            header: bool = True) -> str:
    """OpenQASM 2.0 by ``qml.to_openqasm``, gates of the original ``qelib1.inc`` only, every wire measured.

    ``angles`` None: ``theta[i] = i`` (the symbolic convention; OpenQASM 2 has no free parameters).
    ``precision``: significant digits of each angle (None: full double precision). PennyLane wire ``i``
    is ``q[i]``; in qiskit, ``reverse_bits()`` gives PennyLane's basis order (see the module docstring).
    """
    symbolic = angles is None
    angles, _ = angles_and_decimals(circuit, angles, None)
    [tape], _ = qml.transforms.decompose(_device_tape(circuit, angles), gate_set=set(QELIB1_GATES))
    text = qml.to_openqasm(tape, wires=qml.wires.Wires(circuit.wires), measure_all=True, precision=precision)
    if not header:
        return text
    first, include, rest = text.split("\n", 2)
    note = [f"// qelm circuit {circuit.name!r}: n_qubits={circuit.n_qubits}, n_layers={circuit.n_layers}",
            "// PennyLane wire i is q[i]; PennyLane's wire 0 is the most significant bit, so in qiskit use",
            "// QuantumCircuit.reverse_bits() to compare amplitudes with PennyLane"]
    if symbolic:
        note.append("// symbolic: the angle vector entry theta[i] is set to i radians (OpenQASM 2 has no free parameters)")
    return "\n".join([first, include, *note, rest])


def to_qiskit(circuit: Circuit, angles: torch.Tensor | None = None):
    """The circuit as a ``qiskit.QuantumCircuit`` on qubits in PennyLane's wire order (qubit i = wire i).

    Symbolic when ``angles`` is None: gate angles are the Parameters ``theta[i]``. Built by the qiskit.aer
    backend's own translation (:func:`qelm.backends.aer.translate`), so it is the circuit that backend runs."""
    qc = translate(circuit, controlled=True).qc.reverse_bits()  # translate maps wire w -> qubit n-1-w; undo for reading
    if angles is None:
        return qc
    angles, _ = angles_and_decimals(circuit, angles, None)
    return qc.assign_parameters({p: float(angles[p.index]) for p in qc.parameters})


def resources(circuit: Circuit) -> dict:
    """Resource summary: qubits, parameters, gates by type and depth, measured twice: by ``qml.specs`` on
    the decomposed circuit (``level="device"``, the gates default.qubit runs) and by qiskit on the
    exported OpenQASM (the qelib1 gate set a QASM consumer sees)."""
    from qiskit import qasm2  # lazy: qiskit is slow to import; only qiskit.aer and the exports use it

    angles = symbolic_angles(circuit)
    specs = qml.specs(qnode(circuit), level="device")(angles)
    res = specs.resources
    qc = qasm2.loads(to_qasm(circuit, angles)).remove_final_measurements(inplace=False)
    ops = qc.count_ops()
    mask = weight_mask(circuit)
    return {
        "circuit": circuit.name,
        "class": type(circuit).__name__,
        "kind": circuit.kind,
        "n_qubits": circuit.n_qubits,
        "n_layers": circuit.n_layers,
        "wires": circuit.n_wires,
        "returns": "state vector" if circuit.returns == "state" else (
            f"<Z> on wires {list(circuit.observables)}" if circuit.readout == "z"
            else f"readout {circuit.readout!r}: <Z...> of the wire sets {[list(z) for z in circuit.z_strings]}"),
        "parameters": {
            "gate_angles": circuit.n_angles,
            "data_angles": int((~mask).sum()),
            "weight_angles": int(mask.sum()),
            "trainable_weights": circuit.n_weights,
            "weight_shape": list(circuit.weight_shape),
        },
        "pennylane_device": {
            "gates": res.num_gates,
            "gate_types": dict(sorted(res.gate_types.items())),
            "depth": res.depth,
        },
        "openqasm": {
            "gates": sum(ops.values()),
            "gate_types": dict(sorted(ops.items())),
            "depth": qc.depth(),
        },
        "method": "qml.specs(level='device') on default.qubit; OpenQASM counts by qiskit "
                  "(count_ops, depth) of qasm2.loads(to_qasm(...)) without the final measurements",
    }
