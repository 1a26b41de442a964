"""The variational circuits of attention and feed-forward: data re-uploading (``attention``,
``feed_forward``), its state for fidelity attention (``fidelity``) and the swap test of two such states
(``swap_test``); and Quixer's token unitary (``ansatz14``)."""

from __future__ import annotations

from dataclasses import dataclass

import pennylane as qml
import torch

from ..errors import ConfigError
from .base import Circuit, _apply_entangler

__all__ = ["ReuploadingCircuit", "FidelityStateCircuit", "FeedForwardCircuit", "SwapTestCircuit", "Ansatz14Circuit"]


@dataclass(frozen=True)
class ReuploadingCircuit(Circuit):
    """Data re-uploading ansatz (Perez-Salinas et al. 2020): ``n_layers`` times, encode the ``n_qubits``
    input angles with RY, then one ``StronglyEntanglingLayers`` layer; outputs <Z> on every qubit.

    Used for attention-head features (query/key/value), for the fidelity attention state (``returns``
    "state") and for the quantum feed-forward block. Re-uploading repeats the input ``n_layers`` times in
    the angle vector (done by :meth:`encode`), so each gate still owns one angle.
    """

    name = "attention"
    kind = "attention"

    @property
    def n_inputs(self) -> int:
        return self.n_qubits

    def encode(self, inputs: torch.Tensor) -> torch.Tensor:
        return inputs.repeat((1,) * (inputs.dim() - 1) + (self.n_layers,))

    @property
    def n_angles(self) -> int:
        return self.n_qubits * self.n_layers + self.n_weights

    def apply(self, angles: torch.Tensor) -> None:
        n, L = self.n_qubits, self.n_layers
        w = angles[..., n * L :]
        per_layer = 3 * n
        for layer in range(L):
            qml.AngleEmbedding(angles[..., layer * n : (layer + 1) * n], wires=self.wires, rotation="Y")
            _apply_entangler(w[..., layer * per_layer : (layer + 1) * per_layer], self.wires)


@dataclass(frozen=True)
class FidelityStateCircuit(ReuploadingCircuit):
    """The fidelity-attention state ``|psi_t>``: the re-uploading circuit, returning its state vector so
    that scores ``|<psi_i|psi_j>|^2`` are exact."""

    name = "fidelity"
    kind = "attention"
    returns = "state"


@dataclass(frozen=True)
class FeedForwardCircuit(ReuploadingCircuit):
    """Quantum feed-forward block: the re-uploading ansatz in the MLP slot."""

    name = "feed_forward"
    kind = "feed_forward"


@dataclass(frozen=True)
class SwapTestCircuit(Circuit):
    """Swap test of two states: ancilla wire 0, ``|psi_a>`` on wires ``1..m``, ``|psi_b>`` on ``m+1..2m``
    (``m`` the state circuit's wires); H, controlled SWAPs, H. ``<Z_0> = |<psi_a|psi_b>|^2`` exactly, so with
    shots it is the hardware-faithful estimate of the fidelity score (``P(0) = (1 + |<a|b>|^2) / 2``).

    The states are those of ``state`` (default: the built-in ``fidelity`` circuit; fidelity attention with an
    attention circuit of your own passes that circuit's class), both with the same weights. Angle vector: the
    two states' angle vectors, concatenated (``2 * n_angles`` of the state circuit).
    """

    #: the circuit class whose state is compared (None: :class:`FidelityStateCircuit`)
    state: type[Circuit] | None = None
    name = "swap_test"
    kind = "attention"

    @property
    def inner(self) -> Circuit:
        """The state circuit, at this circuit's qubits and layers."""
        return (self.state or FidelityStateCircuit)(self.n_qubits, self.n_layers)

    @property
    def key(self) -> tuple:
        return super().key if self.state is None else super().key + (self.state.name,)

    @property
    def n_wires(self) -> int:
        return 2 * self.inner.n_wires + 1

    @property
    def n_inputs(self) -> int:
        return 2 * self.inner.n_inputs

    @property
    def weight_shape(self) -> tuple[int, ...]:
        return self.inner.weight_shape

    @property
    def n_angles(self) -> int:
        return 2 * self.inner.n_angles

    @property
    def input_shape(self) -> tuple[int, ...]:
        return (2, self.inner.n_inputs)

    @property
    def observables(self) -> tuple[int, ...]:
        return (0,)

    def data_angles(self, inputs: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.inner.data_angles(inputs[..., 0, :]), self.inner.data_angles(inputs[..., 1, :])], dim=-1)

    def angle_layout(self) -> tuple[tuple[bool, int], ...]:
        inner, shift = self.inner.angle_layout(), self.inner.n_data_angles
        return inner + tuple((w, k if w else k + shift) for w, k in inner)

    def angles(self, inputs: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        """``inputs``: ``(..., 2, n_inputs of the state circuit)``: the data of state a and state b."""
        a = self.inner.angles(inputs[..., 0, :], weights)
        b = self.inner.angles(inputs[..., 1, :], weights)
        return torch.cat([a, b], dim=-1)

    def apply(self, angles: torch.Tensor) -> None:
        n, m = self.inner.n_wires, self.inner.n_angles
        qml.Hadamard(wires=0)
        _shifted(self.inner, angles[..., :m], offset=1)
        _shifted(self.inner, angles[..., m:], offset=1 + n)
        for i in range(n):
            qml.CSWAP(wires=[0, 1 + i, 1 + n + i])
        qml.Hadamard(wires=0)


def _shifted(circuit: Circuit, angles: torch.Tensor, offset: int) -> None:
    """Apply ``circuit`` on wires ``offset..offset+n_wires-1``."""
    qml.map_wires(lambda: circuit.apply(angles), {w: w + offset for w in circuit.wires})()


@dataclass(frozen=True)
class Ansatz14Circuit(Circuit):
    """"Ansatz 14" of Sim, Johnson and Aspuru-Guzik (2019), the token unitary of Quixer (Khatri et al. 2024):
    ``n_layers`` times an RY layer, a ring of CRX gates (control ``i``, target ``i+1``, from the last wire
    down), another RY layer and the reverse ring (control ``i``, target ``i-1``); ``4 n`` angles per layer,
    every one a data angle (a Quixer token's angles come from its embedding). Returns the state: a Quixer
    layer applies it to states of its own (:meth:`qelm.backends.Backend.evolve`)."""

    name = "ansatz14"
    kind = "unitary"
    returns = "state"

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.n_qubits < 2:
            raise ConfigError(f"n_qubits={self.n_qubits!r} is invalid for circuit 'ansatz14': its CRX ring needs "
                             "at least 2 qubits")

    @property
    def n_inputs(self) -> int:
        return 4 * self.n_qubits * self.n_layers

    @property
    def weight_shape(self) -> tuple[int, ...]:
        return (0,)

    def apply(self, angles: torch.Tensor) -> None:
        n, k = self.n_qubits, 0
        for _ in range(self.n_layers):
            for ring in ([(i, (i + 1) % n) for i in range(n - 1, -1, -1)],
                         [(i, (i - 1) % n) for i in [n - 1] + list(range(n - 1))]):
                for i in range(n):
                    qml.RY(angles[..., k], wires=i)
                    k += 1
                for control, target in ring:
                    qml.CRX(angles[..., k], wires=[control, target])
                    k += 1
