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
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import pennylane as qml
import torch

__all__ = [
    "Circuit",
    "AngleEmbeddingCircuit",
    "PolarEmbeddingCircuit",
    "AmplitudeEmbeddingCircuit",
    "ReuploadingCircuit",
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

#: how a feature circuit is read out: <Z_i>; <Z_i> and <Z_i Z_j>; basis probabilities
READOUTS = ("z", "zz", "probs")


def _entangler_shape(n_layers: int, n_qubits: int) -> tuple[int, ...]:
    return tuple(qml.StronglyEntanglingLayers.shape(n_layers=n_layers, n_wires=n_qubits))


def _apply_entangler(weights: torch.Tensor, wires: list[int]) -> None:
    """StronglyEntanglingLayers on a flat slice of the angle vector, reshaped to its template shape."""
    shape = _entangler_shape(weights.shape[-1] // (3 * len(wires)), len(wires))
    qml.StronglyEntanglingLayers(weights.reshape(weights.shape[:-1] + shape), wires=wires)


@dataclass(frozen=True)
class Circuit:
    """Base class: a named circuit of ``n_qubits`` data qubits and ``n_layers`` variational layers."""

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
            raise ValueError(f"n_qubits={self.n_qubits!r} is invalid for circuit {self.name!r}: use an integer >= 1")
        if not isinstance(self.n_layers, int) or self.n_layers < 1:
            raise ValueError(f"n_layers={self.n_layers!r} is invalid for circuit {self.name!r}: use an integer >= 1")
        if self.readout not in READOUTS:
            raise ValueError(f"readout={self.readout!r} is invalid for circuit {self.name!r}: choose one of {', '.join(READOUTS)}")
        if self.readout != "z" and (self.returns == "state" or len(self.observables) != self.n_wires):
            raise ValueError(f"circuit {self.name!r} has a fixed readout; readout={self.readout!r} applies to the "
                             "embedding, attention-feature and feed-forward circuits")

    # --- sizes, derived from config so callers never hard-code them ---------------------------------
    @property
    def n_wires(self) -> int:
        return self.n_qubits

    @property
    def wires(self) -> list[int]:
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


@dataclass(frozen=True)
class AngleEmbeddingCircuit(Circuit):
    """Token embedding: one RY angle per qubit (``qml.AngleEmbedding``), then ``n_layers`` of
    ``qml.StronglyEntanglingLayers``; outputs <Z> on every qubit.

    ``|psi(x)> = U(w) prod_i RY(x_i)|0>``, ``n_inputs = n_qubits``.
    """

    name = "angle"
    kind = "embedding"

    @property
    def n_inputs(self) -> int:
        return self.n_qubits

    def apply(self, angles: torch.Tensor) -> None:
        n = self.n_qubits
        qml.AngleEmbedding(angles[..., :n], wires=self.wires, rotation="Y")
        _apply_entangler(angles[..., n:], self.wires)


@dataclass(frozen=True)
class PolarEmbeddingCircuit(Circuit):
    """Token embedding as a point on each qubit's Bloch sphere: a radius ``r`` sets the polar angle
    (``theta = pi * sigmoid(r)``) and an angle ``phi`` plus the token's position times a per-qubit
    frequency sets the azimuth, so position lives in the state itself. Then ``n_layers`` of
    ``StronglyEntanglingLayers``; outputs <Z> on every qubit.

    Data inputs per instance: ``[r_0..r_{n-1}, phi_0+pos*f_0 .. phi_{n-1}+pos*f_{n-1}]`` (``2 n``).
    """

    name = "polar"
    kind = "embedding"

    @property
    def n_inputs(self) -> int:
        return 2 * self.n_qubits

    def frequencies(self) -> torch.Tensor:
        """Per-qubit position frequencies, geometric as in rotary embeddings: ``f_i = 10000^(-i/n)``."""
        return 10000.0 ** (-torch.arange(self.n_qubits, dtype=torch.float64) / self.n_qubits)

    def polar_inputs(self, r: torch.Tensor, phi: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        """``r, phi``: ``(..., n_qubits)``; ``positions``: broadcastable to ``r.shape[:-1]``."""
        f = self.frequencies().to(device=phi.device, dtype=phi.dtype)
        return torch.cat([r, phi + positions.to(phi.dtype).unsqueeze(-1) * f], dim=-1)

    def encode(self, inputs: torch.Tensor) -> torch.Tensor:
        n = self.n_qubits
        return torch.cat([math.pi * torch.sigmoid(inputs[..., :n]), inputs[..., n:]], dim=-1)

    def apply(self, angles: torch.Tensor) -> None:
        n = self.n_qubits
        qml.AngleEmbedding(angles[..., :n], wires=self.wires, rotation="Y")
        qml.AngleEmbedding(angles[..., n : 2 * n], wires=self.wires, rotation="Z")
        _apply_entangler(angles[..., 2 * n :], self.wires)


@lru_cache(maxsize=None)
def _gray_matrix(k: int) -> np.ndarray:
    """Mottonen et al. (2004) M matrix mapping uniformly-controlled angles alpha to the RY angles theta
    of its CNOT/RY decomposition: ``theta = M @ alpha / 2**k``. Entry (i, j) = (-1)^(b_j . g_i)."""
    size = 2**k
    m = np.empty((size, size))
    for i in range(size):
        g = i ^ (i >> 1)
        for j in range(size):
            m[i, j] = (-1) ** bin(j & g).count("1")
    return m / size


@lru_cache(maxsize=256)
def _gray_tensor(k: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """:func:`_gray_matrix` as a read-only tensor, built once per (k, dtype, device): a call never copies from
    the host, so it can be captured in a CUDA graph (as :func:`z_signs`)."""
    return torch.as_tensor(_gray_matrix(k), dtype=dtype, device=device)


def _gray_controls(k: int) -> list[int]:
    """Bit (from the least significant) that flips between consecutive Gray codes, cyclically."""
    size = 2**k
    return [int(math.log2((i ^ (i >> 1)) ^ (((i + 1) % size) ^ (((i + 1) % size) >> 1)))) for i in range(size)]


def amplitude_tree_angles(v: torch.Tensor, eps: float = 1e-12) -> list[torch.Tensor]:
    """Angles of the binary tree of RY rotations that prepares the real state ``v/|v|`` (``v``:
    ``(..., 2**n)``). Level ``k`` (target wire ``k``, controls ``0..k-1``) gets ``2**k`` angles, one per
    value of the controls. Inner levels split the norm, the last level uses signed ``atan2`` so the
    amplitudes keep their signs: cos/sin of ``theta/2`` cover the full circle."""
    n = int(round(math.log2(v.shape[-1])))
    levels = []
    # norms[k] has shape (..., 2**k): the norm of every subtree at depth k
    leaves = v
    for k in range(n - 1, -1, -1):
        pairs = leaves.reshape(leaves.shape[:-1] + (2**k, 2))
        a, b = pairs[..., 0], pairs[..., 1]
        if k == n - 1:
            levels.append(2.0 * torch.atan2(b, a + eps))
        else:
            levels.append(2.0 * torch.atan2(b, a))
        leaves = torch.sqrt(a * a + b * b + eps)
    return levels[::-1]


@dataclass(frozen=True)
class AmplitudeEmbeddingCircuit(Circuit):
    """Token embedding by amplitude encoding: a learned real vector ``v`` of length ``2**n_qubits``
    becomes the state ``v/|v|`` through a tree of uniformly-controlled RY rotations (Mottonen et al.,
    decomposed into RY and CNOT so that every angle is one gate), then ``n_layers`` of
    ``StronglyEntanglingLayers``; outputs <Z> on every qubit.

    Data inputs per instance: the ``2**n_qubits`` amplitudes, turned into ``2**n_qubits - 1`` RY angles by
    :meth:`encode` (torch, differentiable).
    """

    name = "amplitude"
    kind = "embedding"

    @property
    def n_inputs(self) -> int:
        return 2**self.n_qubits

    @property
    def n_angles(self) -> int:
        return 2**self.n_qubits - 1 + self.n_weights

    def encode(self, inputs: torch.Tensor) -> torch.Tensor:
        thetas = []
        for k, alpha in enumerate(amplitude_tree_angles(inputs)):
            thetas.append(alpha @ _gray_tensor(k, alpha.dtype, alpha.device).T)
        return torch.cat(thetas, dim=-1)

    def apply(self, angles: torch.Tensor) -> None:
        i = 0
        for k in range(self.n_qubits):
            # controls as seen by the Gray code: bit b (least significant first) is wire k-1-b
            controls = list(range(k - 1, -1, -1))
            flips = _gray_controls(k) if k else [None]
            for flip in flips:
                qml.RY(angles[..., i], wires=k)
                i += 1
                if flip is not None:
                    qml.CNOT(wires=[controls[flip], k])
        _apply_entangler(angles[..., i:], self.wires)


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
    """Swap test of two fidelity states: ancilla wire 0, ``|psi_a>`` on wires ``1..n``, ``|psi_b>`` on
    ``n+1..2n``; H, controlled SWAPs, H. ``<Z_0> = |<psi_a|psi_b>|^2`` exactly, so with shots it is the
    hardware-faithful estimate of the fidelity score (``P(0) = (1 + |<a|b>|^2) / 2``).

    Angle vector: the two states' angle vectors, concatenated (``2 * n_angles`` of the fidelity circuit).
    """

    name = "swap_test"
    kind = "attention"

    @property
    def inner(self) -> FidelityStateCircuit:
        return FidelityStateCircuit(self.n_qubits, self.n_layers)

    @property
    def n_wires(self) -> int:
        return 2 * self.n_qubits + 1

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
        """``inputs``: ``(..., 2, n_qubits)`` — the data angles of state a and state b."""
        a = self.inner.angles(inputs[..., 0, :], weights)
        b = self.inner.angles(inputs[..., 1, :], weights)
        return torch.cat([a, b], dim=-1)

    def apply(self, angles: torch.Tensor) -> None:
        n, m = self.n_qubits, self.inner.n_angles
        qml.Hadamard(wires=0)
        _shifted(self.inner, angles[..., :m], offset=1)
        _shifted(self.inner, angles[..., m:], offset=1 + n)
        for i in range(n):
            qml.CSWAP(wires=[0, 1 + i, 1 + n + i])
        qml.Hadamard(wires=0)


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
            raise ValueError(f"n_qubits={self.n_qubits!r} is invalid for circuit 'ansatz14': its CRX ring needs "
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


def _shifted(circuit: Circuit, angles: torch.Tensor, offset: int) -> None:
    """Apply ``circuit`` on wires ``offset..offset+n_wires-1``."""
    qml.map_wires(lambda: circuit.apply(angles), {w: w + offset for w in circuit.wires})()


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
EMBEDDING_CIRCUITS = tuple(n for n, c in CIRCUITS.items() if c.kind == "embedding")  # the built-in ones


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
        raise ValueError(f"a circuit named {cls.name!r} is already registered ({CIRCUITS[cls.name].__qualname__}): "
                         "give yours another name")
    CIRCUITS[cls.name] = cls
    return cls


def build_circuit(name: str, n_qubits: int = 4, n_layers: int = 2, readout: str = "z") -> Circuit:
    """Build a built-in circuit by name: one of ``CIRCUITS`` (angle, polar, amplitude, attention,
    fidelity, swap_test, feed_forward)."""
    if name not in CIRCUITS:
        raise ValueError(f"unknown circuit {name!r}: valid circuits are {', '.join(sorted(CIRCUITS))}; a circuit of "
                         "your own must be registered first with qelm.circuits.register_circuit(YourCircuit)")
    return CIRCUITS[name](n_qubits=n_qubits, n_layers=n_layers, readout=readout)


def z_product(wires: tuple[int, ...]):
    """The PennyLane observable ``Z_a Z_b ...`` on ``wires``."""
    op = qml.PauliZ(wires[0])
    for w in wires[1:]:
        op = op @ qml.PauliZ(w)
    return op


def z_signs(n_wires: int, wires, like: torch.Tensor) -> torch.Tensor:
    """``(2**n_wires, len(wires))`` matrix of Pauli-Z eigenvalues (+1 for bit 0, -1 for bit 1) of each basis
    state on each wire (or the product over a tuple of wires: a Z string); wire 0 is the most significant bit. ``probs @ z_signs`` gives <Z_w>. Read-only: one
    tensor per (wires, device, dtype) is built and reused, so a call never copies from the host (which
    also lets the call be captured in a CUDA graph)."""
    return _z_signs(n_wires, tuple(int(w) if not isinstance(w, tuple) else tuple(int(v) for v in w) for w in wires),
                    like.device, like.dtype)


@lru_cache(maxsize=256)
def _z_signs(n_wires: int, wires: tuple, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    index = torch.arange(2**n_wires, device=device).unsqueeze(-1)
    columns = []
    for w in wires:  # a wire, or a tuple of wires: the product of their signs
        mask = sum(1 << (n_wires - 1 - v) for v in ((w,) if isinstance(w, int) else w))
        columns.append(mask)
    masks = torch.tensor(columns, device=device)
    parity = torch.zeros(index.shape[0], len(columns), dtype=torch.long, device=device)
    bits = index & masks
    for _ in range(n_wires):  # popcount of each (basis state, mask)
        parity ^= bits & 1
        bits = bits >> 1
    return (1 - 2 * parity).to(dtype)
