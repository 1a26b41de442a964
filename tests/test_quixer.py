"""Quixer: the ansatz-14 circuit, evolve on qelm.fused against default.qubit (states and gradients to 1e-10 in
complex128), the CUDA kernel against the torch code, the model's shapes, twin and parameter counts."""

from __future__ import annotations

import pytest
import torch

from qelm.backends import get_backend
from qelm.circuits import Ansatz14Circuit
from qelm.quixer import Quixer, QuixerConfig, QuixerTwin, init_like_reference, mixer_parameters, pauli_xyz

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs an NVIDIA GPU (torch sees no CUDA device)")


def _loss(re, im):
    w = torch.arange(re.shape[-1], dtype=re.dtype, device=re.device)
    return (re * w).sum() + (im * im * w).sum() + (re * im).sum()


def _assert_evolve_matches(c, a, psi):
    """qelm.fused's evolve against default.qubit's: states and gradients to 1e-10."""
    outs, grads = [], []
    for name in ("qelm.fused", "default.qubit"):
        out = get_backend(name).evolve(c, a, psi)
        outs.append(out)
        grads.append(torch.autograd.grad(_loss(out.real, out.imag), [a, psi]))
    assert torch.allclose(outs[0], outs[1], atol=1e-10)
    for g0, g1 in zip(*grads):
        assert torch.allclose(g0, g1, atol=1e-10)


@pytest.mark.parametrize("n,layers", [(2, 1), (3, 2), (4, 1)])
def test_evolve_matches_default_qubit(n, layers):
    c = Ansatz14Circuit(n, layers)
    torch.manual_seed(n)
    a = torch.randn(5, c.n_angles, dtype=torch.float64, requires_grad=True)
    psi = torch.randn(5, 2**n, dtype=torch.complex128, requires_grad=True)
    _assert_evolve_matches(c, a, psi)


def test_quixer_layer_matches_on_both_backends():
    cfg = QuixerConfig(vocab_size=40, n_qubits=3, window=4, d_embed=8, dropout=0.0)
    torch.manual_seed(0)
    fused = Quixer(cfg, "qelm.fused").double()
    ref = Quixer(cfg, "default.qubit").double()
    ref.load_state_dict(fused.state_dict())
    x = torch.randint(0, 40, (3, 4))
    a, b = fused(x), ref(x)
    assert torch.allclose(a, b, atol=1e-10)
    ga = torch.autograd.grad(a.square().sum(), list(fused.parameters()))
    gb = torch.autograd.grad(b.square().sum(), list(ref.parameters()))
    for x0, x1 in zip(ga, gb):
        assert torch.allclose(x0, x1, atol=1e-10)


def test_pauli_features_of_known_states():
    # |0> on 2 qubits: <X> = <Y> = 0, <Z> = 1; |+i> (RX(-pi/2)|0>) on qubit 0: <Y> = 1
    re = torch.tensor([[1.0, 0, 0, 0]], dtype=torch.float64)
    assert torch.allclose(pauli_xyz(re, torch.zeros_like(re), 2), torch.tensor([[0, 0, 0, 0, 1, 1.0]], dtype=torch.float64))
    s = 2**-0.5
    re, im = torch.tensor([[s, 0, 0, 0]], dtype=torch.float64), torch.tensor([[0, 0, s, 0]], dtype=torch.float64)
    assert torch.allclose(pauli_xyz(re, im, 2), torch.tensor([[0, 0, 1, 0, 0, 1.0]], dtype=torch.float64))


def test_published_sizes_and_twin_budget():
    cfg = QuixerConfig(vocab_size=9924)
    q, t = init_like_reference(Quixer(cfg)), init_like_reference(QuixerTwin(cfg))
    assert sum(p.numel() for p in q.parameters()) == 10_231_168  # the table's 10.23M
    assert mixer_parameters(t) <= mixer_parameters(q)
    x = torch.randint(0, 9924, (2, 32))
    assert q(x).shape == t(x).shape == (2, 9924)


