"""PennyLane devices as qelm backends: default.qubit, lightning.qubit and lightning.gpu.

One QNode is built per circuit structure and reused; a batch of angle vectors ``(N, n_angles)`` goes in as
one broadcast execution. On default.qubit that is a single simulation of N stacked states (backprop);
lightning devices have no broadcast kernel, so PennyLane expands the broadcast tape inside the device
call (measured in ``benchmarks/backends.py``).
"""

from __future__ import annotations

import importlib.util

import pennylane as qml
import torch

from ..circuits import z_signs
from . import Backend, BackendUnavailable
from .gates import GATE_SET

_DIFF = {"default.qubit": "backprop", "lightning.qubit": "adjoint", "lightning.gpu": "adjoint"}
_PACKAGE = {"lightning.qubit": "pennylane_lightning", "lightning.gpu": "pennylane_lightning_gpu"}
_INSTALL = {
    "lightning.qubit": "pip install pennylane-lightning",
    "lightning.gpu": "pip install 'qelm[gpu]' (pennylane-lightning-gpu, needs an NVIDIA GPU with CUDA 12)",
}


class PennyLaneBackend(Backend):
    supports_state = True
    options = ("diff_method",)

    def __init__(self, device_name: str, shots: int | None = None, seed: int | None = None,
                 diff_method: str | None = None) -> None:
        super().__init__(shots=shots, seed=seed)
        self.name = device_name
        pkg = _PACKAGE.get(device_name)
        if pkg and importlib.util.find_spec(pkg) is None:
            raise BackendUnavailable(f"backend {device_name!r} is not installed: {_INSTALL[device_name]}")
        if device_name == "lightning.gpu":
            try:  # fail here, with the hint, rather than at the first forward pass
                qml.device("lightning.gpu", wires=1)
            except Exception as e:  # the plugin raises several types when no GPU / CUDA runtime is found
                raise BackendUnavailable(f"backend 'lightning.gpu' cannot start ({e}); {_INSTALL[device_name]}") from None
        default = _DIFF[device_name] if shots is None else "parameter-shift"
        self.diff_method = diff_method or default
        self.supports_state = device_name == "default.qubit" and shots is None
        self._qnodes: dict = {}
        self._zero_states: dict = {}

    def _qnode(self, circuit, kind: str):
        key = (circuit.key, kind)
        if key not in self._qnodes:
            dev = qml.device(self.name, wires=circuit.n_wires, seed=self.seed) if self.name == "default.qubit" \
                else qml.device(self.name, wires=circuit.n_wires)

            def qfunc(angles, zero_state):
                if zero_state is not None:
                    # default.qubit builds its |0..0> on the CPU; starting from a state that lives with the
                    # angles keeps every tensor of the simulation on their device (CUDA included)
                    qml.StatePrep(zero_state, wires=circuit.wires, validate_norm=False)
                circuit.apply(angles)
                if kind == "state":
                    return qml.state()
                if kind == "probs":
                    return qml.probs(wires=circuit.wires)
                return [qml.expval(qml.PauliZ(w)) for w in circuit.observables]

            diff = "backprop" if kind in ("state", "probs") else self.diff_method
            node = qml.QNode(qfunc, dev, interface="torch", diff_method=diff)
            if diff not in ("backprop", "adjoint"):
                # PennyLane's gradient transforms (parameter-shift, finite-diff, ...) refuse tapes broadcast
                # over the differentiated parameters, so the batch is expanded into one tape per sample first;
                # templates (StronglyEntanglingLayers) do not report their batch size, so decompose them before
                node = qml.transforms.broadcast_expand(qml.transforms.decompose(node, gate_set=set(GATE_SET)))
            if self.shots is not None and kind != "state":
                node = qml.set_shots(node, shots=self.shots)
            self._qnodes[key] = node
        return self._qnodes[key]

    def _run(self, circuit, angles: torch.Tensor, kind: str):
        if angles.dim() != 2 or angles.shape[-1] != circuit.n_angles:
            raise ValueError(f"angles must be (N, {circuit.n_angles}) for circuit {circuit.name!r}, got {tuple(angles.shape)}")
        zero = None
        if angles.device.type != "cpu":
            if self.name != "default.qubit":
                raise ValueError(f"backend {self.name!r} takes CPU tensors; move the model to the CPU or use default.qubit")
            key = (circuit.n_wires, angles.device)
            if key not in self._zero_states:  # made once: no host-to-device copy per call
                zero = torch.zeros(2**circuit.n_wires, dtype=torch.complex128, device=angles.device)
                zero[0] = 1
                self._zero_states[key] = zero
            zero = self._zero_states[key]
        # float64 into the simulator: the state is complex128 either way, and mixed precision would
        # only add casts; results are cast back to the caller's dtype
        return self._qnode(circuit, kind)(angles.to(torch.float64), zero)

    def expval(self, circuit, angles: torch.Tensor) -> torch.Tensor:
        if self.supports_state and self.diff_method == "backprop":
            # exact simulation: one probability measurement and the <Z>s as a matrix product in torch is
            # cheaper than one PennyLane measurement process per observable once N is in the thousands, as
            # the layers' batches are (same numbers to rounding; benchmarks/backends.py measures both)
            probs = self._run(circuit, angles, "probs").reshape(angles.shape[0], -1)  # (N, 2**n_wires)
            return (probs @ z_signs(circuit.n_wires, circuit.observables, probs)).to(angles.dtype)
        out = self._run(circuit, angles, "expval")
        out = torch.stack(list(out), dim=-1) if isinstance(out, (list, tuple)) else out.unsqueeze(-1)
        if out.dim() == 1:  # N == 1 with one observable
            out = out.reshape(angles.shape[0], -1)
        return out.to(dtype=angles.dtype, device=angles.device)

    def state(self, circuit, angles: torch.Tensor) -> torch.Tensor:
        if not self.supports_state:
            return super().state(circuit, angles)
        out = self._run(circuit, angles, "state")
        return out.reshape(angles.shape[0], -1).to(angles.device)

