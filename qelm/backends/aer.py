"""qiskit-aer as a qelm backend: one ``EstimatorV2`` call per batch, batched parameter-shift gradients.

Each circuit structure (``circuit.key``) is translated once into a parameterized ``qiskit.QuantumCircuit``
from its gate list (:func:`qelm.backends.gates.gate_list`: every gate angle mapped to the entry of the
angle vector it came from).

Forward: one ``EstimatorV2.run`` with a single pub ``(circuit, Z observables (1, n_obs), values (N, 1, U))``
broadcast to ``(N, n_obs)``. Backward (a ``torch.autograd.Function``): the two-term parameter-shift rule
(+-pi/2) for all U gate angles of all N samples in one more ``EstimatorV2.run`` of ``2*U*N`` bindings,
then the vector-Jacobian product. The rule is exact here because every angle drives one gate whose
generator has eigenvalues +-1/2 (RX, RY, RZ, PhaseShift, the three rotations of Rot, IsingXX/YY/ZZ).

Shots: qiskit-aer's ``EstimatorV2`` computes exact expectations with ``save_expectation_value`` and, for a
``precision > 0``, only adds Gaussian noise of that fixed standard deviation (``N(<Z>, precision)``, which
can leave [-1, 1] and ignores that the shot noise of ``<Z>`` is ``sqrt((1 - <Z>^2) / shots)``). So this
backend always asks for ``precision=0`` and, when ``shots`` is set, draws the shot estimate itself: each
``<Z_w>`` becomes ``2 k / shots - 1`` with ``k ~ Binomial(shots, (1 + <Z_w>) / 2)``, which is exactly the
distribution of measuring qubit w in Z ``shots`` times (per observable; the correlations between
observables of one sample are not modelled). Draws come from a ``numpy`` generator seeded with ``seed``;
the same generator also seeds ``seed_simulator`` of every Aer run (noise trajectories).

Noise: ``noise_model`` (a ``qiskit_aer.noise.NoiseModel``) goes to the ``AerSimulator``. With
``method="density_matrix"`` the noisy expectations are exact; with ``"statevector"`` Aer averages
``shots`` (1024 when shots is None) Monte-Carlo noise trajectories.

Noise as hardware would show it: ``noise`` (a spec of :mod:`qelm.backends.noise`: named models or a device's
calibration) needs ``shots``. Each circuit is prepared once as it would run (transpiled to the device,
for a device model), its noisy outcome probabilities are simulated exactly (density matrix), the
readout errors are applied to them, and ``shots`` bitstrings are drawn per sample; every Z string of the
readout is read from the same bitstrings, as on hardware. ``mitigation`` (a spec of
:mod:`qelm.backends.mitigation`: ``zne``, ``readout``, ``twirl``) runs the folded and twirled variants of each
circuit for the whole batch in one Aer call and combines them. ``usage`` counts the circuits run and
the shots they took, calibration and mitigation included.

Gradients: ``gradient="parameter_shift"`` (default; 2 circuits per angle and sample) or ``"spsa"``
(simultaneous perturbation: every angle of a sample moved at once by ``+-SPSA_STEP`` along a random
sign vector, 2 circuits per sample whatever the number of angles). SPSA is a noisy, slightly shrunk
estimate (each component by about ``cos(SPSA_STEP)**(angles - 1)``, 0.86 at 32 angles); an optimizer
like AdamW, which normalises step sizes, absorbs the shrink.
"""

from __future__ import annotations

import importlib.metadata
import math

import numpy as np
import torch
from torch.autograd.function import once_differentiable

from ..errors import BackendError
from ._aer_noise import NoisySampler
from .base import Backend, BackendUnavailable, check_angles
from .gates import check_gates, gate_list
from .mitigation import parse_mitigation
from .noise import parse_noise

__all__ = ["AerBackend", "translate", "DEVICES", "METHODS", "GRADIENTS", "SPSA_STEP"]

_INSTALL = "pip install qiskit qiskit-aer"
# qiskit-aer-gpu installs the same module as qiskit-aer (a dependency of qelm), and pip lets the CPU build's
# files win when both are installed together: the GPU build's files are put back on top, without its deps
_REINSTALL_GPU = 'pip install --force-reinstall --no-deps "qiskit-aer-gpu>=0.18,<0.19"'
_INSTALL_GPU = (f"pip install 'qelm-lab[gpu]' (qiskit-aer-gpu and the CUDA 12 libraries it links), then "
                f"{_REINSTALL_GPU} (qiskit-aer's CPU build shares its module)")
DEVICES = ("CPU", "GPU")
METHODS = ("automatic", "statevector", "density_matrix", "matrix_product_state")
GRADIENTS = ("parameter_shift", "spsa")
SPSA_STEP = 0.1  # SPSA perturbation of every angle (radians)

