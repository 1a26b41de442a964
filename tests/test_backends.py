"""Every backend against an independent default.qubit reference, on every built-in circuit.

Tolerances: values 1e-6, gradients 1e-5 (float64 angles). Shot estimates: within 5 standard deviations of
the binomial shot noise ``sqrt((1 - <Z>^2) / shots)`` of each expectation.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from functools import cache

import pennylane as qml
import pytest
import torch

from qelm.backends import BACKENDS, BackendUnavailable, get_backend
from qelm.circuits import CIRCUITS, Circuit

VALUE_TOL = 1e-6
GRAD_TOL = 1e-5
SIZES = [(2, 1), (2, 2), (3, 1), (3, 2)]  # (n_qubits, n_layers)
CASES = [(name, nq, nl) for name in CIRCUITS for nq, nl in SIZES]
HAS_AER = importlib.util.find_spec("qiskit_aer") is not None
HAS_LIGHTNING = importlib.util.find_spec("pennylane_lightning") is not None
try:  # the module pennylane-lightning-gpu installs (its parent package may be missing)
    HAS_LIGHTNING_GPU = importlib.util.find_spec("pennylane_lightning.lightning_gpu") is not None
except ModuleNotFoundError:
    HAS_LIGHTNING_GPU = False
NO_LIGHTNING_GPU = "pennylane-lightning-gpu is not installed: pip install 'qelm-lab[gpu]'"

BACKEND_PARAMS = [
    pytest.param("default.qubit", {}, id="default.qubit"),
    pytest.param("lightning.qubit", {}, id="lightning.qubit",
                 marks=pytest.mark.skipif(not HAS_LIGHTNING, reason="pennylane-lightning not installed")),
    pytest.param("qiskit.aer", {}, id="qiskit.aer",
                 marks=pytest.mark.skipif(not HAS_AER, reason="qiskit-aer not installed")),
    # the GPU backends (make test-gpu): skipped, with the reason, without a GPU or their package
    pytest.param("lightning.gpu", {}, id="lightning.gpu",
                 marks=[pytest.mark.gpu, pytest.mark.skipif(not HAS_LIGHTNING_GPU, reason=NO_LIGHTNING_GPU)]),
    pytest.param("qiskit.aer", {"device": "GPU"}, id="qiskit.aer-GPU",
                 marks=[pytest.mark.gpu, pytest.mark.skipif(not HAS_AER, reason="qiskit-aer not installed")]),
]


@cache
def _backend(name: str, **options):
    if options.get("device") == "GPU":  # qiskit-aer (CPU) is installed; its GPU build may not be
        from qiskit_aer import AerSimulator

        if "GPU" not in AerSimulator().available_devices():
            pytest.skip("qiskit-aer has no GPU device here: pip install 'qelm-lab[gpu]' (see the README)")
    return get_backend(name, **options)


def _angles(circuit: Circuit, n: int = 3, seed: int = 0, dtype=torch.float64) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return (torch.rand(n, circuit.n_angles, generator=g, dtype=torch.float64) * 6.0 - 3.0).to(dtype)


@cache
def _reference(name: str, nq: int, nl: int):
    """Values and the Jacobian-vector product for a fixed cotangent, from a plain default.qubit QNode
    (backprop), independent of qelm's backend code."""
    circuit = CIRCUITS[name](nq, nl)
    dev = qml.device("default.qubit", wires=circuit.n_wires)

    @qml.qnode(dev, interface="torch", diff_method="backprop")
    def node(angles):
        circuit.apply(angles)
        return [qml.expval(qml.PauliZ(w)) for w in circuit.observables]

    angles = _angles(circuit).requires_grad_()
    out = torch.stack(list(node(angles)), dim=-1)
    cot = torch.linspace(-1.0, 1.0, out.numel(), dtype=torch.float64).reshape(out.shape)
    (grad,) = torch.autograd.grad(out, angles, cot)
    return circuit, angles.detach(), out.detach(), cot, grad


