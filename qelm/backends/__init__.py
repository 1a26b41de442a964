"""The one registry of simulator backends. A name picks a device, a differentiation method and options.

Layers call one method, with a circuit's data inputs and its weights kept apart:

* ``run(circuit, inputs, weights, kind="expval")``: ``weights`` is ``(*S, *circuit.weight_shape)``, one
  weight set or ``S`` of them (per head, per q/k/v slot); ``inputs`` is ``(*S, *batch, *circuit.input_shape)``,
  the samples of each set. Returns ``(*S, *batch, len(observables))`` Pauli-Z expectations, or
  ``(*S, *batch, 2**n_wires)`` complex states for ``kind="state"``. Weights are handed over once, not
  broadcast to every sample, so a backend can do their work once per set (``qelm.fused`` builds one
  unitary per set). The base class broadcasts them into angle vectors here, in one place, for the
  backends that take angle vectors:

* ``expval(circuit, angles) -> (N, len(circuit.observables))`` for angle vectors ``(N, n_angles)``;
* ``state(circuit, angles) -> (N, 2**n_wires)`` complex state vectors (only where ``supports_state``).

Results are torch tensors on the inputs' device, differentiable with respect to inputs and weights.

Backends are imported lazily, so a missing optional package only matters when its backend is chosen,
and then the error says what to install.
"""

from __future__ import annotations

import contextlib
import importlib
import math
from dataclasses import dataclass
from typing import Any

import torch

__all__ = ["Backend", "BackendUnavailable", "MAX_SHOTS", "BACKENDS", "get_backend", "available_backends", "check_run_shapes",
           "is_pennylane_device", "check_angles"]


#: the most shots per circuit: every simulator and numpy's samplers count them in a C long, and 2**31 already
#: estimates an expectation to 2e-5 (a larger number overflowed in the sampler, after the model had loaded)
MAX_SHOTS = 2**31 - 1


class BackendUnavailable(RuntimeError):
    """The chosen backend cannot run here (missing package or hardware); the message says how to fix it."""


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