# PennyLane gate name -> qiskit method name. ``q`` maps wires to qubits.
_QISKIT = {
    "Hadamard": "h", "PauliX": "x", "PauliY": "y", "PauliZ": "z", "S": "s", "T": "t", "SX": "sx",
    "Adjoint(S)": "sdg", "Adjoint(T)": "tdg", "Adjoint(SX)": "sxdg",
    "CNOT": "cx", "CZ": "cz", "CY": "cy", "SWAP": "swap", "CSWAP": "cswap", "Toffoli": "ccx",
    "RX": "rx", "RY": "ry", "RZ": "rz", "PhaseShift": "p", "IsingXX": "rxx", "IsingYY": "ryy", "IsingZZ": "rzz",
    "CRX": "crx", "CRY": "cry", "CRZ": "crz",
}


class _Compiled:
    """One circuit structure in qiskit form."""

    def __init__(self, qc, observables, cols: np.ndarray, n_angles: int, z_qubits=(), key=None) -> None:
        self.qc = qc  # parameterized QuantumCircuit, parameters theta[i] for the used angle entries
        self.observables = observables  # [[SparsePauliOp, ...]]: shape (1, n_obs)
        self.n_obs = len(observables[0])
        self.cols = cols  # angle-vector column of each of qc.parameters, in qc.parameters order
        self.n_angles = n_angles
        self.z_qubits = z_qubits  # the qiskit qubits of each observable's Z string
        self.key = key  # the circuit structure it came from


def translate(circuit, controlled: bool = False):
    """Translate ``circuit`` (a :class:`qelm.circuits.Circuit`) into a :class:`_Compiled` qiskit circuit.

    Qubit order: PennyLane wire 0 is the most significant bit, qiskit qubit 0 the least significant, so
    PennyLane wire ``w`` becomes qiskit qubit ``n - 1 - w``. Basis-state indices then agree between the two,
    and Pauli-Z on wire ``w`` is the qiskit label with ``Z`` at string position ``w`` (labels are written
    with qubit ``n - 1`` first).
    """
    # lazy: qiskit is slow to import; only qiskit.aer and the exports use it
    from qiskit import QuantumCircuit
    from qiskit.circuit import ParameterVector
    from qiskit.quantum_info import SparsePauliOp

    n, n_angles = circuit.n_wires, circuit.n_angles
    theta = ParameterVector("theta", n_angles)
    qc = QuantumCircuit(n)

    def q(w) -> int:  # PennyLane wire w (0 = most significant) -> qiskit qubit n-1-w (0 = least significant)
        return n - 1 - int(w)

    # controlled rotations only for export (qelm.export.to_qiskit): this backend's batched parameter-shift
    # gradients are two-term, which is exact for ROTATIONS only, so running refuses them (gate_list says so)
    for g in gate_list(circuit, controlled=controlled):
        qubits = [q(w) for w in g.wires]
        if g.angle is not None or g.value is not None:
            getattr(qc, _QISKIT[g.name])(theta[g.angle] if g.angle is not None else g.value, *qubits)
        else:
            getattr(qc, _QISKIT[g.name])(*qubits)

    cols = np.array([p.index for p in qc.parameters], dtype=np.int64)
    z_qubits = [tuple(q(w) for w in z) for z in circuit.z_strings]  # the readout's Z strings
    paulis = [SparsePauliOp.from_sparse_list([("Z" * len(z), list(z), 1.0)], num_qubits=n) for z in z_qubits]
    observables = [paulis]  # shape (1, n_obs): broadcasts against values (N, 1, U) to (N, n_obs)
    return _Compiled(qc, observables, cols, n_angles, z_qubits, circuit.key)


