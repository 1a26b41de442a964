"""The circuit contract: :class:`Circuit`, the base class of every qelm circuit.

Every circuit here obeys one contract, which is what lets every backend run it and every drawer draw it:

* it acts on ``n_wires`` wires and is fed one flat *angle vector* of length ``n_angles``;
* ``apply(angles)`` places gates, and **every gate angle is exactly one entry of that vector**, used once,
  with no arithmetic on it. Whatever arithmetic a circuit needs (re-uploading the same input several
  times, a position added to a phase, the Mottonen angles of an amplitude encoding) is done in torch by
  ``angles(inputs, weights)`` *before* the circuit runs, so autograd carries its chain rule.

Because of that contract a circuit can be traced once with symbolic parameters (``qelm.backends.aer``
turns it into one parameterized qiskit circuit), differentiated by the two-term parameter-shift rule on
every entry of a one-parameter rotation (controlled rotations, as in ``ansatz14``, need more terms: the
backends that use shift rules refuse them), exported to OpenQASM, and broadcast: ``angles`` of shape ``(N, n_angles)`` runs N circuits in
one PennyLane execution.

Wire 0 is the most significant bit of a computational-basis index (PennyLane's convention).
"""


from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pennylane as qml
import torch

from ..errors import ConfigError
from .readout import READOUTS, z_product, z_signs

__all__ = ["Circuit"]


def _entangler_shape(n_layers: int, n_qubits: int) -> tuple[int, ...]:
    return tuple(qml.StronglyEntanglingLayers.shape(n_layers=n_layers, n_wires=n_qubits))