@pytest.mark.parametrize("backend_name, options", BACKEND_PARAMS)
@pytest.mark.parametrize("name, nq, nl", CASES, ids=[f"{n}-{q}q{k}l" for n, q, k in CASES])
def test_values_and_gradients_match_reference(backend_name, options, name, nq, nl):
    circuit, angles, ref, cot, ref_grad = _reference(name, nq, nl)
    backend = _backend(backend_name, **options)
    a = angles.clone().requires_grad_()
    if backend_name == "qiskit.aer" and circuit.name == "ansatz14":  # two-term shift rules only: refused
        with pytest.raises(ValueError, match="controlled rotation CRX, which this backend does not run"):
            backend.expval(circuit, a)
        return
    out = backend.expval(circuit, a)
    assert out.shape == (angles.shape[0], len(circuit.observables))
    assert out.dtype == torch.float64
    torch.testing.assert_close(out.detach(), ref, atol=VALUE_TOL, rtol=0)
    (grad,) = torch.autograd.grad(out, a, cot)
    torch.testing.assert_close(grad, ref_grad, atol=GRAD_TOL, rtol=0)


@dataclass(frozen=True)
class _OneAngle(Circuit):
    """Test circuits driven by a single input angle."""

    @property
    def n_inputs(self):
        return 1

    @property
    def n_angles(self):
        return 1


@dataclass(frozen=True)
class _ArithmeticOnAngle(_OneAngle):
    """Breaks the circuit contract: a gate angle computed from the angle vector."""

    name = "bad"

    def apply(self, angles):
        qml.RY(2 * angles[..., 0], wires=0)


