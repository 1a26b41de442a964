"""Quixer (Khatri et al., "Quixer: A Quantum Transformer Model", 2024), built from qelm circuits, and its
classical twin.

A window of ``T`` tokens becomes one state of ``n`` qubits:

1. every token's embedding (``d_embed`` wide, dropout) is mapped by a linear layer to the ``4 n L`` angles
   of its unitary ``U_t`` (:class:`~qelm.circuits.Ansatz14Circuit`, ``L`` ansatz layers);
2. the window's unitaries are combined as ``M = sum_t b_t U_t`` with trainable complex coefficients
   ``b`` (L1-normalised): the linear combination of unitaries (LCU);
3. a polynomial of it with trainable real coefficients, ``P(M)|0> = sum_k c_k M^k |0> / ||c||_1`` (what
   the QSVT realises on hardware; here, as in the reference code, simulated directly: ``M^k |0>`` is ``k``
   rounds of applying every ``U_t`` to the previous round's state);
4. the normalised state goes through one more ansatz-14 layer with trainable angles and is read out as
   ``<X>``, ``<Y>``, ``<Z>`` of every qubit (``3 n`` features);
5. ``Linear(3 n, d_embed) -> ReLU -> Linear(d_embed, V)`` gives the logits of the token after the window.

The circuit work goes through the backend's :meth:`~qelm.backends.Backend.evolve`: ``qelm.fused`` in real
arithmetic (:mod:`qelm.backends.fused_evolve`), ``default.qubit`` through PennyLane for parity.

The twin (:class:`QuixerTwin`) keeps the embedding and the output head and replaces steps 1-4 by a
classical mixer of no more parameters, so the difference of the two says what the circuit part adds.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
import torch.nn as nn

from .backends import Backend, get_backend
from .backends.fused_evolve import bit_masks, flip_wire
from .circuits import Ansatz14Circuit
from .errors import ConfigError, DataError

__all__ = ["QuixerConfig", "Quixer", "QuixerMixer", "QuixerTwin", "ClassicalMixer", "init_like_reference",
           "twin_hidden", "mixer_parameters", "pauli_xyz"]


@dataclass(frozen=True)
class QuixerConfig:
    """What a Quixer model is. Defaults: the published 6-qubit model on Penn Treebank (its vocabulary size
    comes from the data)."""

    vocab_size: int
    #: qubits of each token's unitary
    n_qubits: int = 6
    #: tokens per window (the LCU addresses them with log2(window) control qubits: a power of two)
    window: int = 32
    #: degree of the polynomial of the LCU (the QSVT's degree)
    degree: int = 3
    #: ansatz-14 layers of each token's unitary
    ansatz_layers: int = 4
    #: width of the token embedding and of the output head's hidden layer
    d_embed: int = 512
    dropout: float = 0.1

    def __post_init__(self) -> None:
        checks = (("vocab_size", 2, "an integer >= 2"), ("n_qubits", 2, "an integer >= 2 (the CRX ring)"),
                  ("window", 1, "a power of two >= 1"), ("degree", 1, "an integer >= 1"),
                  ("ansatz_layers", 1, "an integer >= 1"), ("d_embed", 1, "an integer >= 1"))
        for name, low, what in checks:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ConfigError(f"{name}={value!r} is invalid: use {what}")
        if self.window & (self.window - 1):
            raise ConfigError(f"window={self.window} is invalid: the LCU selects a window's tokens with log2(window) "
                             f"control qubits, so use a power of two (e.g. {1 << (self.window.bit_length() - 1)} or "
                             f"{1 << self.window.bit_length()})")
        if self.n_qubits > 16:
            raise ConfigError(f"n_qubits={self.n_qubits} is invalid: Quixer keeps window x 2**n_qubits amplitudes per "
                             "window; use at most 16")
        if not (isinstance(self.dropout, (int, float)) and 0.0 <= self.dropout < 1.0):
            raise ConfigError(f"dropout={self.dropout!r} is invalid: use a number in [0, 1)")

    def to_dict(self) -> dict:
        return asdict(self)


class QuixerMixer(nn.Module):
    """Steps 2-4 of the module docstring: per-token angles ``(W, T, 4 n L)`` -> features ``(W, 3 n)``."""

    def __init__(self, config: QuixerConfig, backend: str | Backend = "qelm.fused", **backend_options) -> None:
        super().__init__()
        n = config.n_qubits
        self.config = config
        self.token_circuit = Ansatz14Circuit(n, config.ansatz_layers)
        self.final_circuit = Ansatz14Circuit(n, 1)
        self.backend = get_backend(backend, **backend_options)
        # as the reference: uniform [0, 1) for the polynomial, the LCU's real and imaginary parts and the angles
        self.poly = nn.Parameter(torch.rand(config.degree + 1))
        self.lcu = nn.Parameter(torch.rand(config.window, 2))  # (real, imaginary) of each b_t
        self.final_angles = nn.Parameter(torch.rand(self.final_circuit.n_angles))

    def set_backend(self, backend: str | Backend, **options) -> None:
        self.backend = get_backend(backend, **options)

    def memory_bytes(self, windows: int) -> int:
        """What a training step of ``windows`` windows holds at its peak, an upper estimate: per polynomial
        round the window's states repeated for every token, the evolved states, the cotangents and the adjoint's
        working states (six real ``(windows * T, 2**n)`` arrays), plus the angles."""
        itemsize = 8 if getattr(self.backend, "dtype", "complex128") == "complex128" else 4
        per_token = 2**self.config.n_qubits * itemsize * 12 + self.token_circuit.n_angles * itemsize * 3
        return windows * self.config.window * per_token * (self.config.degree + 1)

    def windows_that_fit(self, available: int) -> int:
        """The most windows a step can take within ``available`` bytes."""
        return max(0, available // max(1, self.memory_bytes(1)))

    def lcu_state(self, angles: torch.Tensor, real: torch.dtype):
        """``P(M)|0>`` for every window (not normalised), as real and imaginary parts ``(W, D)``."""
        W, T, _ = angles.shape
        D = 2**self.config.n_qubits
        b = self.lcu.to(real)
        b = b / b.norm(dim=-1).sum()  # L1 norm of the complex coefficients
        br, bi = b[:, 0], b[:, 1]
        flat = angles.reshape(W * T, -1)
        zero_re = torch.zeros(W, D, dtype=real, device=angles.device)
        zero_re[:, 0] = 1
        re, im = zero_re, torch.zeros_like(zero_re)
        poly = self.poly.to(real)
        acc_re, acc_im = poly[0] * re, poly[0] * im
        for k in range(1, self.config.degree + 1):
            # M v = sum_t b_t U_t v: every token's unitary on its window's state, one batched evolve
            ur, ui = self.backend.evolve_pairs(self.token_circuit, flat, re.repeat_interleave(T, 0),
                                               im.repeat_interleave(T, 0))
            ur, ui = ur.reshape(W, T, D), ui.reshape(W, T, D)
            re = torch.einsum("wtd,t->wd", ur, br) - torch.einsum("wtd,t->wd", ui, bi)
            im = torch.einsum("wtd,t->wd", ui, br) + torch.einsum("wtd,t->wd", ur, bi)
            acc_re, acc_im = acc_re + poly[k] * re, acc_im + poly[k] * im
        scale = poly.abs().sum()
        return acc_re / scale, acc_im / scale

    def forward(self, angles: torch.Tensor) -> torch.Tensor:
        real = torch.float64 if getattr(self.backend, "dtype", "complex128") == "complex128" else torch.float32
        re, im = self.lcu_state(angles, real)
        norm = torch.sqrt((re * re + im * im).sum(-1, keepdim=True))
        re, im = re / norm, im / norm
        final = self.final_angles.to(real).expand(re.shape[0], -1)
        re, im = self.backend.evolve_pairs(self.final_circuit, final, re, im)
        return pauli_xyz(re, im, self.config.n_qubits).to(angles.dtype)


def pauli_xyz(re: torch.Tensor, im: torch.Tensor, n: int) -> torch.Tensor:
    """``<X_q>``, then ``<Y_q>``, then ``<Z_q>`` of every qubit ``q`` of normalised states ``(W, 2**n)``:
    ``(W, 3 n)``. ``<X> = sum re F re + im F im``, ``<Y> = sum sgn (im F re - re F im)``, ``<Z> = sum z |psi|^2``
    with ``F`` the flip of the qubit's bit, ``sgn = 2 bit - 1`` and ``z = 1 - 2 bit``."""
    bits = bit_masks(n, re.device, re.dtype)
    probs = re * re + im * im
    xs, ys = [], []
    for q in range(n):
        fre, fim = flip_wire(re, q, n), flip_wire(im, q, n)
        xs.append((re * fre + im * fim).sum(-1))
        ys.append(((2 * bits[q] - 1) * (im * fre - re * fim)).sum(-1))
    z = probs @ (1 - 2 * bits).T
    return torch.cat([torch.stack(xs, -1), torch.stack(ys, -1), z], dim=-1)