@pytest.mark.parametrize("field,value,words", [("window", 24, "power of two"), ("n_qubits", 1, "CRX ring"),
                                               ("degree", 0, "degree"), ("n_qubits", 17, "at most 16")])
def test_bad_config_names_the_field(field, value, words):
    with pytest.raises(ValueError, match=words):
        QuixerConfig(vocab_size=10, **{field: value})


def test_ids_of_the_wrong_window_are_refused():
    q = Quixer(QuixerConfig(vocab_size=10, n_qubits=2, window=4, d_embed=4))
    with pytest.raises(ValueError, match=r"\(windows, 4\)"):
        q(torch.zeros(2, 5, dtype=torch.long))


@pytest.mark.gpu
@cuda
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_cuda_kernel_matches_torch_code(dtype):
    """The generated kernel against the torch code, values and gradients: in float64 to 1e-10; in float32 each
    against the float64 answer, the kernel no further from it than 4x the torch code is (both round, in
    different orders, on states of norm ~8 through 4 layers, so a fixed tolerance says little)."""
    pytest.importorskip("cupy", reason="the evolve kernel is compiled by CuPy (pip install cupy-cuda12x)")
    c = Ansatz14Circuit(6, 4)
    torch.manual_seed(0)
    a = torch.randn(300, c.n_angles, dtype=torch.float64, device="cuda")
    re = torch.randn(300, 64, dtype=torch.float64, device="cuda")
    im = torch.randn(300, 64, dtype=torch.float64, device="cuda")

    def run(kernel: bool, dt: torch.dtype):
        backend = get_backend("qelm.fused", dtype="complex128" if dt == torch.float64 else "complex64")
        backend.evolve_kernel = kernel
        inputs = [t.to(dt).requires_grad_() for t in (a, re, im)]
        out = backend.evolve_pairs(c, *inputs)
        return [t.double() for t in out + torch.autograd.grad(_loss(*out), inputs)]

    if dtype == torch.float64:
        for x0, x1 in zip(run(True, dtype), run(False, dtype)):
            assert torch.allclose(x0, x1, atol=1e-10, rtol=1e-10)
        return
    exact = run(False, torch.float64)
    for name, k, t, x in zip(("re", "im", "grad angles", "grad re", "grad im"), run(True, dtype), run(False, dtype), exact):
        err_kernel, err_torch = (k - x).abs().max().item(), (t - x).abs().max().item()
        assert err_kernel <= 4 * err_torch + 1e-6 * x.abs().max().item(), (name, err_kernel, err_torch)


def test_evolve_every_gate_it_knows_matches_default_qubit():
    import pennylane as qml
    from dataclasses import dataclass

    from qelm.circuits import Circuit

    @dataclass(frozen=True)
    class _Mixed(Circuit):
        name = "evolve_mixed_test"
        returns = "state"

        @property
        def n_inputs(self):
            return 6

        @property
        def weight_shape(self):
            return (0,)

        def apply(self, a):
            qml.Hadamard(wires=0)
            qml.RX(a[..., 0], wires=0)
            qml.CRY(a[..., 1], wires=[0, 2])
            qml.CNOT(wires=[2, 1])
            qml.RZ(a[..., 2], wires=1)
            qml.CRZ(a[..., 3], wires=[1, 0])
            qml.PauliX(wires=2)
            qml.CZ(wires=[0, 2])
            qml.RY(a[..., 4], wires=2)
            qml.CRX(a[..., 5], wires=[2, 0])

    c = _Mixed(3, 1)
    torch.manual_seed(3)
    a = torch.randn(4, 6, dtype=torch.float64, requires_grad=True)
    psi = torch.randn(4, 8, dtype=torch.complex128, requires_grad=True)
    _assert_evolve_matches(c, a, psi)
