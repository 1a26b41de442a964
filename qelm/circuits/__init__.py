"""The built-in parameterized circuits of qelm, written as PennyLane gate sequences.

Every circuit obeys one contract (one flat angle vector, every gate angle exactly one entry of it, used
once), written out in :mod:`.base`; it is what lets every backend run a circuit and every drawer draw it.

The package: :mod:`.base` (the contract, :class:`Circuit`), :mod:`.readout` (the Z strings measured and
the maths that turns them into features), :mod:`.embeddings` and :mod:`.variational` (the built-in
circuits), :mod:`.registry` (circuits by name, and the contract of each slot), :mod:`.angles` (reading an angle vector back: weights,
symbols, the QNode the drawers and exports use).
"""


from .base import Circuit
from .embeddings import AmplitudeEmbeddingCircuit, AngleEmbeddingCircuit, PolarEmbeddingCircuit, amplitude_tree_angles
from .readout import READOUTS, z_product, z_signs
from .registry import (CIRCUITS, IMPORTED, SLOTS, build_circuit, check_slot, embedding_circuits, import_circuits,
                       imports_for, register_circuit, slot_circuits, slot_problem, unknown_circuit)
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
    "SLOTS",
    "slot_circuits",
    "check_slot",
    "unknown_circuit",
    "slot_problem",
    "import_circuits",
    "imports_for",
    "IMPORTED",
    "amplitude_tree_angles",
    "z_signs",
    "z_product",
    "READOUTS",
]