def _apply_entangler(weights: torch.Tensor, wires: list[int]) -> None:
    """StronglyEntanglingLayers on a flat slice of the angle vector, reshaped to its template shape."""
    shape = _entangler_shape(weights.shape[-1] // (3 * len(wires)), len(wires))
    qml.StronglyEntanglingLayers(weights.reshape(weights.shape[:-1] + shape), wires=wires)


@dataclass(frozen=True)
class Circuit:
    """Base class: a named circuit of ``n_qubits`` data qubits and ``n_layers`` variational layers.

    A circuit takes one flat vector of angles (data angles first, then weights) and gives each gate exactly
    one entry of it; its sizes are derived from its fields, so callers never hard-code them. A subclass sets
    ``name`` and ``kind``, and implements :attr:`n_inputs` and :meth:`apply` (and :meth:`encode` when the
    data needs torch preprocessing); :func:`qelm.circuits.register_circuit` makes it usable by name.

    Args:
        n_qubits: data qubits (the swap test adds more wires: see :attr:`n_wires`).
        n_layers: variational layers.
        readout: ``"z"``, ``"zz"`` or ``"probs"`` (see :attr:`readout`).

    Raises:
        ConfigError: a size is not an integer >= 1, or the readout is unknown or does not apply.

    Examples:
        >>> import torch
        >>> from qelm import build_circuit, get_backend
        >>> circuit = build_circuit("angle", n_qubits=2, n_layers=1)
        >>> circuit.name, circuit.kind, circuit.n_angles
        ('angle', 'embedding', 8)
        >>> angles = circuit.angles(torch.zeros(3, circuit.n_inputs), torch.zeros(circuit.weight_shape))
        >>> tuple(angles.shape)
        (3, 8)
        >>> tuple(get_backend("qelm.fused").expval(circuit, angles).shape)  # <Z> of each qubit, per sample
        (3, 2)
    """

    n_qubits: int = 4
    n_layers: int = 2
    #: what the circuit is read out as (see :data:`READOUTS`): <Z> per qubit, plus <Z_i Z_j> of every pair,
    #: or the full basis probabilities
    readout: str = "z"
    name = "circuit"
    kind = "circuit"
    #: what a backend returns for it: "expval" (Pauli-Z on ``observables``) or "state" (the state vector)
    returns = "expval"

    def __post_init__(self) -> None:
        if not isinstance(self.n_qubits, int) or self.n_qubits < 1:
            raise ConfigError(f"n_qubits={self.n_qubits!r} is invalid for circuit {self.name!r}: use an integer >= 1")
        if not isinstance(self.n_layers, int) or self.n_layers < 1:
            raise ConfigError(f"n_layers={self.n_layers!r} is invalid for circuit {self.name!r}: use an integer >= 1")
        if self.readout not in READOUTS:
            raise ConfigError(f"readout={self.readout!r} is invalid for circuit {self.name!r}: choose one of {', '.join(READOUTS)}")
        if self.readout != "z" and (self.returns == "state" or len(self.observables) != self.n_wires):
            raise ConfigError(f"circuit {self.name!r} has a fixed readout; readout={self.readout!r} applies to the "
                             "embedding, attention-feature and feed-forward circuits")

    # --- sizes, derived from config so callers never hard-code them ---------------------------------
    @property
    def n_wires(self) -> int:
        """Wires of the circuit: the data qubits, plus any ancillas (the swap test's)."""
        return self.n_qubits

    @property
    def wires(self) -> list[int]:
        """The wire labels, ``0 .. n_wires - 1``."""
        return list(range(self.n_wires))

    @property
    def n_inputs(self) -> int:
        """Data angles per circuit instance (after preprocessing)."""
        raise NotImplementedError

    @property
    def weight_shape(self) -> tuple[int, ...]:
        """Shape of one instance's trainable circuit weights."""
        return _entangler_shape(self.n_layers, self.n_qubits)

    @property
    def n_weights(self) -> int:
        """Trainable weights of one instance: the product of :attr:`weight_shape`."""
        return int(np.prod(self.weight_shape))

    @property
    def input_shape(self) -> tuple[int, ...]:
        """Shape of one instance's data inputs (what :meth:`angles` takes besides the weights)."""
        return (self.n_inputs,)

    @property
    def n_data_angles(self) -> int:
        """Gate angles computed from the data inputs (``n_angles - n_weights``)."""
        return self.n_angles - self.n_weights

    @property
    def n_angles(self) -> int:
        """Length of the flat angle vector: data angles and weights."""
        return self.n_inputs + self.n_weights

    @property
    def observables(self) -> tuple[int, ...]:
        """Wires whose Pauli-Z expectation the circuit outputs."""
        return tuple(range(self.n_qubits))

    @property
    def z_strings(self) -> tuple[tuple[int, ...], ...]:
        """The Pauli-Z products a backend measures: one tuple of wires each. ``z``: each wire of
        ``observables``; ``zz``: those, then every pair ``(i, j)``, ``i < j``; ``probs``: every non-empty subset
        of the wires (:meth:`features` turns their expectations into the ``2**n`` basis probabilities)."""
        wires = self.observables
        if self.readout == "z":
            return tuple((w,) for w in wires)
        if self.readout == "zz":
            n = len(wires)
            return tuple((w,) for w in wires) + tuple((wires[i], wires[j]) for i in range(n) for j in range(i + 1, n))
        n = len(wires)
        return tuple(tuple(w for k, w in enumerate(wires) if mask >> (n - 1 - k) & 1) for mask in range(1, 2**n))

    @property
    def n_outputs(self) -> int:
        """Features per instance after :meth:`features`: n, n + n(n-1)/2 or 2**n."""
        return 2 ** len(self.observables) if self.readout == "probs" else len(self.z_strings)

    def features(self, z: torch.Tensor) -> torch.Tensor:
        """Expectations of :attr:`z_strings` ``(..., len(z_strings))`` -> the readout's features. For
        ``probs``: ``P(b) = 2**-n sum_S (-1)**|b & S| <Z_S>`` over all subsets S (``<Z_{}> = 1``), exact for
        exact expectations and an unbiased estimate from shot estimates."""
        if self.readout != "probs":
            return z
        signs = z_signs(len(self.observables), self.z_strings, z)  # (D, D - 1): (-1)^|b & S|
        return (1 + z @ signs.T) / signs.shape[0]

    @property
    def key(self) -> tuple:
        """Identifies the gate structure and readout; backends cache compiled circuits under it."""
        return (self.name, self.n_qubits, self.n_layers, self.readout)

    # --- the circuit -----------------------------------------------------------------------------
    def apply(self, angles: torch.Tensor) -> None:
        """Place the gates. ``angles``: ``(n_angles,)`` or broadcast ``(N, n_angles)``."""
        raise NotImplementedError

    def angles(self, inputs: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        """Build the flat angle vectors ``(..., n_angles)`` from data angles ``(..., n_inputs)`` and
        weights ``weight_shape`` (or ``(..., *weight_shape)`` already matching the batch)."""
        batch = inputs.shape[:-1]
        w = weights.reshape(weights.shape[: weights.dim() - len(self.weight_shape)] + (-1,))
        w = w.expand(batch + (self.n_weights,))
        return torch.cat([self.encode(inputs), w.to(inputs.dtype)], dim=-1)

    def encode(self, inputs: torch.Tensor) -> torch.Tensor:
        """Torch preprocessing of data angles into gate angles (identity unless a circuit needs more)."""
        return inputs

    # --- inputs and weights, kept apart ------------------------------------------------------------
    # Weights are shared by every sample of a call (or of one head), inputs differ per sample. A backend
    # that knows which angle is which can do the weights' work once per call (qelm.fused builds one
    # unitary per weight set); ``angles`` is then exactly ``data_angles`` and the weights placed by
    # ``angle_layout``, which tests/test_circuits.py checks for every circuit.
    def data_angles(self, inputs: torch.Tensor) -> torch.Tensor:
        """``(..., *input_shape)`` -> ``(..., n_data_angles)``: the gate angles that depend on the data."""
        return self.encode(inputs)

    def angle_layout(self) -> tuple[tuple[bool, int], ...]:
        """For each column of the angle vector: ``(True, k)`` if it is entry ``k`` of the flattened
        weights, ``(False, j)`` if it is column ``j`` of :meth:`data_angles`."""
        return tuple((False, j) for j in range(self.n_data_angles)) + tuple((True, k) for k in range(self.n_weights))

    def qfunc(self, angles: torch.Tensor):
        """A PennyLane quantum function: the gates, then the measurement this circuit returns."""
        self.apply(angles)
        if self.returns == "state":
            return qml.state()
        return [qml.expval(z_product(s)) for s in self.z_strings]

    def draw(self, angles: torch.Tensor | None = None, **kwargs) -> str:
        """Text drawing by ``qml.draw``; symbolic-looking index angles when ``angles`` is omitted."""
        if angles is None:
            angles = torch.arange(self.n_angles, dtype=torch.float64)
        dev = qml.device("default.qubit", wires=self.n_wires)
        return qml.draw(qml.QNode(self.qfunc, dev), **kwargs)(angles)
