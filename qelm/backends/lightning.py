"""lightning.qubit through Lightning's own C++ kernels: one state vector per sample, adjoint Jacobians in C++.

Lightning simulates one state at a time: it has no broadcast kernel and no batched-parameter API. Through a
QNode, PennyLane therefore expands a broadcast batch of N angle vectors into N tapes and sends each one
through its whole execution pipeline (transforms, validation, serialization, adjoint differentiation),
about 5-13 ms per sample for qelm's 4-qubit circuits, 20-90x the cost of the same batch on default.qubit.

This module keeps the device's kernels and its adjoint differentiation (``StateVectorC128``,
``MeasurementsC128``, ``AdjointJacobianC128`` from ``pennylane_lightning.lightning_qubit_ops``) and drops
the per-tape pipeline: each circuit structure becomes a gate list once (:func:`qelm.backends.gates.gate_list`),
and a batch is one ``torch.autograd.Function`` call whose forward applies the gates of every sample,
measures the Pauli-Z expectations; its backward runs Lightning's adjoint method once per sample on the
cotangent-weighted sum of the observables, which gives the vector-Jacobian product directly. The loop over samples is written
here because the library offers no batched entry point; its body is C++ calls (about 0.2 ms per sample
forward and backward for a 4-qubit, 40-gate circuit), and ``benchmarks/backends.py`` measures it against default.qubit and
against the QNode path, which stays available with ``diff_method="parameter-shift"`` or shots.
"""

from __future__ import annotations

import numpy as np
import torch
from torch.autograd.function import once_differentiable

from .gates import ROTATIONS, gate_list
from . import check_angles
from .pennylane import PennyLaneBackend

__all__ = ["LightningBackend"]


class _Kernels:
    """One circuit structure, ready for Lightning's kernels."""

    def __init__(self, circuit) -> None:
        from pennylane_lightning.lightning_qubit_ops.observables import NamedObsC128, TensorProdObsC128

        gates = gate_list(circuit)
        self.n_wires, self.n_angles = circuit.n_wires, circuit.n_angles
        # Lightning names Adjoint(S) as S with the inverse flag
        self.names = [g.name[len("Adjoint("):-1] if g.name.startswith("Adjoint(") else g.name for g in gates]
        self.inverses = [g.name.startswith("Adjoint(") for g in gates]
        self.wires = [list(g.wires) for g in gates]
        rotations = [g for g in gates if g.name in ROTATIONS]
        self.has_param = [g.name in ROTATIONS for g in gates]
        self.constants = np.array([g.value if g.angle is None else 0.0 for g in rotations])
        self.param_cols = np.array([-1 if g.angle is None else g.angle for g in rotations], dtype=np.int64)
        # Lightning numbers the parameters of all gates in order; the trainable ones are the driven angles
        self.trainable = [k for k, g in enumerate(rotations) if g.angle is not None]
        self.cols = self.param_cols[self.trainable]
        named = [[NamedObsC128("PauliZ", [w]) for w in z] for z in circuit.z_strings]  # Z strings of the readout
        self.observables = [obs[0] if len(obs) == 1 else TensorProdObsC128(obs) for obs in named]
        self._empty = np.zeros(0, dtype=np.complex128)

    def params(self, values: np.ndarray) -> np.ndarray:
        """``values`` (N, n_angles) -> (N, n_rotations): each rotation's angle, constants filled in."""
        out = np.broadcast_to(self.constants, (values.shape[0], len(self.constants))).copy()
        driven = self.param_cols >= 0
        out[:, driven] = values[:, self.param_cols[driven]]
        return out

    def _simulate(self, params: list[float]):
        """The final state of one sample, and its gates' parameter lists (for the adjoint pass)."""
        from pennylane_lightning.lightning_qubit_ops import StateVectorC128

        it = iter(params)
        gate_params = [[next(it)] if p else [] for p in self.has_param]
        sv = StateVectorC128(self.n_wires)
        sv.resetStateVector()
        for name, wires, inverse, p in zip(self.names, self.wires, self.inverses, gate_params):
            getattr(sv, name)(wires, inverse, p)
        return sv, gate_params

    def expval(self, values: np.ndarray) -> np.ndarray:
        """``values`` (N, n_angles) -> Pauli-Z expectations (N, n_obs)."""
        from pennylane_lightning.lightning_qubit_ops import MeasurementsC128

        out = np.empty((values.shape[0], len(self.observables)))
        for s, params in enumerate(self.params(values).tolist()):  # one C++ simulation per sample (see above)
            sv, _ = self._simulate(params)  # kept in a name: MeasurementsC128 only references it
            measure = MeasurementsC128(sv)
            out[s] = [measure.expval(o) for o in self.observables]
        return out

    def vjp(self, values: np.ndarray, grad_output: np.ndarray) -> np.ndarray:
        """``sum_o grad_output[n, o] * d<Z_o>/d angle`` (N, n_angles), by Lightning's adjoint method.

        One adjoint pass per sample with the observable ``sum_o g_o Z_o`` (a Lightning Hamiltonian) costs
        about half of the full Jacobian's one pass per observable; the state is simulated again for it,
        which is cheaper than keeping N states from the forward pass."""
        from pennylane_lightning.lightning_qubit_ops.algorithms import AdjointJacobianC128, create_ops_listC128
        from pennylane_lightning.lightning_qubit_ops.observables import HamiltonianC128

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
        out = kernels.expval(angles.detach().to(torch.float64).numpy())
        return torch.from_numpy(out).to(angles.dtype)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_output):
        (angles,) = ctx.saved_tensors
        grad = ctx.kernels.vjp(angles.detach().to(torch.float64).numpy(),
                               grad_output.detach().to(torch.float64).numpy())
        return torch.from_numpy(grad).to(grad_output.dtype), None


class LightningBackend(PennyLaneBackend):
    """``lightning.qubit``: exact adjoint runs on Lightning's kernels; shots or another diff method go
    through a PennyLane QNode on the same device."""

    options = ("diff_method",)  # no cuda_graph: Lightning runs on the CPU

    def __init__(self, shots: int | None = None, seed: int | None = None, diff_method: str | None = None) -> None:
        super().__init__("lightning.qubit", shots=shots, seed=seed, diff_method=diff_method)
        self.uses_kernels = shots is None and self.diff_method == "adjoint"
        self._kernels: dict = {}

    def expval(self, circuit, angles: torch.Tensor) -> torch.Tensor:
        if not self.uses_kernels:
            return super().expval(circuit, angles)
        check_angles(circuit, angles)
        if angles.device.type != "cpu":
            raise ValueError(f"backend {self.name!r} takes CPU tensors; move the model to the CPU or use default.qubit")
        if circuit.key not in self._kernels:
            self._kernels[circuit.key] = _Kernels(circuit)
        kernels = self._kernels[circuit.key]
        if angles.requires_grad and torch.is_grad_enabled():
            return _LightningExpval.apply(angles, kernels)
        return torch.from_numpy(kernels.expval(angles.detach().to(torch.float64).numpy())).to(angles.dtype)