@pytest.mark.skipif(not HAS_AER, reason="qiskit-aer not installed")
class TestAer:
    def test_no_grad_path_and_dtype(self):
        circuit, angles, ref, _, _ = _reference("angle", 3, 2)
        out = _backend("qiskit.aer").expval(circuit, angles.float())
        assert out.dtype == torch.float32 and not out.requires_grad
        torch.testing.assert_close(out.double(), ref, atol=1e-5, rtol=0)

    def test_single_sample_and_empty_batch(self):
        circuit, angles, ref, _, _ = _reference("swap_test", 2, 1)
        backend = _backend("qiskit.aer")
        torch.testing.assert_close(backend.expval(circuit, angles[:1]), ref[:1], atol=VALUE_TOL, rtol=0)
        assert backend.expval(circuit, angles[:0]).shape == (0, 1)

    @pytest.mark.parametrize("name", ["angle", "swap_test"])
    def test_shots_within_binomial_bound(self, name):
        shots = 20000
        circuit, angles, ref, _, _ = _reference(name, 2, 1)
        backend = get_backend("qiskit.aer", shots=shots, seed=1234)
        out = backend.expval(circuit, angles)
        sigma = torch.sqrt((1 - ref**2).clamp_min(0) / shots)
        assert torch.all((out - ref).abs() <= 5 * sigma + 1e-12), (out - ref).abs() / sigma
        # not the exact values: shot noise is really there
        assert (out - ref).abs().max() > 0
        # a sample mean of +-1 outcomes over `shots` shots
        assert torch.allclose(torch.round((out + 1) / 2 * shots), (out + 1) / 2 * shots, atol=1e-6)

    def test_shots_are_seeded(self):
        circuit, angles, _, _, _ = _reference("angle", 2, 1)
        a = get_backend("qiskit.aer", shots=100, seed=7).expval(circuit, angles)
        b = get_backend("qiskit.aer", shots=100, seed=7).expval(circuit, angles)
        torch.testing.assert_close(a, b, atol=0, rtol=0)

    def test_shot_gradient_within_bound(self):
        shots = 20000
        circuit, angles, _, _, _ = _reference("angle", 2, 1)
        a = angles.clone().requires_grad_()
        ref = _backend("qiskit.aer").expval(circuit, a)
        (ref_grad,) = torch.autograd.grad(ref.sum(), a)
        b = angles.clone().requires_grad_()
        out = get_backend("qiskit.aer", shots=shots, seed=99).expval(circuit, b)
        (grad,) = torch.autograd.grad(out.sum(), b)
        # d/dθ sum_o <Z_o> = sum_o (E+ - E-)/2: variance at most n_obs * 2 * (1/shots) / 4
        sigma = (len(circuit.observables) * 0.5 / shots) ** 0.5
        assert torch.all((grad - ref_grad).abs() <= 5 * sigma)

    def test_qubit_order_on_basis_state(self):
        """X on PennyLane wire 0 only: <Z_0> = -1, others +1 (wire 0 is qiskit's last qubit)."""

        @dataclass(frozen=True)
        class FlipFirst(_OneAngle):
            name = "flip_first"

            def apply(self, angles):
                qml.RX(angles[..., 0], wires=0)
                qml.CNOT(wires=[0, 2])

        c = FlipFirst(3, 1)
        out = _backend("qiskit.aer").expval(c, torch.full((1, 1), torch.pi, dtype=torch.float64))
        torch.testing.assert_close(out, torch.tensor([[-1.0, 1.0, -1.0]], dtype=torch.float64), atol=1e-12, rtol=0)

    def test_arithmetic_on_angles_is_rejected(self):
        with pytest.raises(ValueError, match="one entry"):
            get_backend("qiskit.aer").expval(_ArithmeticOnAngle(1, 1), torch.zeros(1, 1, dtype=torch.float64))

    def test_noise_model_density_matrix_damps(self):
        from qiskit_aer.noise import NoiseModel, depolarizing_error

        nm = NoiseModel()
        nm.add_all_qubit_quantum_error(depolarizing_error(0.1, 1), ["rx", "ry", "rz"])
        circuit, angles, ref, _, _ = _reference("angle", 2, 1)
        out = get_backend("qiskit.aer", noise_model=nm, method="density_matrix").expval(circuit, angles)
        assert torch.all(out.abs() <= ref.abs() + 1e-9) and (out - ref).abs().max() > 1e-3

    def test_bad_option_values(self):
        with pytest.raises(ValueError, match="CPU, GPU"):
            get_backend("qiskit.aer", device="TPU")
        with pytest.raises(ValueError, match="statevector"):
            get_backend("qiskit.aer", method="stabiliser")
        with pytest.raises(ValueError, match="NoiseModel"):
            get_backend("qiskit.aer", noise_model="depolarizing")
        with pytest.raises(ValueError, match="shots"):
            get_backend("qiskit.aer", shots=0)

    def test_gpu_unavailable_names_package(self):
        from qiskit_aer import AerSimulator

        if "GPU" in AerSimulator().available_devices():
            pytest.skip("qiskit-aer-gpu is usable here")
        with pytest.raises(BackendUnavailable, match="device='GPU' cannot run here") as e:
            get_backend("qiskit.aer", device="GPU")
        import importlib.metadata

        try:  # the real condition, named: the package missing, no GPU, or the CPU build shadowing the GPU one
            importlib.metadata.version("qiskit-aer-gpu")
            expected = "pip install --force-reinstall --no-deps" if torch.cuda.is_available() else "no CUDA GPU"
        except importlib.metadata.PackageNotFoundError:
            expected = "qiskit-aer-gpu is not installed: pip install 'qelm-lab[gpu]'"
        assert expected in str(e.value)