class _AerExpval(torch.autograd.Function):
    @staticmethod
    def forward(ctx, angles, backend, compiled):
        values = angles.detach().to(device="cpu", dtype=torch.float64).numpy()
        ctx.backend, ctx.compiled = backend, compiled
        ctx.save_for_backward(angles)
        out = backend._estimate(compiled, values[:, compiled.cols])
        return torch.as_tensor(out, device=angles.device).to(angles.dtype)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_output):
        (angles,) = ctx.saved_tensors
        compiled = ctx.compiled
        values = angles.detach().to(device="cpu", dtype=torch.float64).numpy()[:, compiled.cols]  # (N, U)
        n, u = values.shape
        grad = np.zeros((n, compiled.n_angles))
        if u and n and ctx.backend.gradient == "spsa":
            # one random sign vector per sample, every angle moved at once: 2 circuits per sample
            delta = ctx.backend._rng.choice(np.array([-1.0, 1.0]), size=(n, u))  # (N, U)
            ev = ctx.backend._estimate(compiled, np.concatenate([values + SPSA_STEP * delta, values - SPSA_STEP * delta]))
            slope = (ev[:n] - ev[n:]) / (2 * SPSA_STEP)  # (N, n_obs): directional derivative along delta
            g = grad_output.detach().to(device="cpu", dtype=torch.float64).numpy()
            grad[:, compiled.cols] = delta * np.einsum("no,no->n", slope, g)[:, None]
        elif u and n:
            # every (sample, angle, sign) shifted copy at once: (N, 2, U, U) -> (2*U*N, U)
            shift = np.array([math.pi / 2, -math.pi / 2])[:, None, None] * np.eye(u)[None]
            shifted = (values[:, None, None, :] + shift[None]).reshape(-1, u)
            ev = ctx.backend._estimate(compiled, shifted).reshape(n, 2, u, -1)
            jac = 0.5 * (ev[:, 0] - ev[:, 1])  # (N, U, n_obs)
            g = grad_output.detach().to(device="cpu", dtype=torch.float64).numpy()
            grad[:, compiled.cols] = np.einsum("nuo,no->nu", jac, g)
        return torch.as_tensor(grad, device=angles.device).to(angles.dtype), None, None


def _gpu_missing(devices) -> str:
    """Why qiskit-aer offers no GPU device here, and the command that fixes it."""
    head = f"backend 'qiskit.aer' with device='GPU' cannot run here (qiskit-aer offers {', '.join(devices)})"
    try:
        gpu_version = importlib.metadata.version("qiskit-aer-gpu")
    except importlib.metadata.PackageNotFoundError:
        return f"{head}: qiskit-aer-gpu is not installed: {_INSTALL_GPU}"
    if not torch.cuda.is_available():
        return f"{head}: no CUDA GPU is visible (torch sees none); run on a machine with an NVIDIA GPU"
    return (f"{head}: qiskit-aer-gpu {gpu_version} is installed but the module qiskit_aer is qiskit-aer's CPU build "
            f"(both install it): {_REINSTALL_GPU}")


