"""lightning.qubit and lightning.gpu through Lightning's own kernels: one state vector per sample, adjoint
Jacobians in C++ (on the CPU) or cuStateVec (on an NVIDIA GPU).

Lightning simulates one state at a time: it has no broadcast kernel and no batched-parameter API. Through a
QNode, PennyLane therefore expands a broadcast batch of N angle vectors into N tapes and sends each one
through its whole execution pipeline (transforms, validation, serialization, adjoint differentiation),
about 5-13 ms per sample for qelm's 4-qubit circuits, 20-90x the cost of the same batch on default.qubit.

This module keeps the device's kernels and its adjoint differentiation (``StateVectorC128``,
``MeasurementsC128``, ``AdjointJacobianC128``, which ``pennylane_lightning.lightning_qubit_ops`` and
``pennylane_lightning.lightning_gpu_ops`` bind with the same signatures) and drops
the per-tape pipeline: each circuit structure becomes a gate list once (:func:`qelm.backends.gates.gate_list`),
and a batch is one ``torch.autograd.Function`` call whose forward applies the gates of every sample,
measures the Pauli-Z expectations; its backward runs Lightning's adjoint method once per sample on the
cotangent-weighted sum of the observables, which gives the vector-Jacobian product directly. The loop over samples is written
here because the library offers no batched entry point; its body is C++ calls (about 0.2 ms per sample
forward and backward for a 4-qubit, 40-gate circuit), and ``benchmarks/backends.py`` measures it against default.qubit and
against the QNode path, which stays available with ``diff_method="parameter-shift"`` or shots.

lightning.gpu is the same code on the GPU module. One state vector is allocated per circuit structure (on
the angles' GPU, else the current one: each process's under ``torch.distributed``) and reset for every sample: a lightning.gpu state vector owns cuBLAS / cuStateVec handles, whose creation costs
far more than simulating a small circuit. The angles may live on any device (they are read on the host,
where Lightning takes its parameters); results come back on the angles' device. What bounds the GPU path
is the number of kernel launches per sample (one per gate, per observable, and the adjoint pass's two per
gate), not the state size, until the state is large enough to fill the GPU: ``benchmarks/gpu_backends.py``
measures where that happens.
"""

from __future__ import annotations

import importlib
from typing import Any

import numpy as np
import torch
from torch.autograd.function import once_differentiable

from ..circuits import z_signs
from ..errors import BackendError
from .base import BackendUnavailable, check_angles
from .gates import CONTROLLED_ROTATIONS, ROTATIONS, check_gates, gate_list
from .pennylane import _INSTALL, PennyLaneBackend

__all__ = ["LightningBackend"]

_PARAMETRIC = ROTATIONS | CONTROLLED_ROTATIONS  # Lightning applies and differentiates both (adjoint)

#: lightning.gpu reads the <Z> strings of states up to this many qubits on the host (one copy of the state,
#: then |psi|^2 @ signs) rather than through ``MeasurementsC128.expval``: on an H200 at 4 qubits the copy took
#: 9 us and the four expvals 0.8 ms (each a cuStateVec call that synchronises); past about 16 qubits the
#: copy and the host product grow with 2**n while the device's expvals do not
HOST_READOUT_MAX_WIRES = 16

#: the compiled module that binds each device's kernels
OPS = {"lightning.qubit": "pennylane_lightning.lightning_qubit_ops",
       "lightning.gpu": "pennylane_lightning.lightning_gpu_ops"}


def load_gpu_ops():
    """``pennylane_lightning.lightning_gpu_ops``, checked: a CUDA GPU torch can see, the CUDA 12 libraries
    the module links (cudart, cuBLAS, cuSPARSE, nvJitLink, cuStateVec), and a state vector it can allocate.
    Each failure is a :class:`BackendUnavailable` naming what is missing and what to install."""
    if not torch.cuda.is_available():
        raise BackendUnavailable("backend 'lightning.gpu' is installed but torch sees no CUDA GPU here: run on a "
                                 "machine with an NVIDIA GPU, or use 'qelm.fused' (CPU or CUDA)")
    try:
        ops = importlib.import_module(OPS["lightning.gpu"])
    except ImportError as e:  # e.g. "libcustatevec.so.1: cannot open shared object file"
        raise BackendUnavailable(f"backend 'lightning.gpu' cannot load its CUDA libraries ({e}): "
                                 f"{_INSTALL['lightning.gpu']}") from None
    try:
        ops.StateVectorC128(1)
    except Exception as e:  # Lightning raises its own error types when no device / runtime is usable
        raise BackendUnavailable(f"backend 'lightning.gpu' cannot start on this GPU ({e}); it needs an NVIDIA GPU "
                                 f"of compute capability 7.0 or newer and a driver for CUDA 12: "
                                 f"{_INSTALL['lightning.gpu']}") from None
    return ops


