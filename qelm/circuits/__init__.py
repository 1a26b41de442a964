"""The built-in parameterized circuits of qelm, written as PennyLane gate sequences.

Every circuit here obeys one contract, which is what lets every backend run it and every drawer draw it:

* it acts on ``n_wires`` wires and is fed one flat *angle vector* of length ``n_angles``;
* ``apply(angles)`` places gates, and **every gate angle is exactly one entry of that vector**, used once,
  with no arithmetic on it. Whatever arithmetic a circuit needs (re-uploading the same input several
  times, a position added to a phase, the Mottonen angles of an amplitude encoding) is done in torch by
  ``angles(inputs, weights)`` *before* the circuit runs, so autograd carries its chain rule.

Because of that contract a circuit can be traced once with symbolic parameters (``qelm.backends.aer``
turns it into one parameterized qiskit circuit), differentiated by the two-term parameter-shift rule on
every entry, exported to OpenQASM, and broadcast: ``angles`` of shape ``(N, n_angles)`` runs N circuits in
one PennyLane execution.

Wire 0 is the most significant bit of a computational-basis index (PennyLane's convention).

The package: :mod:`.base` (the contract, :class:`Circuit`), :mod:`.readout` (the Z strings measured and
the maths that turns them into features), :mod:`.embeddings` and :mod:`.variational` (the built-in
circuits), :mod:`.registry` (circuits by name), :mod:`.angles` (reading an angle vector back: weights,
symbols, the QNode the drawers and exports use).
"""


from .base import Circuit
from .embeddings import AmplitudeEmbeddingCircuit, AngleEmbeddingCircuit, PolarEmbeddingCircuit, amplitude_tree_angles
from .readout import READOUTS, z_product, z_signs
from .registry import CIRCUITS, build_circuit, embedding_circuits, register_circuit
from .variational import (Ansatz14Circuit, FeedForwardCircuit, FidelityStateCircuit, ReuploadingCircuit,
                          SwapTestCircuit)

__all__ = [
    "Circuit",
    "AngleEmbeddingCircuit",
    "PolarEmbeddingCircuit",
    "AmplitudeEmbeddingCircuit",
    "ReuploadingCircuit",
    "FidelityStateCircuit",
    "FeedForwardCircuit",
    "SwapTestCircuit",
    "Ansatz14Circuit",
    "CIRCUITS",
    "build_circuit",
    "register_circuit",
    "embedding_circuits",
    "amplitude_tree_angles",
    "z_signs",
    "z_product",
    "READOUTS",
]