@pytest.mark.skipif(not HAS_LIGHTNING, reason="pennylane-lightning not installed")
class TestLightning:
    def test_kernels_by_default_qnode_path_otherwise(self):
        assert _backend("lightning.qubit").uses_kernels
        assert not get_backend("lightning.qubit", diff_method="parameter-shift").uses_kernels
        assert not get_backend("lightning.qubit", shots=100).uses_kernels

    @pytest.mark.parametrize("name", ["amplitude", "swap_test", "feed_forward"])
    def test_kernels_agree_with_lightning_qnode(self, name):
        """The kernel path against the same device through a PennyLane QNode (parameter shift)."""
        circuit, angles, _, cot, _ = _reference(name, 3, 2)
        grads, outs = [], []
        for backend in (_backend("lightning.qubit"), get_backend("lightning.qubit", diff_method="parameter-shift")):
            a = angles.clone().requires_grad_()
            out = backend.expval(circuit, a)
            outs.append(out.detach())
            grads.append(torch.autograd.grad(out, a, cot)[0])
        torch.testing.assert_close(outs[0], outs[1], atol=VALUE_TOL, rtol=0)
        torch.testing.assert_close(grads[0], grads[1], atol=GRAD_TOL, rtol=0)

    @pytest.mark.parametrize("name", ["angle", "swap_test", "fidelity"])
    def test_host_readout_equals_lightning_measurements(self, name):
        """The readout lightning.gpu uses for small states (the state copied to the host, |psi|^2 @ Z signs),
        checked here on lightning.qubit's identical bindings against Lightning's own expvals."""
        import numpy as np
        from pennylane_lightning import lightning_qubit_ops

        from qelm.backends.lightning import _Kernels

        circuit, angles, ref, _, _ = _reference(name, 3, 2)
        values = angles.numpy()
        host = _Kernels(circuit, lightning_qubit_ops, host_readout=True).expval(values)
        device = _Kernels(circuit, lightning_qubit_ops, host_readout=False).expval(values)
        np.testing.assert_allclose(host, device, atol=1e-12, rtol=0)
        np.testing.assert_allclose(host, ref.numpy(), atol=VALUE_TOL, rtol=0)

    def test_no_grad_path_dtype_single_and_empty_batch(self):
        circuit, angles, ref, _, _ = _reference("angle", 3, 2)
        backend = _backend("lightning.qubit")
        with torch.no_grad():
            out = backend.expval(circuit, angles.float().requires_grad_())
        assert out.dtype == torch.float32 and not out.requires_grad
        torch.testing.assert_close(out.double(), ref, atol=1e-6, rtol=0)
        torch.testing.assert_close(backend.expval(circuit, angles[:1]), ref[:1], atol=VALUE_TOL, rtol=0)
        assert backend.expval(circuit, angles[:0]).shape == (0, len(circuit.observables))

    def test_wrong_angle_shape_and_arithmetic_are_rejected(self):
        circuit, angles, _, _, _ = _reference("angle", 3, 2)
        with pytest.raises(ValueError, match=r"angles must be \(N, "):
            _backend("lightning.qubit").expval(circuit, angles[:, :-1])
        with pytest.raises(ValueError, match="one entry"):
            _backend("lightning.qubit").expval(_ArithmeticOnAngle(1, 1), torch.zeros(1, 1, dtype=torch.float64))


def test_unknown_backend_lists_valid_names():
    with pytest.raises(ValueError, match="unknown backend") as e:
        get_backend("qiskit.aer.gpu")
    for name in BACKENDS:
        assert name in str(e.value)


def test_unknown_option_lists_valid_options():
    with pytest.raises(ValueError, match="unknown option") as e:
        get_backend("default.qubit", precision=3)
    assert "shots" in str(e.value) and "diff_method" in str(e.value)
    if HAS_AER:
        with pytest.raises(ValueError, match="unknown option") as e:
            get_backend("qiskit.aer", diff_method="adjoint")
        for opt in ("shots", "seed", "noise_model", "device", "method"):
            assert opt in str(e.value)


def test_lightning_gpu_unavailable_gives_install_hint():
    """The real condition: the package pennylane-lightning-gpu 0.45 installs (pennylane_lightning.lightning_gpu)
    and a CUDA GPU; the message says which one is missing."""
    from qelm.backends.pennylane import installed

    has_package = installed("pennylane_lightning.lightning_gpu")
    if has_package and torch.cuda.is_available():
        pytest.skip("lightning.gpu can run here")
    with pytest.raises(BackendUnavailable) as e:
        get_backend("lightning.gpu")
    if not has_package:
        assert "is not installed" in str(e.value) and "pip install 'qelm-lab[gpu]'" in str(e.value)
    else:
        assert "no CUDA GPU" in str(e.value)


