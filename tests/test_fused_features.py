"""qelm.fused's feature form of narrow re-uploading circuits (qelm.backends.fused_features) against
default.qubit and against the stage-by-stage executor: values and gradients at 1e-10 in complex128."""

from __future__ import annotations

from dataclasses import dataclass

import pennylane as qml
import pytest
import torch

from qelm.backends import get_backend
from qelm.circuits import Circuit, build_circuit



def _data(circuit: Circuit, sets: tuple[int, ...], m: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    x = (torch.rand(sets + (m,) + circuit.input_shape, generator=g, dtype=torch.float64) * 4 - 2).requires_grad_()
    w = (torch.rand(sets + circuit.weight_shape, generator=g, dtype=torch.float64) * 6.3).requires_grad_()
    return x, w


def _vjp(out: torch.Tensor, wrt, seed: int = 1):
    """Gradients of <c, out> for a fixed random cotangent c (real and imaginary parts for states)."""
    g = torch.Generator().manual_seed(seed)
    c = torch.randn(out.shape + ((2,) if out.is_complex() else ()), generator=g, dtype=torch.float64)
    loss = (torch.view_as_real(out) * c).sum() if out.is_complex() else (out * c).sum()
    return torch.autograd.grad(loss, wrt)


def _uses_features(backend, circuit) -> bool:
    backend.run(circuit, *(t.detach() for t in _data(circuit, (), 1)))
    return backend._plans.get((type(circuit), circuit.key, "features")) is not None


def _both(circuit, x, w, kind="expval"):
    """The call on default.qubit, on the feature form and stage by stage."""
    fused, staged = get_backend("qelm.fused"), get_backend("qelm.fused")
    staged.features = False
    return [b.run(circuit, x, w, kind) for b in (get_backend("default.qubit"), fused, staged)]


def _assert_same(outs, wrt):
    grads = [_vjp(o, wrt) for o in outs]
    for out, g in zip(outs[1:], grads[1:]):
        torch.testing.assert_close(out, outs[0], atol=1e-10, rtol=0)
        for a, b in zip(grads[0], g):
            torch.testing.assert_close(b, a, atol=1e-10, rtol=0)


@pytest.mark.parametrize("name, n, layers, uses", [
    ("attention", 4, 2, True), ("feed_forward", 4, 2, True), ("fidelity", 4, 2, True), ("angle", 4, 2, True),
    ("attention", 2, 3, True), ("polar", 4, 2, False), ("amplitude", 4, 2, False), ("attention", 6, 2, False),
])
def test_which_circuits_take_the_feature_form(name, n, layers, uses):
    """Re-uploading and angle circuits of a few qubits do (81 monomials at 4 qubits, 2 layers); circuits
    with other data gates (polar's RZ, amplitude's controlled rotations) and wide ones run stage by stage."""
    assert _uses_features(get_backend("qelm.fused"), build_circuit(name, n, layers)) is uses


@pytest.mark.parametrize("name, kind", [("attention", "expval"), ("feed_forward", "expval"), ("fidelity", "state"),
                                        ("angle", "expval"), ("attention", "state")])
def test_feature_form_matches_default_qubit_and_the_staged_run(name, kind):
    circuit = build_circuit(name, 4, 2)
    x, w = _data(circuit, (2,), 5)
    _assert_same(_both(circuit, x, w, kind), (x, w))


def test_sets_that_share_their_inputs_share_one_feature_map():
    """The q, k and v circuits of a head see one input tensor expanded over the slot axis: one feature map,
    one GEMM per head; values and gradients equal the call on materialized inputs."""
    circuit = build_circuit("attention", 3, 2)
    g = torch.Generator().manual_seed(2)
    x = torch.rand(2, 1, 6, 3, generator=g, dtype=torch.float64).requires_grad_()
    w = torch.rand(2, 3, *circuit.weight_shape, generator=g, dtype=torch.float64).requires_grad_()
    expanded = x.expand(2, 3, 6, 3)
    assert expanded.stride(1) == 0
    outs = _both(circuit, expanded, w) + [get_backend("qelm.fused").run(circuit, expanded.contiguous(), w)]
    _assert_same(outs, (x, w))


@dataclass(frozen=True)
class _Mixed(Circuit):
    """Data RYs in an uneven pattern: wire 2 without a prefix rotation, input 0 on two wires, input 2 only
    once, a fixed permutation block and a T gate (a phase that is not a quarter turn) between the stages."""

    name = "mixed_features"

    @property
    def n_inputs(self):
        return 3

    @property
    def weight_shape(self):
        return (5,)

    @property
    def n_angles(self):
        return 6 + 5

    def encode(self, inputs):
        x0, x1, x2 = inputs.unbind(-1)
        return torch.stack([x0, x1, x0, x1, x2, x0], dim=-1)

    def apply(self, a):
        qml.RY(a[..., 0], wires=0), qml.RY(a[..., 1], wires=1)
        qml.RX(a[..., 6], wires=0), qml.RZ(a[..., 7], wires=2), qml.CNOT(wires=[0, 2]), qml.T(1)
        qml.RY(a[..., 2], wires=2), qml.RY(a[..., 3], wires=0)
        qml.CNOT(wires=[2, 1])
        qml.RY(a[..., 4], wires=1)
        qml.IsingXX(a[..., 8], wires=[0, 1]), qml.RY(a[..., 9], wires=2), qml.CZ(wires=[1, 2])
        qml.RY(a[..., 5], wires=0), qml.RY(a[..., 10], wires=1)


def test_an_uneven_circuit_matches_default_qubit():
    circuit = _Mixed(3, 1)
    assert _uses_features(get_backend("qelm.fused"), circuit)
    for kind in ("expval", "state"):
        x, w = _data(circuit, (2,), 4)
        _assert_same(_both(circuit, x, w, kind), (x, w))


def test_no_grad_calls_reuse_the_feature_matrix_until_the_weights_change():
    circuit = build_circuit("feed_forward", 4, 2)
    fused = get_backend("qelm.fused")
    x, w = (t.detach() for t in _data(circuit, (), 6))
    w = w.clone()
    with torch.no_grad():
        first = fused.run(circuit, x, w)
        assert torch.equal(fused.run(circuit, x, w), first)
        w.add_(0.3)  # in place, as an optimizer step would
        moved = fused.run(circuit, x, w)
    torch.testing.assert_close(moved, get_backend("default.qubit").run(circuit, x, w), atol=1e-10, rtol=0)
    assert not torch.allclose(moved, first)
