"""qelm.export: OpenQASM that qiskit loads to the same state, qiskit circuits, and resource counts."""

import math

import numpy as np
import pennylane as qml
import pytest
import torch
from qiskit import qasm2
from qiskit.quantum_info import Statevector

from qelm import CIRCUITS, build_circuit
from qelm.export import resources, to_qasm, to_qiskit


def _state(circuit, angles):
    """PennyLane's state of ``circuit`` (wire 0 = most significant bit)."""
    @qml.qnode(qml.device("default.qubit", wires=circuit.n_wires))
    def node(a):
        circuit.apply(a)
        return qml.state()

    return node(angles).detach().numpy()


def _random_angles(circuit, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (torch.rand(circuit.n_angles, generator=g, dtype=torch.float64) * 4 - 2) * math.pi



@pytest.mark.parametrize("size", [(2, 2), (3, 1)])
@pytest.mark.parametrize("name", sorted(CIRCUITS))
def test_qasm_loads_in_qiskit_with_the_same_statevector(name, size):
    c = build_circuit(name, *size)
    angles = _random_angles(c, seed=sum(map(ord, name)))
    qc = qasm2.loads(to_qasm(c, angles)).remove_final_measurements(inplace=False)  # qelib1 gates only
    ours = _state(c, angles)
    # PennyLane wire 0 is the most significant bit, qiskit qubit 0 the least: reverse to compare
    theirs = Statevector(qc.reverse_bits()).data
    np.testing.assert_allclose(theirs, ours, atol=1e-8, rtol=0)


def test_bit_order_matters_for_the_comparison():
    """The reversal above is needed: without it the angle circuit's amplitudes differ."""
    c = build_circuit("angle", 2, 1)
    angles = _random_angles(c)
    qc = qasm2.loads(to_qasm(c, angles)).remove_final_measurements(inplace=False)
    assert not np.allclose(Statevector(qc).data, _state(c, angles), atol=1e-3)


@pytest.mark.parametrize("name", ["amplitude", "swap_test"])
def test_qiskit_circuit_matches_pennylane(name):
    c = build_circuit(name, 2, 2)
    angles = _random_angles(c, seed=3)
    qc = to_qiskit(c, angles)
    assert not qc.parameters
    np.testing.assert_allclose(Statevector(qc.reverse_bits()).data, _state(c, angles), atol=1e-8, rtol=0)
    assert len(to_qiskit(c).parameters) == c.n_angles


def test_qasm_precision_is_significant_digits():
    c = build_circuit("angle", 2, 1)
    angles = torch.full((c.n_angles,), 1.23456789, dtype=torch.float64)
    assert "ry(1.235) q[0];" in to_qasm(c, angles, precision=4)
    assert "ry(1.23456789) q[0];" in to_qasm(c, angles)


def test_resources_count_the_decomposed_gates():
    r = resources(build_circuit("swap_test", 2, 1))
    assert r["wires"] == 5
    assert r["pennylane_device"]["gate_types"] == {"CNOT": 4, "CSWAP": 2, "Hadamard": 2, "RY": 4, "Rot": 4}
    assert r["openqasm"]["gate_types"]["ccx"] == 2 and "cswap" not in r["openqasm"]["gate_types"]
    assert r["parameters"] == {"gate_angles": 16, "data_angles": 4, "weight_angles": 12, "trainable_weights": 6,
                               "weight_shape": [1, 2, 3]}
