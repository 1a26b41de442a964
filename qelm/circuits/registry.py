"""Circuits by name: the built-in ones, and those registered with :func:`register_circuit`."""

from __future__ import annotations

from ..errors import ConfigError
from .base import Circuit
from .embeddings import AmplitudeEmbeddingCircuit, AngleEmbeddingCircuit, PolarEmbeddingCircuit
from .variational import (Ansatz14Circuit, FeedForwardCircuit, FidelityStateCircuit, ReuploadingCircuit,
                          SwapTestCircuit)

__all__ = ["CIRCUITS", "build_circuit", "register_circuit", "embedding_circuits"]

CIRCUITS: dict[str, type[Circuit]] = {
    c.name: c
    for c in (
        AngleEmbeddingCircuit,
        PolarEmbeddingCircuit,
        AmplitudeEmbeddingCircuit,
        ReuploadingCircuit,
        FidelityStateCircuit,
        SwapTestCircuit,
        FeedForwardCircuit,
        Ansatz14Circuit,
    )
}
"""Every circuit class by name: the built-in ones (``angle``, ``polar``, ``amplitude``, ``attention``,
``fidelity``, ``swap_test``, ``feed_forward``, ``ansatz14``) and those added by :func:`register_circuit`.
Build one with :func:`build_circuit`."""


def embedding_circuits() -> tuple[str, ...]:
    """Names of every registered embedding circuit (built-in and :func:`register_circuit`-ed)."""
    return tuple(n for n, c in CIRCUITS.items() if c.kind == "embedding")


def register_circuit(cls: type[Circuit]) -> type[Circuit]:
    """Make a :class:`Circuit` subclass usable by name (``QELMConfig(embedding_circuit=cls.name)`` for
    ``kind = "embedding"``), and let checkpoints that name it load. Usable as a class decorator.

    Loading a checkpoint never imports code: it finds circuits only in this registry, so register the class
    (import the module that defines it) before loading a model that uses it.

    Args:
        cls: the subclass; its ``name`` is the name it is registered under.

    Returns:
        ``cls`` itself, so the function works as a decorator.

    Raises:
        TypeError: ``cls`` is not a :class:`Circuit` subclass.
        ConfigError: another class is already registered under that name.
    """
    if not (isinstance(cls, type) and issubclass(cls, Circuit)):
        raise TypeError(f"register_circuit takes a Circuit subclass, got {cls!r}")
    if cls.name in CIRCUITS and CIRCUITS[cls.name] is not cls:
        raise ConfigError(f"a circuit named {cls.name!r} is already registered ({CIRCUITS[cls.name].__qualname__}): "
                         "give yours another name")
    CIRCUITS[cls.name] = cls
    return cls


def build_circuit(name: str, n_qubits: int = 4, n_layers: int = 2, readout: str = "z") -> Circuit:
    """Build a circuit by name: one of ``CIRCUITS`` (angle, polar, amplitude, attention, fidelity,
    swap_test, feed_forward, ansatz14, or one registered with :func:`register_circuit`).

    Args:
        name: the circuit's name.
        n_qubits: data qubits.
        n_layers: variational layers.
        readout: ``"z"``, ``"zz"`` or ``"probs"`` (for circuits whose outputs are features).

    Returns:
        The circuit, which knows its own sizes (``n_inputs``, ``weight_shape``, ``n_angles``, ``n_outputs``).

    Raises:
        ConfigError: the name is not registered, or a size or the readout is invalid.

    Examples:
        >>> from qelm import build_circuit
        >>> circuit = build_circuit("angle", n_qubits=2, n_layers=1)
        >>> circuit.n_inputs, circuit.weight_shape, circuit.n_angles, circuit.n_outputs
        (2, (1, 2, 3), 8, 2)
        >>> build_circuit("angle", 2, 1, readout="zz").n_outputs  # <Z_0>, <Z_1>, <Z_0 Z_1>
        3
    """
    if name not in CIRCUITS:
        raise ConfigError(f"unknown circuit {name!r}: valid circuits are {', '.join(sorted(CIRCUITS))}; a circuit of "
                         "your own must be registered first with qelm.circuits.register_circuit(YourCircuit)")
    return CIRCUITS[name](n_qubits=n_qubits, n_layers=n_layers, readout=readout)
