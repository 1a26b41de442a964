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

from .base import MAX_SHOTS, Backend, BackendUnavailable, check_angles, check_run_shapes
from .registry import BACKENDS, available_backends, get_backend, is_pennylane_device
from .spec import BackendSpec

__all__ = ["Backend", "BackendUnavailable", "MAX_SHOTS", "BACKENDS", "get_backend", "available_backends", "check_run_shapes",
           "is_pennylane_device", "check_angles", "BackendSpec"]
