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


def embedding_circuits() -> tuple[str, ...]:
    """Names of every registered embedding circuit (built-in and :func:`register_circuit`-ed)."""
    return tuple(n for n, c in CIRCUITS.items() if c.kind == "embedding")


def register_circuit(cls: type[Circuit]) -> type[Circuit]:
    """Make a :class:`Circuit` subclass usable by name (``QELMConfig(embedding_circuit=cls.name)`` for
    ``kind = "embedding"``), and let checkpoints that name it load. Usable as a class decorator.

    Loading a checkpoint never imports code: it finds circuits only in this registry, so register the class
    (import the module that defines it) before loading a model that uses it."""
    if not (isinstance(cls, type) and issubclass(cls, Circuit)):
        raise TypeError(f"register_circuit takes a Circuit subclass, got {cls!r}")
    if cls.name in CIRCUITS and CIRCUITS[cls.name] is not cls:
        raise ConfigError(f"a circuit named {cls.name!r} is already registered ({CIRCUITS[cls.name].__qualname__}): "
                         "give yours another name")
    CIRCUITS[cls.name] = cls
    return cls


def build_circuit(name: str, n_qubits: int = 4, n_layers: int = 2, readout: str = "z") -> Circuit:
    """Build a built-in circuit by name: one of ``CIRCUITS`` (angle, polar, amplitude, attention,
    fidelity, swap_test, feed_forward)."""
    if name not in CIRCUITS:
        raise ConfigError(f"unknown circuit {name!r}: valid circuits are {', '.join(sorted(CIRCUITS))}; a circuit of "
                         "your own must be registered first with qelm.circuits.register_circuit(YourCircuit)")
    return CIRCUITS[name](n_qubits=n_qubits, n_layers=n_layers, readout=readout)