class AerBackend(Backend):
    """qiskit-aer ``EstimatorV2``: the whole batch in one call, gradients by batched parameter shift."""

    name = "qiskit.aer"
    supports_state = False
    options = ("noise_model", "device", "method", "noise", "mitigation", "gradient")
    _transient = Backend._transient + ("_sampled",)

    def __init__(self, shots: int | None = None, seed: int | None = None, noise_model=None,
                 device: str = "CPU", method: str = "statevector", noise: str | None = None,
                 mitigation: str | None = None, gradient: str = "parameter_shift") -> None:
        super().__init__(shots=shots, seed=seed)
        try:  # lazy, and checked: a missing or broken qiskit-aer (GPU build) is named here, with the fix
            import qiskit  # noqa: F401
            from qiskit_aer import AerSimulator
            from qiskit_aer.noise import NoiseModel
            from qiskit_aer.primitives import EstimatorV2
        except ImportError as e:
            if ".so" in str(e):  # qiskit-aer-gpu without a CUDA 12 library it links
                raise BackendUnavailable(f"backend 'qiskit.aer' cannot load qiskit-aer-gpu's CUDA libraries ({e}): "
                                         f"{_INSTALL_GPU}") from None
            raise BackendUnavailable(f"backend 'qiskit.aer' is not installed ({e}): {_INSTALL}") from None
        if device not in DEVICES:
            raise BackendError(f"device={device!r} is invalid for backend 'qiskit.aer': valid devices are {', '.join(DEVICES)}")
        if method not in METHODS:
            raise BackendError(f"method={method!r} is invalid for backend 'qiskit.aer': valid methods are {', '.join(METHODS)}")
        if noise_model is not None and not isinstance(noise_model, NoiseModel):
            raise BackendError(f"noise_model must be None or a qiskit_aer.noise.NoiseModel, got {type(noise_model).__name__}")
        if gradient not in GRADIENTS:
            raise BackendError(f"gradient={gradient!r} is invalid for backend 'qiskit.aer': valid gradients are "
                             f"{', '.join(GRADIENTS)}")
        self.gradient = gradient
        self.noise = self.mitigation = None
        if noise is not None:
            if noise_model is not None:
                raise BackendError("give noise (a spec such as 'depolarizing') or noise_model (a NoiseModel), not both")
            self.noise = parse_noise(noise)
        if mitigation is not None:
            self.mitigation = parse_mitigation(mitigation)
            if self.noise is None and noise_model is None:
                raise BackendError(f"mitigation {mitigation!r} needs a noise model to mitigate: give noise (e.g. "
                                 f"'depolarizing', --noise) or noise_model")
        if (self.noise is not None or self.mitigation is not None) and shots is None:
            raise BackendError(f"{'noise' if self.noise is not None else 'mitigation'} needs shots: noisy hardware "
                             f"answers with measured bitstrings, and readout errors and mitigation act on them; set "
                             f"shots (e.g. 1024, --shots 1024)")
        if device == "GPU" and "GPU" not in AerSimulator().available_devices():
            raise BackendUnavailable(_gpu_missing(AerSimulator().available_devices()))
        self.noise_model, self.device, self.method = noise_model, device, method
        # runtime parameter binding: Aer binds the parameter sets at run time instead of building one bound
        # copy of the circuit per set; for the 4-qubit angle circuit's backward pass (3584 sets) it roughly
        # halved the time of the EstimatorV2 call (qiskit-aer 0.18.2, 2-core CPU)
        backend_options = {"method": method, "device": device, "runtime_parameter_bind_enable": True}
        if noise_model is not None:
            backend_options["noise_model"] = noise_model
        run_options = {}
        if noise_model is not None and shots is not None:
            run_options["shots"] = shots  # number of noise trajectories (statevector method)
        self._estimator = EstimatorV2(options={"default_precision": 0.0, "backend_options": backend_options,
                                               "run_options": run_options})
        self._rng = np.random.default_rng(seed)
        self._compiled: dict = {}
        #: circuits run and shots taken (calibration and mitigation included): what hardware would be asked for
        self.usage = {"circuits": 0, "shots": 0}
        self._sampled: NoisySampler | None = None  # the noisy path's state (prepared circuits, calibrations), built on first use

    @property
    def sampled(self) -> bool:
        """Whether circuits run the noisy sampling path (``noise`` or ``mitigation`` given)."""
        return self.noise is not None or self.mitigation is not None

    def compile(self, circuit) -> _Compiled:
        """The qiskit translation of ``circuit``, built once per ``circuit.key``."""
        if circuit.key not in self._compiled:
            self._compiled[circuit.key] = translate(circuit)
        return self._compiled[circuit.key]

    def _estimate(self, compiled: _Compiled, values: np.ndarray) -> np.ndarray:
        """``values`` (M, U) for ``compiled.qc.parameters`` -> (M, n_obs), one EstimatorV2 run."""
        m = values.shape[0]
        n_obs = compiled.n_obs
        if m == 0:
            return np.zeros((0, n_obs))
        if self.sampled:
            if self._sampled is None:
                self._sampled = NoisySampler(self.noise, self.noise_model, self.mitigation, self.device, self.seed)
            assert self.shots is not None  # noise and mitigation need shots: refused in __init__ without them
            return self._sampled.estimate(compiled, values, self.shots, self._rng, self.usage)
        self.usage["circuits"] += m
        self.usage["shots"] += m * (self.shots or 0)
        run_options = self._estimator.options.run_options
        if self.seed is not None:
            run_options["seed_simulator"] = int(self._rng.integers(2**31 - 1))
        params = values.reshape(m, 1, -1) if values.shape[1] else None
        pub = (compiled.qc, compiled.observables, params) if params is not None else (compiled.qc, compiled.observables)
        ev = np.asarray(self._estimator.run([pub], precision=0.0).result()[0].data.evs, dtype=np.float64)
        ev = np.broadcast_to(ev, (m, n_obs))
        if self.shots is not None:
            p = np.clip((1.0 + ev) / 2.0, 0.0, 1.0)
            ev = 2.0 * self._rng.binomial(self.shots, p) / self.shots - 1.0
        return np.array(ev, dtype=np.float64)

    def check_circuit(self, circuit) -> None:
        """Its gates translate into one parameterized qiskit circuit: rotations with a two-term shift rule (no
        controlled rotations), each angle one entry of the angle vector."""
        check_gates(self.name, circuit)

    def expval(self, circuit, angles: torch.Tensor) -> torch.Tensor:
        check_angles(circuit, angles)
        compiled = self.compile(circuit)
        if angles.requires_grad and torch.is_grad_enabled():
            return _AerExpval.apply(angles, self, compiled)
        values = angles.detach().to(device="cpu", dtype=torch.float64).numpy()
        out = self._estimate(compiled, values[:, compiled.cols])
        return torch.as_tensor(out, device=angles.device).to(angles.dtype)

    def describe(self) -> str:
        method = "density_matrix" if self.sampled else self.method
        parts = [method, self.device, "exact" if self.shots is None else f"{self.shots} shots"]
        if self.noise is not None:
            parts.append(f"noise {self.noise.describe()}")
        elif self.noise_model is not None:
            parts.append("noise model")
        if self.mitigation is not None:
            parts.append(f"mitigation {self.mitigation.describe()}")
        if self.gradient != "parameter_shift":
            parts.append(f"{self.gradient} gradients")
        return f"{self.name} ({', '.join(parts)})"