@pytest.mark.gpu
@pytest.mark.skipif(not HAS_LIGHTNING_GPU, reason=NO_LIGHTNING_GPU)
@pytest.mark.parametrize("name", ["angle", "swap_test"])
def test_lightning_gpu_kernels_take_cuda_tensors_and_agree_with_its_qnode(name):
    """lightning.gpu's kernel path takes angles on the GPU (read on the host, results back on the GPU), and
    agrees with the same device through a PennyLane QNode (parameter shift), and with default.qubit."""
    circuit, angles, ref, cot, ref_grad = _reference(name, 3, 2)
    kernels = _backend("lightning.gpu")
    assert kernels.uses_kernels
    a = angles.cuda().requires_grad_()
    out = kernels.expval(circuit, a)
    (grad,) = torch.autograd.grad(out, a, cot.cuda())
    assert out.is_cuda and grad.is_cuda
    torch.testing.assert_close(out.detach().cpu(), ref, atol=VALUE_TOL, rtol=0)
    torch.testing.assert_close(grad.cpu(), ref_grad, atol=GRAD_TOL, rtol=0)
    qnode = get_backend("lightning.gpu", diff_method="parameter-shift")
    assert not qnode.uses_kernels
    b = angles.cuda().requires_grad_()
    out_q = qnode.expval(circuit, b)
    (grad_q,) = torch.autograd.grad(out_q, b, cot.cuda())
    torch.testing.assert_close(out_q.detach(), out.detach(), atol=VALUE_TOL, rtol=0)
    torch.testing.assert_close(grad_q, grad, atol=GRAD_TOL, rtol=0)


def test_installed_looks_inside_packages():
    from qelm.backends.pennylane import installed

    assert installed("pennylane_lightning") and installed("qelm.backends.fused")
    assert not installed("pennylane_lightning.no_such_device") and not installed("no_such_package.sub")


@pytest.mark.parametrize("device", ["default.qubit", pytest.param("lightning.qubit", marks=pytest.mark.skipif(
    not HAS_LIGHTNING, reason="pennylane-lightning not installed"))])
@pytest.mark.parametrize("diff_method", ["parameter-shift", "finite-diff"])
def test_pennylane_diff_method_override_on_a_broadcast_batch(device, diff_method):
    """A gradient transform on a batch: PennyLane refuses broadcast tapes there, qelm expands them."""
    circuit, angles, ref, cot, ref_grad = _reference("angle", 3, 2)
    backend = get_backend(device, diff_method=diff_method)
    a = angles.clone().requires_grad_()
    out = backend.expval(circuit, a)
    (grad,) = torch.autograd.grad(out, a, cot)
    torch.testing.assert_close(out.detach(), ref, atol=VALUE_TOL, rtol=0)
    torch.testing.assert_close(grad, ref_grad, atol=GRAD_TOL if diff_method == "parameter-shift" else 1e-4, rtol=0)


def test_pennylane_shots_give_gradients_within_bound():
    shots = 20000
    circuit, angles, ref, _, _ = _reference("angle", 2, 1)
    a = angles.clone().requires_grad_()
    out = get_backend("default.qubit", shots=shots, seed=5).expval(circuit, a)
    sigma = torch.sqrt((1 - ref**2).clamp_min(0) / shots)
    assert torch.all((out.detach() - ref).abs() <= 5 * sigma + 1e-12)
    (grad,) = torch.autograd.grad(out.sum(), a)
    b = angles.clone().requires_grad_()
    (exact,) = torch.autograd.grad(_backend("default.qubit").expval(circuit, b).sum(), b)
    # parameter shift from shots: each entry is a sum over observables of (E+ - E-)/2
    bound = 5 * (len(circuit.observables) * 0.5 / shots) ** 0.5
    assert torch.all((grad - exact).abs() <= bound) and (grad - exact).abs().max() > 0


READOUT_BACKENDS = [
    pytest.param("qelm.fused", {}, id="qelm.fused"),
    pytest.param("default.qubit", {}, id="default.qubit"),
    pytest.param("lightning.qubit", {}, id="lightning.qubit",
                 marks=pytest.mark.skipif(not HAS_LIGHTNING, reason="pennylane-lightning not installed")),
    pytest.param("qiskit.aer", {}, id="qiskit.aer", marks=pytest.mark.skipif(not HAS_AER, reason="qiskit-aer not installed")),
]