class Backend:
    """Interface every engine implements. Options are keyword arguments; unknown ones are an error."""

    name: str = "backend"
    supports_state: bool = False
    #: pure torch operations that ``torch.compile`` can trace (qelm.fused); other backends are a boundary
    traceable: bool = False
    #: option names this backend accepts (beyond ``shots`` and ``seed``)
    options: tuple[str, ...] = ()

    def __init__(self, shots: int | None = None, seed: int | None = None) -> None:
        if shots is not None and (isinstance(shots, bool) or not isinstance(shots, int) or not 1 <= shots <= MAX_SHOTS):
            raise ValueError(f"shots={shots!r} is invalid: use None for exact expectations or an integer from 1 to "
                             f"{MAX_SHOTS} (2**31 - 1)")
        self.shots = shots
        self.seed = seed

    def run(self, circuit, inputs: torch.Tensor, weights: torch.Tensor, kind: str = "expval") -> torch.Tensor:
        """Run ``circuit`` for data ``inputs`` ``(*S, *batch, *input_shape)`` and weight sets ``weights``
        ``(*S, *weight_shape)``; ``kind`` "expval" or "state" (see the module docstring). Observers added by
        :meth:`observe` see every call. Under ``torch.compile`` the call is traced when the backend is
        (``traceable``: pure torch) and is a compile boundary otherwise, so the rest of a model compiles."""
        if torch.compiler.is_compiling() and not self.traceable:
            return _opaque_run(self, circuit, inputs, weights, kind)
        sets, batch = check_run_shapes(circuit, inputs, weights, kind)
        observers = self.__dict__.get("_observers")
        if not observers:
            return self._execute(circuit, inputs, weights, kind, sets, batch)
        for o in observers:
            o.before(circuit, kind)
        out = self._execute(circuit, inputs, weights, kind, sets, batch)
        executions = math.prod(batch)
        for o in reversed(observers):
            o.after(circuit, kind, executions, out)
        return out

    @contextlib.contextmanager
    def observe(self, observer):
        """Within the block, call ``observer.before(circuit, kind)`` before and ``observer.after(circuit,
        kind, executions, output)`` after every :meth:`run` (how ``qelm bench`` times the circuits and
        ``qelm compare`` counts executions and shots, without patching any method)."""
        observers = self.__dict__.setdefault("_observers", [])
        observers.append(observer)
        try:
            yield observer
        finally:
            observers.remove(observer)

    def _execute(self, circuit, inputs, weights, kind, sets, batch) -> torch.Tensor:
        """The work of :meth:`run`, shapes checked: by default weights broadcast into angle vectors."""
        w = weights.reshape(sets + (1,) * (len(batch) - len(sets)) + tuple(circuit.weight_shape))
        angles = circuit.angles(inputs, w).reshape(-1, circuit.n_angles)  # (N, n_angles): weights broadcast here
        out = self.expval(circuit, angles) if kind == "expval" else self.state(circuit, angles)
        return out.reshape(batch + out.shape[-1:])

    def expval(self, circuit, angles: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def state(self, circuit, angles: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError(
            f"backend {self.name!r} does not return state vectors; use fidelity_method='swap_test' with it"
        )

    #: attributes that are caches (compiled circuits, device tensors, recorded graphs): not pickled, so
    #: ``torch.save(model)`` and ``copy.deepcopy(model)`` work; they are rebuilt on first use
    _transient: tuple[str, ...] = ("_observers",)

    def __getstate__(self):
        state = dict(self.__dict__)
        for name in self._transient:
            if name in state:
                value = state[name]
                state[name] = type(value)() if isinstance(value, (dict, list, set)) else None
        if state.get("_graphs") is not None:  # recorded CUDA graphs stay behind: a fresh pool, same setting
            from .cuda_graph import GraphPool

            state["_graphs"] = GraphPool()
        return state

    def describe(self) -> str:
        shots = "exact" if self.shots is None else f"{self.shots} shots"
        return f"{self.name} ({shots})"

    def __repr__(self) -> str:
        return f"<qelm backend {self.describe()}>"


@torch.compiler.disable
def _opaque_run(backend: Backend, circuit, inputs, weights, kind):
    """A backend call the compiler does not trace (PennyLane, Lightning, qiskit-aer)."""
    return Backend.run(backend, circuit, inputs, weights, kind)


def check_angles(circuit, angles: torch.Tensor) -> None:
    """The angle-vector interface's one input check: ``angles`` must be ``(N, circuit.n_angles)``."""
    if angles.dim() != 2 or angles.shape[-1] != circuit.n_angles:
        raise ValueError(f"angles must be (N, {circuit.n_angles}) for circuit {circuit.name!r}, got {tuple(angles.shape)}")


def check_run_shapes(circuit, inputs: torch.Tensor, weights: torch.Tensor, kind: str):
    """Validate a :meth:`Backend.run` call; returns ``(S, batch)``: the weight-set dims and all leading
    dims of ``inputs`` (``S`` first). The one input check every backend shares."""
    if kind not in ("expval", "state"):
        raise ValueError(f"kind={kind!r} is invalid: use 'expval' or 'state'")
    wshape, ishape = tuple(circuit.weight_shape), tuple(circuit.input_shape)
    if weights.dim() < len(wshape) or tuple(weights.shape[weights.dim() - len(wshape):]) != wshape:
        raise ValueError(f"weights of circuit {circuit.name!r} must end in {wshape}, got {tuple(weights.shape)}")
    if inputs.dim() < len(ishape) or tuple(inputs.shape[inputs.dim() - len(ishape):]) != ishape:
        raise ValueError(f"inputs of circuit {circuit.name!r} must end in {ishape} (one instance's data), "
                         f"got {tuple(inputs.shape)}")
    sets = tuple(weights.shape[: weights.dim() - len(wshape)])
    batch = tuple(inputs.shape[: inputs.dim() - len(ishape)])
    if batch[: len(sets)] != sets:
        raise ValueError(f"inputs {tuple(inputs.shape)} must start with the weight-set dims {sets} of weights "
                         f"{tuple(weights.shape)}: lay the samples out as (*sets, *batch, *input_shape)")
    return sets, batch


def get_backend(name: str, **options: Any) -> Backend:
    """Build the backend registered as ``name`` with ``options`` (``shots``, ``seed``, and per backend:
    ``diff_method`` for PennyLane devices; ``noise_model``, ``device``, ``method``, ``noise``, ``mitigation``,
    ``gradient`` for qiskit.aer)."""
    if isinstance(name, Backend):
        return name
    if name not in BACKENDS and is_pennylane_device(name):  # any other PennyLane device, through a QNode
        entry = _Entry("pennylane", "PennyLaneBackend", (("device_name", name),), "a PennyLane device")
    elif name not in BACKENDS:
        raise ValueError(f"unknown backend {name!r}: valid backends are {', '.join(sorted(BACKENDS))}, or the name "
                         "of an installed PennyLane device (qml.plugin_devices)")
    else:
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


def is_pennylane_device(name: str) -> bool:
    """Whether ``name`` is a PennyLane device installed here (``default.mixed``, ``lightning.kokkos``, ...)."""
    import pennylane as qml

    return isinstance(name, str) and name in qml.plugin_devices


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
