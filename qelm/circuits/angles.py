"""A circuit's angle vector, read back: which entries are trained weights (:func:`weight_mask`), the
symbolic vector that names each gate by its entry (:func:`symbolic_angles`), the trained circuit's
angles (:func:`trained_angles`), and the circuit as a QNode on one angle vector (:func:`qnode`). What the
drawings (:mod:`qelm.draw`) and the exports (:mod:`qelm.export`) both read.
"""

from __future__ import annotations

import pennylane as qml
import torch

from ..errors import ConfigError
from .base import Circuit
from .variational import SwapTestCircuit

__all__ = ["symbolic_angles", "weight_mask", "trained_angles", "angles_and_decimals", "qnode"]


def symbolic_angles(circuit: Circuit) -> torch.Tensor:
    """The angle vector ``theta[i] = i``: drawn with no decimals, every gate shows its angle's index."""
    return torch.arange(circuit.n_angles, dtype=torch.float64)  # (n_angles,)


def _zero_inputs(circuit: Circuit) -> torch.Tensor:
    if isinstance(circuit, SwapTestCircuit):  # the two states' data: (2, n_inputs of one state)
        return torch.zeros(2, circuit.inner.n_inputs, dtype=torch.float64)
    return torch.zeros(circuit.n_inputs, dtype=torch.float64)


def weight_mask(circuit: Circuit) -> torch.Tensor:
    """Boolean ``(n_angles,)``: True where the angle vector holds a trainable weight, False for data.

    Found from ``circuit.angles`` itself (weights 0 vs 1 at fixed data), so it follows each circuit's own
    layout, including the swap test's two copies of the weights."""
    x = _zero_inputs(circuit)
    w = torch.zeros(circuit.weight_shape, dtype=torch.float64)
    return circuit.angles(x, w) != circuit.angles(x, w + 1)


def trained_angles(circuit: Circuit, weights: torch.Tensor) -> torch.Tensor:
    """The angle vector with ``weights`` (``circuit.weight_shape``) in the weight entries and every data
    angle 0: the trained circuit itself, independent of any token."""
    weights = torch.as_tensor(weights).detach().to("cpu", torch.float64)
    if tuple(weights.shape) != tuple(circuit.weight_shape):
        raise ConfigError(f"weights of shape {tuple(weights.shape)} do not fit circuit {circuit.name!r} with "
                         f"{circuit.n_qubits} qubits and {circuit.n_layers} layers (needs {circuit.weight_shape}); "
                         "build the circuit at the checkpoint's n_qubits and circuit_layers")
    angles = circuit.angles(_zero_inputs(circuit), weights)  # (n_angles,)
    return torch.where(weight_mask(circuit), angles, torch.zeros_like(angles))


def qnode(circuit: Circuit) -> qml.QNode:
    """The circuit as a QNode on ``default.qubit`` taking one angle vector (what the drawers draw)."""
    return qml.QNode(circuit.qfunc, qml.device("default.qubit", wires=circuit.n_wires))


def angles_and_decimals(circuit: Circuit, angles: torch.Tensor | None, decimals: int | None):
    """``(angle vector, decimals to draw)``: symbolic indices with no decimals, or ``angles`` checked."""
    if angles is None:
        return symbolic_angles(circuit), 0  # integers drawn with no decimals: the index itself
    angles = torch.as_tensor(angles, dtype=torch.float64).detach().cpu()
    if tuple(angles.shape) != (circuit.n_angles,):
        raise ConfigError(f"angles of shape {tuple(angles.shape)} do not fit circuit {circuit.name!r}: "
                         f"it takes one vector of {circuit.n_angles} angles")
    return angles, 2 if decimals is None else decimals
