"""The one registry of simulator backends. A name picks a device, a differentiation method and options.

Every backend runs a :class:`qelm.circuits.Circuit` on a whole batch of angle vectors ``(N, n_angles)`` in
one call and returns torch tensors on the angles' device, differentiable with respect to the angles:

* ``expval(circuit, angles) -> (N, len(circuit.observables))`` Pauli-Z expectations;
* ``state(circuit, angles) -> (N, 2**n_wires)`` complex state vectors (only where ``supports_state``).

Backends are imported lazily, so a missing optional package only matters when its backend is chosen,
and then the error says what to install.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any

import torch

__all__ = ["Backend", "BackendUnavailable", "BACKENDS", "get_backend", "available_backends"]


class BackendUnavailable(RuntimeError):
    """The chosen backend cannot run here (missing package or hardware); the message says how to fix it."""


@dataclass(frozen=True)
class _Entry:
    module: str  # module under qelm.backends that holds the class
    cls: str
    kwargs: tuple[tuple[str, Any], ...]  # fixed constructor arguments for this name
    summary: str


BACKENDS: dict[str, _Entry] = {
    "default.qubit": _Entry("pennylane", "PennyLaneBackend", (("device_name", "default.qubit"),),
                            "PennyLane default.qubit, backprop through torch; CPU or CUDA (follows the tensors)"),
    "lightning.qubit": _Entry("lightning", "LightningBackend", (),
                              "PennyLane Lightning (C++ state vector) kernels, adjoint differentiation"),
    "lightning.gpu": _Entry("pennylane", "PennyLaneBackend", (("device_name", "lightning.gpu"),),
                            "PennyLane Lightning on NVIDIA cuStateVec, adjoint differentiation (extra: qelm[gpu])"),
    "qiskit.aer": _Entry("aer", "AerBackend", (),
                         "qiskit-aer EstimatorV2, whole batch per call, batched parameter-shift gradients"),
}


class Backend:
    """Interface every engine implements. Options are keyword arguments; unknown ones are an error."""

    name: str = "backend"
    supports_state: bool = False
    #: option names this backend accepts (beyond ``shots`` and ``seed``)
    options: tuple[str, ...] = ()

    def __init__(self, shots: int | None = None, seed: int | None = None) -> None:
        if shots is not None and (isinstance(shots, bool) or not isinstance(shots, int) or shots < 1):
            raise ValueError(f"shots={shots!r} is invalid: use None for exact expectations or an integer >= 1")
        self.shots = shots
        self.seed = seed

    def expval(self, circuit, angles: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def state(self, circuit, angles: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError(
            f"backend {self.name!r} does not return state vectors; use fidelity_method='swap_test' with it"
        )

    def describe(self) -> str:
        shots = "exact" if self.shots is None else f"{self.shots} shots"
        return f"{self.name} ({shots})"

    def __repr__(self) -> str:
        return f"<qelm backend {self.describe()}>"


def get_backend(name: str, **options: Any) -> Backend:
    """Build the backend registered as ``name`` with ``options`` (``shots``, ``seed``, and per backend:
    ``diff_method`` for PennyLane devices; ``noise_model``, ``device``, ``method`` for qiskit.aer)."""
    if isinstance(name, Backend):
        return name
    if name not in BACKENDS:
        raise ValueError(f"unknown backend {name!r}: valid backends are {', '.join(sorted(BACKENDS))}")
    entry = BACKENDS[name]
    module = importlib.import_module(f"{__name__}.{entry.module}")
    cls = getattr(module, entry.cls)
    valid = ("shots", "seed") + tuple(cls.options)
    unknown = sorted(set(options) - set(valid))
    if unknown:
        raise ValueError(
            f"unknown option(s) {', '.join(unknown)} for backend {name!r}: valid options are {', '.join(valid)}"
        )
    return cls(**dict(entry.kwargs), **options)


def available_backends() -> dict[str, str]:
    """Every registered name mapped to 'ok' or the reason it cannot run here (with the install hint)."""
    status = {}
    for name in BACKENDS:
        try:
            get_backend(name)
            status[name] = "ok"
        except BackendUnavailable as e:
            status[name] = str(e)
    return status