class _Kernels:
    """One circuit structure, ready for Lightning's kernels (``ops``: the device's compiled module)."""

    def __init__(self, circuit, ops, host_readout: bool | None = None, gpu: int | None = None) -> None:
        self.ops, self.gpu = ops, gpu  # gpu: the CUDA device index lightning.gpu's state vector lives on
        NamedObsC128, TensorProdObsC128 = ops.observables.NamedObsC128, ops.observables.TensorProdObsC128
        self._sv: Any = None  # a Lightning state vector (untyped library), allocated on first use and reset for every sample (module docstring)

        gates = gate_list(circuit, controlled=True)
        self.n_wires, self.n_angles = circuit.n_wires, circuit.n_angles
        # Lightning names Adjoint(S) as S with the inverse flag
        self.names = [g.name[len("Adjoint("):-1] if g.name.startswith("Adjoint(") else g.name for g in gates]
        self.inverses = [g.name.startswith("Adjoint(") for g in gates]
        self.wires = [list(g.wires) for g in gates]
        rotations = [g for g in gates if g.name in _PARAMETRIC]
        self.has_param = [g.name in _PARAMETRIC for g in gates]
        self.constants = np.array([g.value if g.angle is None else 0.0 for g in rotations])
        self.param_cols = np.array([-1 if g.angle is None else g.angle for g in rotations], dtype=np.int64)
        # Lightning numbers the parameters of all gates in order; the trainable ones are the driven angles
        self.trainable = [k for k, g in enumerate(rotations) if g.angle is not None]
        self.cols = self.param_cols[self.trainable]
        named = [[NamedObsC128("PauliZ", [w]) for w in z] for z in circuit.z_strings]  # Z strings of the readout
        self.observables = [obs[0] if len(obs) == 1 else TensorProdObsC128(obs) for obs in named]
        if host_readout is None:
            host_readout = gpu is not None and self.n_wires <= HOST_READOUT_MAX_WIRES
        self._signs = None  # (2**n, n_obs) Z-string signs when the readout is on the host (HOST_READOUT_MAX_WIRES)
        if host_readout:
            self._signs = z_signs(self.n_wires, circuit.z_strings, torch.empty(0, dtype=torch.float64)).numpy()
            self._state = np.empty(2**self.n_wires, dtype=np.complex128)
        self._empty = np.zeros(0, dtype=np.complex128)

    def params(self, values: np.ndarray) -> np.ndarray:
        """``values`` (N, n_angles) -> (N, n_rotations): each rotation's angle, constants filled in."""
        out = np.broadcast_to(self.constants, (values.shape[0], len(self.constants))).copy()
        driven = self.param_cols >= 0
        out[:, driven] = values[:, self.param_cols[driven]]
        return out

    def _simulate(self, params: list[float]):
        """The final state of one sample, and its gates' parameter lists (for the adjoint pass)."""
        it = iter(params)
        gate_params = [[next(it)] if p else [] for p in self.has_param]
        if self._sv is None:
            self._sv = self.ops.StateVectorC128(self.n_wires) if self.gpu is None \
                else self.ops.StateVectorC128(self.n_wires, self.ops.DevTag(self.gpu))
        sv = self._sv
        sv.resetStateVector()
        for name, wires, inverse, p in zip(self.names, self.wires, self.inverses, gate_params):
            getattr(sv, name)(wires, inverse, p)
        return sv, gate_params

    def expval(self, values: np.ndarray) -> np.ndarray:
        """``values`` (N, n_angles) -> Pauli-Z expectations (N, n_obs)."""
        MeasurementsC128 = self.ops.MeasurementsC128
        out = np.empty((values.shape[0], len(self.observables)))
        for s, params in enumerate(self.params(values).tolist()):  # one C++ simulation per sample (see above)
            sv = self._simulate(params)[0]
            if self._signs is not None:
                sv.getState(self._state)
                out[s] = (self._state.real**2 + self._state.imag**2) @ self._signs
            else:
                measure = MeasurementsC128(sv)
                out[s] = [measure.expval(o) for o in self.observables]
        return out

    def vjp(self, values: np.ndarray, grad_output: np.ndarray) -> np.ndarray:
        """``sum_o grad_output[n, o] * d<Z_o>/d angle`` (N, n_angles), by Lightning's adjoint method.

        One adjoint pass per sample with the observable ``sum_o g_o Z_o`` (a Lightning Hamiltonian) costs
        about half of the full Jacobian's one pass per observable; the state is simulated again for it,
        which is cheaper than keeping N states from the forward pass."""
        algorithms, HamiltonianC128 = self.ops.algorithms, self.ops.observables.HamiltonianC128
        AdjointJacobianC128, create_ops_listC128 = algorithms.AdjointJacobianC128, algorithms.create_ops_listC128
        grad = np.zeros((values.shape[0], self.n_angles))
        if not self.trainable:
            return grad
        adjoint = AdjointJacobianC128()
        n_gates = len(self.names)
        no_controls: list[list] = [[] for _ in range(n_gates)]
        mats = [self._empty] * n_gates
        for s, params in enumerate(self.params(values).tolist()):  # one C++ adjoint pass per sample
            sv, gate_params = self._simulate(params)
            ops = create_ops_listC128(self.names, gate_params, self.wires, self.inverses, mats, no_controls, no_controls)
            cotangent = HamiltonianC128(grad_output[s].tolist(), self.observables)
            grad[s, self.cols] = np.asarray(adjoint(sv, [cotangent], ops, self.trainable))
        return grad


