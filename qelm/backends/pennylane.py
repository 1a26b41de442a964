"""PennyLane devices as qelm backends: default.qubit, lightning.qubit and lightning.gpu.

One QNode is built per circuit structure and reused; a batch of angle vectors ``(N, n_angles)`` goes in as
one broadcast execution. On default.qubit that is a single simulation of N stacked states (backprop);
lightning devices have no broadcast kernel, so PennyLane expands the broadcast tape inside the device
call (measured in ``benchmarks/backends.py``).

On CUDA, default.qubit runs ``Rot`` as RZ RY RZ (same numbers to 1e-15): PennyLane applies a broadcast
``Rot`` through its matrix, a batched einsum whose complex128 GEMM kernels took 87% of the GPU time at a
batch of 65,536, and RX/RY/RZ through elementwise kernels. On the CPU the matrix is faster, so it stays.
``cuda_graph=True`` also replays recorded CUDA graphs for training calls whose batch shape repeats
(:mod:`qelm.backends.cuda_graph`).
"""

from __future__ import annotations

import importlib.util

import pennylane as qml
import torch

from ..circuits import z_product, z_signs
from ..errors import BackendError
from .base import Backend, BackendUnavailable, check_angles
from .cuda_graph import GraphPool
from .gates import GATE_SET

_DIFF = {"default.qubit": "backprop", "lightning.qubit": "adjoint", "lightning.gpu": "adjoint"}
# the module each device lives in: pennylane-lightning-gpu 0.45 installs pennylane_lightning.lightning_gpu
_PACKAGE = {"lightning.qubit": "pennylane_lightning", "lightning.gpu": "pennylane_lightning.lightning_gpu"}
_INSTALL = {
    "lightning.qubit": "pip install pennylane-lightning",
    "lightning.gpu": "pip install 'qelm-lab[gpu]' (pennylane-lightning-gpu and the CUDA 12 libraries it links, "
                     "from the package index; needs an NVIDIA GPU and a driver for CUDA 12 or newer)",
}


def installed(module: str) -> bool:
    """Whether ``module`` (dotted: its parent package is imported to look) can be imported."""
    try:
        return importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:  # the parent package is missing
        return False


def _keeps_all_but_rot(op) -> bool:
    """Decomposition target that only expands ``Rot`` (and the template that places it): every other
    operation reaches default.qubit as before, so nothing else changes on CUDA."""
    return op.name not in ("Rot", "StronglyEntanglingLayers")


