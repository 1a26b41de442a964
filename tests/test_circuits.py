"""Circuits: sizes from config, what each circuit prepares, broadcast == per-sample loop."""

import math

import pennylane as qml
import pytest
import torch

from qelm import CIRCUITS, build_circuit, get_backend
from qelm.circuits import AmplitudeEmbeddingCircuit


GATES = {"RX", "RY", "RZ", "Rot", "CNOT", "CZ", "Hadamard", "CSWAP", "CRX"}


def _qnode(circuit):
    return qml.QNode(circuit.qfunc, qml.device("default.qubit", wires=circuit.n_wires), interface="torch")


@pytest.mark.parametrize("name", sorted(CIRCUITS))
def test_broadcast_equals_per_sample_loop(name):
    c = build_circuit(name, n_qubits=2, n_layers=2)
    angles = torch.rand(7, c.n_angles, dtype=torch.float64) * 2 * math.pi
    backend = get_backend("default.qubit")
    batched = backend.state(c, angles) if c.returns == "state" else backend.expval(c, angles)
    node = _qnode(c)
    for i in range(angles.shape[0]):  # the loop lives only here, in the test
        single = node(angles[i])
        single = torch.stack(list(single)) if isinstance(single, (list, tuple)) else single
        assert torch.allclose(batched[i], single.reshape(batched[i].shape), atol=1e-10, rtol=0)


@pytest.mark.parametrize("name", sorted(CIRCUITS))
def test_sizes_are_derived_from_config(name):
    c = build_circuit(name, n_qubits=3, n_layers=2)
    tape = qml.workflow.construct_tape(_qnode(c))(torch.zeros(c.n_angles, dtype=torch.float64))
    [decomposed], _ = qml.transforms.decompose(tape, gate_set=GATES)
    trainable = sum(len(op.data) for op in decomposed.operations)
    assert trainable == c.n_angles, "every angle of the vector must drive exactly one gate"
    assert len(tape.wires) == c.n_wires
    if c.kind == "unitary":  # every angle a data angle (a Quixer token's unitary)
        assert c.weight_shape == (0,) and c.n_angles == c.n_inputs == 4 * 3 * 2
    else:
        assert c.weight_shape == tuple(qml.StronglyEntanglingLayers.shape(n_layers=2, n_wires=3))


def test_amplitude_embedding_prepares_normalised_signed_vector():
    c = AmplitudeEmbeddingCircuit(n_qubits=3, n_layers=1)
    v = torch.randn(5, 8, dtype=torch.float64)
    dev = qml.device("default.qubit", wires=3)

    @qml.qnode(dev)
    def prep(angles):
        c.apply(angles)
        return qml.state()

    weights = torch.zeros(c.weight_shape, dtype=torch.float64)
    state = prep(c.angles(v, weights))  # (5, 8) = U_ent |v>, row vectors
    ent = torch.as_tensor(qml.matrix(qml.StronglyEntanglingLayers(weights, wires=range(3))), dtype=state.dtype)
    state = state @ ent.conj()  # undo the entangler: (U^dagger s)^T = s^T U*
    expected = v / v.norm(dim=-1, keepdim=True)
    assert torch.allclose(state.real, expected, atol=1e-10)
    assert torch.allclose(state.imag, torch.zeros_like(state.imag), atol=1e-10)


def test_swap_test_expectation_is_the_state_overlap():
    s = build_circuit("swap_test", 2, 2)
    f = build_circuit("fidelity", 2, 2)
    w = torch.randn(f.weight_shape, dtype=torch.float64)
    x = torch.randn(6, 2, 2, dtype=torch.float64)  # 6 pairs of 2-qubit inputs
    backend = get_backend("default.qubit")
    z = backend.expval(s, s.angles(x, w))[:, 0]
    psi = backend.state(f, f.angles(x, w).reshape(12, -1)).reshape(6, 2, -1)
    overlap = (psi[:, 0].conj() * psi[:, 1]).sum(-1).abs() ** 2
    assert torch.allclose(z, overlap, atol=1e-10)


def test_unknown_circuit_names_the_valid_ones():
    with pytest.raises(ValueError, match="unknown circuit 'nope'.*angle.*polar"):
        build_circuit("nope")


@pytest.mark.parametrize("field,value", [("n_qubits", 0), ("n_layers", -1)])
def test_invalid_circuit_sizes(field, value):
    kwargs = {"n_qubits": 2, "n_layers": 1, field: value}
    with pytest.raises(ValueError, match=field):
        build_circuit("angle", **kwargs)