class _LightningExpval(torch.autograd.Function):
    @staticmethod
    def forward(ctx, angles, kernels):
        ctx.kernels = kernels
        ctx.save_for_backward(angles)
        return _to(kernels.expval(_host(angles)), angles)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_output):
        (angles,) = ctx.saved_tensors
        return _to(ctx.kernels.vjp(_host(angles), _host(grad_output)), grad_output), None


class LightningBackend(PennyLaneBackend):
    """``lightning.qubit`` or ``lightning.gpu``: exact adjoint runs on Lightning's kernels; shots or another
    diff method go through a PennyLane QNode on the same device."""

    options = ("diff_method",)  # no cuda_graph: Lightning launches its own kernels, outside torch's streams

    def __init__(self, device_name: str = "lightning.qubit", shots: int | None = None, seed: int | None = None,
                 diff_method: str | None = None) -> None:
        if device_name not in OPS:
            raise BackendError(f"device_name={device_name!r} is invalid: use one of {', '.join(OPS)}")
        super().__init__(device_name, shots=shots, seed=seed, diff_method=diff_method)  # checks the package
        if device_name == "lightning.gpu":
            load_gpu_ops()  # fail here, naming what is missing, rather than at the first forward pass
        self.uses_kernels = shots is None and self.diff_method == "adjoint"
        self._kernels: dict = {}

    def check_circuit(self, circuit) -> None:
        """With Lightning's kernels (exact, adjoint): its gates translate into a gate list, each angle one entry
        of the angle vector; with shots or another diff method PennyLane runs it, as on any device."""
        if self.uses_kernels:
            check_gates(self.name, circuit, controlled=True)

    @property
    def _ops(self):
        """The device's compiled module (imported once by Python; not pickled with the backend)."""
        return importlib.import_module(OPS[self.name])

    def expval(self, circuit, angles: torch.Tensor) -> torch.Tensor:
        if not self.uses_kernels:
            return super().expval(circuit, angles)
        check_angles(circuit, angles)
        if angles.device.type != "cpu" and self.name == "lightning.qubit":
            raise BackendError(f"backend {self.name!r} takes CPU tensors; move the model to the CPU or use default.qubit")
        gpu = None
        if self.name == "lightning.gpu":  # the angles' GPU, else the current one (each process's, under DDP)
            gpu = angles.device.index if angles.is_cuda else torch.cuda.current_device()
        if (circuit.key, gpu) not in self._kernels:
            self._kernels[circuit.key, gpu] = _Kernels(circuit, self._ops, gpu=gpu)
        kernels = self._kernels[circuit.key, gpu]
        if angles.requires_grad and torch.is_grad_enabled():
            return _LightningExpval.apply(angles, kernels)
        return _to(kernels.expval(_host(angles)), angles)


def _host(t: torch.Tensor) -> np.ndarray:
    """Lightning takes its parameters on the host, as float64."""
    return t.detach().to("cpu", torch.float64).numpy()


def _to(out: np.ndarray, like: torch.Tensor) -> torch.Tensor:
    return torch.from_numpy(out).to(device=like.device, dtype=like.dtype)