def _readout_reference(circuit, x, w):
    """Features from a plain default.qubit QNode's basis probabilities: <Z_S> = sum_b p_b (-1)^|b & S|."""
    from qelm.circuits import z_signs

    dev = qml.device("default.qubit", wires=circuit.n_wires)

    @qml.qnode(dev, interface="torch", diff_method="backprop")
    def node(angles):
        circuit.apply(angles)
        return qml.probs(wires=circuit.wires)

    probs = node(circuit.angles(x, w))  # (N, 2**n)
    if circuit.readout == "probs":
        return probs
    return probs @ z_signs(circuit.n_wires, circuit.z_strings, probs)


@pytest.mark.parametrize("backend_name, options", READOUT_BACKENDS)
@pytest.mark.parametrize("readout", ["zz", "probs"])
@pytest.mark.parametrize("name", ["angle", "attention", "feed_forward"])
def test_readouts_match_reference_with_gradients(backend_name, options, readout, name):
    from qelm.circuits import build_circuit

    circuit = build_circuit(name, 3, 2, readout)
    assert circuit.n_outputs == {"zz": 3 + 3, "probs": 8}[readout]
    g = torch.Generator().manual_seed(0)
    x = (torch.rand((4,) + circuit.input_shape, generator=g, dtype=torch.float64) * 3).requires_grad_()
    w = (torch.rand(circuit.weight_shape, generator=g, dtype=torch.float64) * 6).requires_grad_()
    ref = _readout_reference(circuit, x, w)
    out = circuit.features(_backend(backend_name, **options).run(circuit, x, w))
    torch.testing.assert_close(out, ref, atol=VALUE_TOL, rtol=0)
    if readout == "probs":
        torch.testing.assert_close(out.sum(-1), torch.ones(4, dtype=torch.float64), atol=1e-9, rtol=0)
    cot = torch.linspace(-1, 1, out.numel(), dtype=torch.float64).reshape(out.shape)
    for a, b in zip(torch.autograd.grad(ref, (x, w), cot), torch.autograd.grad(out, (x, w), cot)):
        torch.testing.assert_close(b, a, atol=GRAD_TOL, rtol=0)


@pytest.mark.parametrize("backend_name", [pytest.param("default.qubit"), pytest.param(
    "qiskit.aer", marks=pytest.mark.skipif(not HAS_AER, reason="qiskit-aer not installed"))])
@pytest.mark.parametrize("readout", ["zz", "probs"])
def test_readouts_with_shots_within_binomial_bound(backend_name, readout):
    """Each Z string is a +-1 observable: its shot estimate is within 5 sigma of sqrt((1 - <Z>^2) / shots)."""
    from qelm.circuits import build_circuit

    circuit = build_circuit("angle", 3, 1, readout)
    x = torch.rand((6,) + circuit.input_shape, dtype=torch.float64) * 3
    w = torch.rand(circuit.weight_shape, dtype=torch.float64) * 6
    shots = 4000
    exact = get_backend("qelm.fused").run(circuit, x, w)
    sampled = get_backend(backend_name, shots=shots, seed=1).run(circuit, x, w).detach()
    sigma = ((1 - exact.square()).clamp_min(1e-12) / shots).sqrt()
    assert ((sampled - exact).abs() <= 5 * sigma + 1e-9).all()


@pytest.mark.parametrize("readout", ["zz", "probs"])
def test_model_with_richer_readout_trains(readout):
    from qelm import QELM, QELMConfig

    cfg = QELMConfig(vocab_size=11, d_model=8, n_heads=2, d_hidden=16, context_len=6, n_qubits=2, circuit_layers=1,
                     readout=readout)
    model = QELM(cfg)
    features = {"zz": 3, "probs": 4}[readout]  # n + n(n-1)/2, or 2**n, for n = 2
    assert model.embedding.expand.in_features == features
    assert model.blocks[0].attention.expand.in_features == 2 * features
    idx = torch.randint(0, 11, (2, 6))
    _, loss = model(idx, idx)
    loss.backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())
    with pytest.raises(ValueError, match="readout='xyz'"):
        QELMConfig(readout="xyz")


def test_an_option_a_backend_does_not_take_is_one_error():
    with pytest.raises(ValueError, match=r"unknown option\(s\) cuda_graph for backend 'lightning.qubit': valid options"):
        get_backend("lightning.qubit", cuda_graph=True)