class ClassicalMixer(nn.Module):
    """The twin's mixer, in the Quixer mixer's place: each token's embedding to ``hidden`` features, the
    window combined with trainable per-position weights (L1-normalised, as the LCU), then a polynomial of
    that combination's elementwise powers and a linear map to ``3 n`` features in ``[-1, 1]`` (tanh), the
    range of the Pauli expectations. ``hidden`` is the largest width whose parameters do not exceed the
    quantum side's (:func:`twin_hidden`)."""

    def __init__(self, config: QuixerConfig, hidden: int) -> None:
        super().__init__()
        self.config = config
        self.to_hidden = nn.Linear(config.d_embed, hidden)
        self.positions = nn.Parameter(torch.rand(config.window))
        self.poly = nn.Parameter(torch.rand(config.degree + 1))
        self.readout = nn.Linear(hidden, 3 * config.n_qubits)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x: (W, T, d_embed) embeddings after dropout
        h = torch.tanh(self.to_hidden(x))
        b = self.positions / self.positions.abs().sum()
        m = torch.einsum("wth,t->wh", h, b)
        acc = self.poly[0] + sum(self.poly[k] * m**k for k in range(1, self.config.degree + 1))
        return torch.tanh(self.readout(acc / self.poly.abs().sum()))


def twin_hidden(config: QuixerConfig) -> int:
    """The twin mixer's width: the largest whose parameter count is at most the quantum mixer's (the angle
    map ``d_embed -> 4 n L``, the LCU, polynomial and final-layer angles)."""
    n, L, d = config.n_qubits, config.ansatz_layers, config.d_embed
    quantum = (d + 1) * 4 * n * L + 2 * config.window + config.degree + 1 + 4 * n
    fixed = config.window + config.degree + 1 + 3 * n  # positions, polynomial, readout bias
    per_hidden = d + 1 + 3 * n  # to_hidden row and bias, readout column
    return max(1, (quantum - fixed) // per_hidden)


class _WindowLM(nn.Module):
    """Embedding -> dropout -> mixer -> ``Linear(3 n, d) -> ReLU -> Linear(d, V)``: logits of the token after
    each window, ``(W, T)`` token ids -> ``(W, V)``."""

    def __init__(self, config: QuixerConfig) -> None:
        super().__init__()
        self.config = config
        self.embedding = nn.Embedding(config.vocab_size, config.d_embed)
        self.dropout = nn.Dropout(config.dropout)
        self.head = nn.Sequential(nn.Linear(3 * config.n_qubits, config.d_embed), nn.ReLU(),
                                  nn.Linear(config.d_embed, config.vocab_size))

    def features(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        if idx.dim() != 2 or idx.shape[1] != self.config.window:
            raise DataError(f"token ids must be (windows, {self.config.window}), got {tuple(idx.shape)}")
        return self.head(self.features(self.dropout(self.embedding(idx))))


class Quixer(_WindowLM):
    """The Quixer language model (module docstring); ``backend`` runs its circuits (``qelm.fused`` or
    ``default.qubit``; ``dtype="complex64"`` on qelm.fused for float32 speed, as the reference ran)."""

    def __init__(self, config: QuixerConfig, backend: str | Backend = "qelm.fused", **backend_options) -> None:
        super().__init__(config)
        n_angles = Ansatz14Circuit(config.n_qubits, config.ansatz_layers).n_angles
        self.to_angles = nn.Linear(config.d_embed, n_angles)
        self.mixer = QuixerMixer(config, backend, **backend_options)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.mixer(self.to_angles(x))


class QuixerTwin(_WindowLM):
    """Quixer's classical twin: the same embedding and head, :class:`ClassicalMixer` in the circuit's place."""

    def __init__(self, config: QuixerConfig) -> None:
        super().__init__(config)
        self.mixer = ClassicalMixer(config, twin_hidden(config))

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.mixer(x)


def init_like_reference(model: nn.Module) -> nn.Module:
    """The reference code's initialisation, applied after construction: Xavier-uniform weights and zero
    biases for every ``nn.Linear`` (the exact type: subclasses such as attention's output projection keep
    torch's default, as there), N(0, 0.02) for every embedding."""
    for m in model.modules():
        if type(m) is nn.Linear:
            nn.init.xavier_uniform_(m.weight)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Embedding):
            nn.init.normal_(m.weight, mean=0.0, std=0.02)
    return model


def mixer_parameters(model: _WindowLM) -> int:
    """Parameters outside the shared embedding and head (what the twin matches)."""
    shared = {id(p) for m in (model.embedding, model.head) for p in m.parameters()}
    return sum(p.numel() for p in model.parameters() if id(p) not in shared)

