"""qelm.fused against default.qubit: every built-in circuit at 1..8 qubits (the swap test up to 17 wires),
expectations, states and gradients with respect to inputs and weights, per weight set; and its refusals.

Tolerances (the issue's parity targets): 1e-10 in complex128, 1e-5 in complex64.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import pennylane as qml
import pytest
import torch

from qelm import QELM, QELMConfig
from qelm.backends import get_backend
from qelm.circuits import CIRCUITS, Circuit, build_circuit

TOL = {"complex128": 1e-10, "complex64": 1e-5}
FAST = [(name, n) for name in CIRCUITS for n in (1, 2, 3, 4) if not (name == "swap_test" and n > 2)
        and not (name == "ansatz14" and n < 2)]
# the wide end: 5..8 qubits (the swap test 7 and 8 qubits: 15 and 17 wires), fewer samples
WIDE = [(name, n) for name in CIRCUITS for n in (5, 6, 7, 8) if name not in ("swap_test", "amplitude")] + \
       [("amplitude", 5), ("amplitude", 6), ("amplitude", 8), ("swap_test", 3), ("swap_test", 7), ("swap_test", 8)]


def _data(circuit: Circuit, sets: tuple[int, ...], m: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    x = (torch.rand(sets + (m,) + circuit.input_shape, generator=g, dtype=torch.float64) * 4 - 2).requires_grad_()
    w = (torch.rand(sets + circuit.weight_shape, generator=g, dtype=torch.float64) * 6.3).requires_grad_()
    return x, w


def _vjp(out: torch.Tensor, wrt, seed: int = 1):
    """Gradients of <c, out> for a fixed random cotangent c (real and imaginary parts for states)."""
    g = torch.Generator().manual_seed(seed)
    if out.is_complex():
        c = torch.complex(torch.randn(out.shape, generator=g, dtype=torch.float64),
                          torch.randn(out.shape, generator=g, dtype=torch.float64)).to(out.dtype)
        loss = (out * c).real.sum()
    else:
        loss = (out * torch.randn(out.shape, generator=g, dtype=torch.float64).to(out.dtype)).sum()
    return torch.autograd.grad(loss, wrt)


def _compare(name: str, n: int, dtype: str, sets=(2,), m=3, kinds=("expval", "state")):
    circuit = build_circuit(name, n, 2 if name != "swap_test" else 1)
    ref, fused = get_backend("default.qubit"), get_backend("qelm.fused", dtype=dtype)
    tol = TOL[dtype]
    for kind in kinds:
        x, w = _data(circuit, sets, m)
        a = ref.run(circuit, x, w, kind)
        b = fused.run(circuit, x, w, kind)
        assert b.shape == a.shape
        torch.testing.assert_close(b.to(a.dtype), a, atol=tol, rtol=0, msg=lambda s: f"{name} n={n} {kind}: {s}")
        for ga, gb in zip(_vjp(a, (x, w)), _vjp(b, (x, w))):
            torch.testing.assert_close(gb, ga, atol=tol * 10, rtol=0, msg=lambda s: f"{name} n={n} {kind} grad: {s}")


@pytest.mark.parametrize("dtype", ["complex128", "complex64"])
@pytest.mark.parametrize("name, n", FAST, ids=[f"{c}-{n}q" for c, n in FAST])
def test_matches_default_qubit(name, n, dtype):
    _compare(name, n, dtype)


@pytest.mark.parametrize("name, n", WIDE, ids=[f"{c}-{n}q" for c, n in WIDE])
def test_matches_default_qubit_wide(name, n):
    _compare(name, n, "complex128", sets=(2,) if n < 7 else (1,), m=2, kinds=("expval",) if name == "swap_test" else ("expval", "state"))


@pytest.mark.parametrize("sets", [(), (3,), (2, 3)])
def test_weight_sets_are_independent(sets):
    """Each weight set meets only its own samples: the batched call equals one call per set."""
    circuit = build_circuit("attention", 3, 2)
    fused = get_backend("qelm.fused")
    x, w = _data(circuit, sets, 4)
    out = fused.run(circuit, x, w)
    assert out.shape == sets + (4, 3)
    flat_x, flat_w = x.reshape((-1, 4) + circuit.input_shape), w.reshape((-1,) + circuit.weight_shape)
    each = torch.stack([fused.run(circuit, xi, wi) for xi, wi in zip(flat_x, flat_w)])
    torch.testing.assert_close(out.reshape(each.shape), each, atol=1e-12, rtol=0)


def test_angle_vectors_match_default_qubit():
    """The angle-vector interface (every angle per sample) runs the same circuits."""
    for name in CIRCUITS:
        circuit = build_circuit(name, 3, 2)
        angles = (torch.rand(5, circuit.n_angles, dtype=torch.float64) * 6).requires_grad_()
        a = get_backend("default.qubit").expval(circuit, angles)
        b = get_backend("qelm.fused").expval(circuit, angles)
        torch.testing.assert_close(b, a, atol=1e-10, rtol=0)
        torch.testing.assert_close(_vjp(b, angles)[0], _vjp(a, angles)[0], atol=1e-10, rtol=0)


@dataclass(frozen=True)
class _Vocabulary(Circuit):
    """Every gate of the traced vocabulary, data and weight angles mixed, entangling weight rotations."""

    name = "vocabulary"

    @property
    def n_inputs(self):
        return 3

    @property
    def weight_shape(self):
        return (6,)

    def apply(self, a):
        qml.Hadamard(0), qml.RX(a[..., 0], wires=1), qml.PhaseShift(a[..., 1], wires=2), qml.T(2)
        qml.IsingXX(a[..., 3], wires=[0, 2]), qml.CZ(wires=[0, 1]), qml.S(1), qml.SX(0)
        qml.RZ(a[..., 2], wires=0), qml.IsingYY(a[..., 4], wires=[1, 2]), qml.CY(wires=[2, 0])
        qml.Toffoli(wires=[0, 1, 2]), qml.PauliY(1), qml.adjoint(qml.T(0)), qml.SWAP(wires=[0, 2])
        qml.IsingZZ(a[..., 5], wires=[0, 1]), qml.PhaseShift(a[..., 6], wires=1), qml.RX(a[..., 7], wires=2)
        qml.CSWAP(wires=[1, 0, 2]), qml.RY(a[..., 8], wires=1)


def test_any_circuit_of_the_gate_vocabulary():
    circuit = _Vocabulary(3, 1)
    x, w = _data(circuit, (2,), 3)
    for kind in ("expval", "state"):
        a = get_backend("default.qubit").run(circuit, x, w, kind)
        b = get_backend("qelm.fused").run(circuit, x, w, kind)
        torch.testing.assert_close(b, a, atol=1e-10, rtol=0)
        for ga, gb in zip(_vjp(a, (x, w)), _vjp(b, (x, w))):
            torch.testing.assert_close(gb, ga, atol=1e-10, rtol=0)


def test_model_logits_and_gradients_match_default_qubit():
    cfg = QELMConfig(vocab_size=13, d_model=8, n_heads=2, d_hidden=16, context_len=6, n_qubits=3, circuit_layers=2)
    torch.manual_seed(0)
    model = QELM(cfg.replace(backend="default.qubit")).double()
    idx = torch.randint(0, 13, (2, 6))
    logits_a, loss_a = model(idx, idx)
    grads_a = torch.autograd.grad(loss_a, list(model.parameters()))
    model.set_backend("qelm.fused")
    logits_b, loss_b = model(idx, idx)
    grads_b = torch.autograd.grad(loss_b, list(model.parameters()))
    torch.testing.assert_close(logits_b, logits_a, atol=1e-10, rtol=0)
    for a, b in zip(grads_a, grads_b):
        torch.testing.assert_close(b, a, atol=1e-10, rtol=0)


def test_shots_are_refused_with_the_backends_that_sample():
    with pytest.raises(ValueError, match="qiskit.aer"):
        get_backend("qelm.fused", shots=100)
    with pytest.raises(ValueError, match="shots=100.*qiskit.aer"):
        QELMConfig(shots=100)


def test_bad_dtype_is_refused():
    with pytest.raises(ValueError, match="dtype='float16'.*complex128, complex64"):
        get_backend("qelm.fused", dtype="float16")


def test_too_wide_is_refused_before_any_allocation():
    circuit = build_circuit("angle", 40, 1)
    x, w = _data(circuit, (), 2)
    with pytest.raises(MemoryError, match=r"n_qubits=40.*GiB.*lightning.qubit"):
        get_backend("qelm.fused").run(circuit, x, w)


def test_memory_check_counts_gate_by_gate_passes(monkeypatch):
    """Up to MAX_FUSED_WIRES the weights of a block too wide to fuse run gate by gate and every pass keeps
    a state for backward: the check counts the passes, so a call that fits the per-layer count but not the
    real one is refused before it allocates, naming the batch that fits."""
    import qelm.backends.fused as fused
    from qelm.backends.fused_plan import state_passes

    small, wide = build_circuit("angle", 4, 2), build_circuit("swap_test", 4, 2)  # 9 wires
    assert state_passes(small, small.angle_layout()) == 1
    assert state_passes(wide, wide.angle_layout()) > 10
    x, w = _data(wide, (), 4096)
    monkeypatch.setattr(fused, "free_memory_bytes", lambda device: 2**29)  # 14 states x 4096 fit, 28 do not
    with pytest.raises(MemoryError, match=r"n_qubits=4.*(MiB|GiB) for 4096 states.*at most \d+ states fit"):
        get_backend("qelm.fused").run(wide, x, w)


def test_a_circuit_that_breaks_the_contract_names_the_backend_that_runs_it():
    @dataclass(frozen=True)
    class Doubled(Circuit):
        name = "doubled"

        @property
        def n_inputs(self):
            return 1

        def apply(self, a):
            qml.RY(2 * a[..., 0], wires=0)

    circuit = Doubled(1, 1)
    x, w = _data(circuit, (), 2)
    with pytest.raises(ValueError, match="doubled.*default.qubit"):
        get_backend("qelm.fused").run(circuit, x, w)


def test_inconsistent_angle_layout_is_refused():
    @dataclass(frozen=True)
    class Swapped(Circuit):
        """Overrides angles() (weights first) without saying so in angle_layout()."""

        name = "swapped"

        @property
        def n_inputs(self):
            return 1

        def angles(self, inputs, weights):
            w = weights.reshape(weights.shape[: weights.dim() - 3] + (-1,)).expand(inputs.shape[:-1] + (self.n_weights,))
            return torch.cat([w.to(inputs.dtype), inputs], dim=-1)

        def apply(self, a):
            qml.RY(a[..., -1], wires=0)
            qml.StronglyEntanglingLayers(a[..., :-1].reshape(a.shape[:-1] + (1, 1, 3)), wires=[0])

    circuit = Swapped(1, 1)
    x, w = _data(circuit, (), 2)
    with pytest.raises(ValueError, match="swapped.*angle_layout"):
        get_backend("qelm.fused").run(circuit, x, w)


def test_empty_batch_and_shapes_are_checked():
    circuit = build_circuit("angle", 2, 1)
    fused = get_backend("qelm.fused")
    x, w = _data(circuit, (), 0)
    assert fused.run(circuit, x, w).shape == (0, 2)
    with pytest.raises(ValueError, match="must end in"):
        fused.run(circuit, x[..., :1], w)
    with pytest.raises(ValueError, match="weight-set dims"):
        fused.run(circuit, torch.rand(3, 2, dtype=torch.float64), torch.rand((2,) + circuit.weight_shape))


def test_checkpoint_runs_on_fused_and_back(tmp_path):
    from qelm.checkpoint import load_checkpoint, save_checkpoint
    from qelm.tokenizer import CharTokenizer

    tok = CharTokenizer.from_text("abcdefghij ")
    cfg = QELMConfig(vocab_size=tok.vocab_size, d_model=8, n_heads=2, d_hidden=16, context_len=6, n_qubits=2,
                     circuit_layers=1, backend="default.qubit")
    model = QELM(cfg).double()
    idx = torch.randint(0, tok.vocab_size, (2, 6))
    save_checkpoint(tmp_path / "ck", model, tok)
    on_fused = load_checkpoint(tmp_path / "ck", backend="qelm.fused").model.double()
    torch.testing.assert_close(on_fused(idx)[0], model(idx)[0], atol=1e-10, rtol=0)
    save_checkpoint(tmp_path / "ck2", on_fused, tok)
    back = load_checkpoint(tmp_path / "ck2", backend="default.qubit").model.double()
    torch.testing.assert_close(back(idx)[0], model(idx)[0], atol=1e-10, rtol=0)
    assert math.isfinite(float(back(idx, idx)[1]))


def test_no_grad_calls_reuse_unitaries_until_the_weights_change():
    circuit = build_circuit("attention", 3, 2)
    fused = get_backend("qelm.fused")
    x, w = _data(circuit, (2,), 5)
    x, w = x.detach(), w.detach().clone()
    with torch.no_grad():
        first = fused.run(circuit, x, w)
        again = fused.run(circuit, x, w)
        w.add_(0.3)  # in place, as an optimizer step would
        moved = fused.run(circuit, x, w)
    torch.testing.assert_close(again, first, atol=0, rtol=0)
    torch.testing.assert_close(moved, get_backend("default.qubit").run(circuit, x, w), atol=1e-10, rtol=0)
    assert not torch.allclose(moved, first)
