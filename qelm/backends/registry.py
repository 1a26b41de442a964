"""The one registry of simulator backends: a name picks a class, a device and fixed options.

Backends are imported lazily, so a missing optional package only matters when its backend is chosen,
and then the error says what to install.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any

import pennylane as qml

from ..errors import BackendError
from .base import Backend, BackendUnavailable

__all__ = ["BACKENDS", "get_backend", "available_backends", "is_pennylane_device"]


@dataclass(frozen=True)
class _Entry:
    module: str  # module under qelm.backends that holds the class
    cls: str
    kwargs: tuple[tuple[str, Any], ...]  # fixed constructor arguments for this name
    summary: str


BACKENDS: dict[str, _Entry] = {
    "qelm.fused": _Entry("fused", "FusedBackend", (),
                         "qelm's exact torch simulator: weight blocks fused into one unitary per call; CPU or CUDA"),
    "default.qubit": _Entry("pennylane", "PennyLaneBackend", (("device_name", "default.qubit"),),
                            "PennyLane default.qubit, backprop through torch; CPU or CUDA (follows the tensors)"),
    "lightning.qubit": _Entry("lightning", "LightningBackend", (),
                              "PennyLane Lightning (C++ state vector) kernels, adjoint differentiation"),
    "lightning.gpu": _Entry("lightning", "LightningBackend", (("device_name", "lightning.gpu"),),
                            "PennyLane Lightning kernels on NVIDIA cuStateVec, adjoint differentiation "
                            "(extra: qelm-lab[gpu])"),
    "qiskit.aer": _Entry("aer", "AerBackend", (),
                         "qiskit-aer EstimatorV2, whole batch per call, batched parameter-shift gradients"),
}


def get_backend(name: str | Backend, **options: Any) -> Backend:
    """Build the backend registered as ``name`` with ``options`` (``shots``, ``seed``, and per backend:
    ``diff_method`` for PennyLane devices; ``noise_model``, ``device``, ``method``, ``noise``, ``mitigation``,
    ``gradient`` for qiskit.aer).

    Args:
        name: a registered backend name (see :func:`available_backends`), the name of an installed
            PennyLane device, or a built backend (returned as it is).
        **options: ``shots`` (None: exact), ``seed``, and the backend's own options.

    Returns:
        The backend.

    Raises:
        BackendError: the name is unknown, or an option is not the backend's (the message lists the valid ones).
        BackendUnavailable: the backend cannot run here; the message says what to install.

    Examples:
        >>> from qelm import get_backend
        >>> get_backend("default.qubit", shots=100, seed=0)
        <qelm backend default.qubit (100 shots)>
        >>> get_backend("default.qubit", shot=100)
        Traceback (most recent call last):
        ...
        qelm.errors.BackendError: unknown option(s) shot for backend 'default.qubit': valid options are shots, seed, diff_method, cuda_graph
    """
    if isinstance(name, Backend):
        return name
    if name not in BACKENDS and is_pennylane_device(name):  # any other PennyLane device, through a QNode
        entry = _Entry("pennylane", "PennyLaneBackend", (("device_name", name),), "a PennyLane device")
    elif name not in BACKENDS:
        raise BackendError(f"unknown backend {name!r}: valid backends are {', '.join(sorted(BACKENDS))}, or the name "
                         "of an installed PennyLane device (qml.plugin_devices)")
    else:
        entry = BACKENDS[name]
    module = importlib.import_module(f"{__package__}.{entry.module}")
    cls = getattr(module, entry.cls)
    valid = ("shots", "seed") + tuple(cls.options)
    unknown = sorted(set(options) - set(valid))
    if unknown:
        raise BackendError(
            f"unknown option(s) {', '.join(unknown)} for backend {name!r}: valid options are {', '.join(valid)}"
        )
    return cls(**dict(entry.kwargs), **options)


def is_pennylane_device(name: str) -> bool:
    """Whether ``name`` is a PennyLane device installed here (``default.mixed``, ``lightning.kokkos``, ...)."""
    return isinstance(name, str) and name in qml.plugin_devices


def available_backends() -> dict[str, str]:
    """Every registered name mapped to 'ok' or the reason it cannot run here (with the install hint).

    Returns:
        ``{name: "ok" or the reason}``, for every registered backend, in registry order.

    Examples:
        >>> from qelm import available_backends
        >>> status = available_backends()
        >>> status["qelm.fused"], status["default.qubit"]
        ('ok', 'ok')
    """
    status = {}
    for name in BACKENDS:
        try:
            get_backend(name)
            status[name] = "ok"
        except BackendUnavailable as e:
            status[name] = str(e)
    return status