class PennyLaneBackend(Backend):
    supports_state = True
    options: tuple[str, ...] = ("diff_method", "cuda_graph")
    _transient = Backend._transient + ("_qnodes", "_zero_states", "_kernels")

    def __init__(self, device_name: str, shots: int | None = None, seed: int | None = None,
                 diff_method: str | None = None, cuda_graph: bool = False) -> None:
        super().__init__(shots=shots, seed=seed)
        self.name = device_name
        pkg = _PACKAGE.get(device_name)
        if pkg and not installed(pkg):
            raise BackendUnavailable(f"backend {device_name!r} is not installed: {_INSTALL[device_name]}")
        default = _DIFF.get(device_name, "best") if shots is None else "parameter-shift"
        self.diff_method = diff_method or default
        self.supports_state = device_name == "default.qubit" and shots is None
        if not isinstance(cuda_graph, bool):
            raise BackendError(f"cuda_graph={cuda_graph!r} is invalid: use True or False")
        if cuda_graph and (device_name != "default.qubit" or shots is not None or self.diff_method != "backprop"):
            raise BackendError("cuda_graph=True needs backend 'default.qubit' with shots=None and diff_method='backprop'")
        self._graphs = GraphPool() if cuda_graph else None
        self.split_rot = device_name == "default.qubit"  # on CUDA only (module docstring); benchmarks turn it off
        self._qnodes: dict = {}
        self._zero_states: dict = {}

    def _qnode(self, circuit, kind: str, split_rot: bool = False):
        key = (circuit.key, kind, split_rot)
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
                return [qml.expval(z_product(z)) for z in circuit.z_strings]

            diff = "backprop" if kind in ("state", "probs") else self.diff_method
            node = qml.QNode(qfunc, dev, interface="torch", diff_method=diff)
            # StatePrep is kept: decomposed, it would build its gates' angles on the CPU
            if diff not in ("backprop", "adjoint"):
                # PennyLane's gradient transforms (parameter-shift, finite-diff, ...) refuse tapes broadcast
                # over the differentiated parameters, so the batch is expanded into one tape per sample first;
                # templates (StronglyEntanglingLayers) do not report their batch size, so decompose them before
                gate_set = set(GATE_SET) | {"StatePrep"}
                node = qml.transforms.broadcast_expand(qml.transforms.decompose(node, gate_set=gate_set))
            elif split_rot:  # see the module docstring: RZ RY RZ run elementwise, Rot as batched GEMMs
                node = qml.transforms.decompose(node, gate_set={"RZ", "RY"}, stopping_condition=_keeps_all_but_rot)
            if self.shots is not None and kind != "state":
                node = qml.set_shots(node, shots=self.shots)
            self._qnodes[key] = node
        return self._qnodes[key]

    def _run(self, circuit, angles: torch.Tensor, kind: str):
        check_angles(circuit, angles)
        zero = None
        if angles.device.type != "cpu" and self.name == "lightning.gpu":
            angles = angles.cpu()  # Lightning takes its parameters on the host; results go back to the device
        elif angles.device.type != "cpu":
            if self.name != "default.qubit":
                raise BackendError(f"backend {self.name!r} takes CPU tensors; move the model to the CPU or use default.qubit")
            key = (circuit.n_wires, angles.device)
            if key not in self._zero_states:  # made once: no host-to-device copy per call
                zero = torch.zeros(2**circuit.n_wires, dtype=torch.complex128, device=angles.device)
                zero[0] = 1
                self._zero_states[key] = zero
            zero = self._zero_states[key]
        # float64 into the simulator: the state is complex128 either way, and mixed precision would
        # only add casts; results are cast back to the caller's dtype
        return self._qnode(circuit, kind, self.split_rot and angles.is_cuda)(angles.to(torch.float64), zero)

    def expval(self, circuit, angles: torch.Tensor) -> torch.Tensor:
        if self._graphs is not None and GraphPool.applies(angles):
            return self._graphs(circuit.key, lambda a: self._expval(circuit, a), angles)
        return self._expval(circuit, angles)

    def _expval(self, circuit, angles: torch.Tensor) -> torch.Tensor:
        if self.supports_state and self.diff_method == "backprop":
            # exact simulation: one probability measurement and the <Z>s as a matrix product in torch is
            # cheaper than one PennyLane measurement process per observable once N is in the thousands, as
            # the layers' batches are (same numbers to rounding; benchmarks/backends.py measures both)
            probs = self._run(circuit, angles, "probs").reshape(angles.shape[0], -1)  # (N, 2**n_wires)
            return (probs @ z_signs(circuit.n_wires, circuit.z_strings, probs)).to(angles.dtype)
        out = self._run(circuit, angles, "expval")
        out = torch.stack(list(out), dim=-1) if isinstance(out, (list, tuple)) else out.unsqueeze(-1)
        if out.dim() == 1:  # N == 1 with one observable
            out = out.reshape(angles.shape[0], -1)
        return out.to(dtype=angles.dtype, device=angles.device)

    def evolve(self, circuit, angles: torch.Tensor, states: torch.Tensor) -> torch.Tensor:
        """Through one broadcast ``StatePrep`` + circuit + ``qml.state()`` on default.qubit (backprop): the
        reference :mod:`qelm.backends.fused_evolve` is checked against. States are normalised for
        ``StatePrep`` and scaled back (the map is linear)."""
        if not self.supports_state:
            return super().evolve(circuit, angles, states)
        check_angles(circuit, angles)
        key = (circuit.key, "evolve")
        if key not in self._qnodes:
            def qfunc(a, psi):
                qml.StatePrep(psi, wires=circuit.wires, validate_norm=False)
                circuit.apply(a)
                return qml.state()

            self._qnodes[key] = qml.QNode(qfunc, qml.device("default.qubit", wires=circuit.n_wires),
                                          interface="torch", diff_method="backprop")
        psi = states.to(torch.complex128)
        norm = torch.linalg.vector_norm(psi, dim=-1, keepdim=True)
        out = self._qnodes[key](angles.to(torch.float64), psi / norm)
        return (out.reshape(psi.shape) * norm).to(states.dtype)

    def state(self, circuit, angles: torch.Tensor) -> torch.Tensor:
        if not self.supports_state:
            return super().state(circuit, angles)
        out = self._run(circuit, angles, "state")
        return out.reshape(angles.shape[0], -1).to(angles.device)

