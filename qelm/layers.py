"""Quantum ``torch.nn.Module`` layers. Each runs all of its circuits for a batch — every token, sample and
head — in one execution on its backend. Inputs and weights go to the backend apart
(:meth:`qelm.backends.Backend.run`), laid out weight-set-major: per-head (and per q/k/v slot) weights
``(S..., *weight_shape)`` and the samples of each set ``(S..., M, n)``, so a backend that fuses the weights'
gates (``qelm.fused``) builds one unitary per set and call. Classical reduce/expand projections are plain
``nn.Linear``.

Shapes: B batch, T tokens, H heads, n qubits per circuit, D = 2**n state-vector size.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn

from .backends import Backend, get_backend
from .backends.cuda_graph import capturing
from .backends.spec import DEFAULT_BACKEND
from .circuits import Circuit, SwapTestCircuit, build_circuit, check_slot, z_signs
from .config import QELMConfig
from .errors import ConfigError
from .kv_cache import StaticBlock

__all__ = ["QuantumLayer", "QuantumEmbedding", "QuantumAttentionHead", "QuantumMultiHeadAttention", "QuantumFeedForward"]


def _init_circuit_weights(shape: tuple[int, ...]) -> nn.Parameter:
    # uniform over a full turn, the usual initialisation for rotation angles
    return nn.Parameter(torch.rand(shape) * 2 * math.pi)


class QuantumLayer(nn.Module):
    """Base for modules that run circuits: holds the backend (not a parameter: swapping it never touches
    weights). A model builds one backend and hands it to every layer; a layer built alone builds its own."""

    def __init__(self, backend: str | Backend = DEFAULT_BACKEND, **backend_options) -> None:
        super().__init__()
        self.backend = get_backend(backend, **backend_options)

    def set_backend(self, backend: str | Backend, **options) -> None:
        """Run this layer's circuits on another backend (a name and its options, or a built one); the
        weights are untouched.

        Raises:
            BackendError: the backend cannot run one of the layer's circuits (the message names the gate and
                a backend that can); the layer keeps its backend.
        """
        backend = get_backend(backend, **options)
        self.check_backend(backend)
        self.backend = backend

    def circuits(self) -> tuple[Circuit, ...]:
        """The circuits this layer runs (as it is configured: the swap test only in that mode, say)."""
        return ()

    def circuit_runs(self) -> tuple[tuple[Circuit, torch.Tensor], ...]:
        """The ``(circuit, weights)`` pairs this layer's forward pass runs with its weights as they are (what a
        model asks its backend to prepare: :meth:`qelm.backends.Backend.prepare`); calls with a slice of them
        are left out."""
        return ()

    def check_backend(self, backend: Backend | None = None) -> None:
        """Refuse, before any forward pass, a backend (default: this layer's) that cannot run one of
        :meth:`circuits` (:meth:`qelm.backends.Backend.check_circuit`)."""
        for circuit in self.circuits():
            (backend or self.backend).check_circuit(circuit)

    def run(self, circuit: Circuit, inputs: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        """The circuit's readout features (<Z> per qubit, plus <ZZ> pairs, or basis probabilities):
        ``inputs`` ``(S..., *batch, *input_shape)``, ``weights`` ``(S..., *weight_shape)`` ->
        ``(S..., *batch, circuit.n_outputs)``, one execution."""
        return circuit.features(self.backend.run(circuit, inputs, weights, "expval"))

    def run_state(self, circuit: Circuit, inputs: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        """State vectors, laid out as :meth:`run`: ``(S..., *batch, D)`` complex, one execution."""
        return self.backend.run(circuit, inputs, weights, "state")


class QuantumEmbedding(QuantumLayer):
    """Token embedding through an embedding circuit (``angle``, ``polar`` or ``amplitude``).

    Each token owns a learned input vector (``circuit.n_inputs`` numbers); the circuit (shared variational
    weights) maps it to ``n_qubits`` <Z> values, expanded to ``d_model`` by a linear layer. Position:
    ``polar`` writes it into each qubit's phase; ``angle`` and ``amplitude`` add a learned position
    embedding after the expansion. Without position in the circuit, a token's circuit output does not
    depend on where it stands, so only the distinct token ids of a batch are simulated.

    Args:
        config: the model's config (``vocab_size``, ``d_model``, ``context_len``, ``n_qubits``,
            ``circuit_layers``, ``embedding_circuit``, ``readout``).
        backend: the model's shared backend; None builds an exact ``qelm.fused``.

    Examples:
        >>> import torch
        >>> from qelm import QELMConfig, QuantumEmbedding
        >>> embed = QuantumEmbedding(QELMConfig(vocab_size=16, d_model=8, n_qubits=2, circuit_layers=1))
        >>> tuple(embed(torch.tensor([[1, 2, 3]])).shape)
        (1, 3, 8)
    """

    def __init__(self, config: QELMConfig, backend: Backend | None = None) -> None:
        super().__init__(backend or DEFAULT_BACKEND)
        self.config = config
        self.circuit = check_slot(config.circuit(config.embedding_circuit), "embedding")
        c = self.circuit
        self.token_inputs = nn.Parameter(torch.randn(config.vocab_size, c.n_inputs) * (0.5 if c.name != "amplitude" else 1.0))
        self.weights = _init_circuit_weights(c.weight_shape)
        self.expand = nn.Linear(c.n_outputs, config.d_model)
        self.position = None if c.name == "polar" else nn.Embedding(config.context_len, config.d_model)
        self.check_backend()

    def circuits(self) -> tuple[Circuit, ...]:
        """The embedding circuit."""
        return (self.circuit,)

    def table(self) -> torch.Tensor | None:
        """The circuit's features of every token ``(vocab_size, n_outputs)``, where they do not depend on the
        position (``angle``, ``amplitude``; None for ``polar``): what the fixed-shape path computes per call,
        computed once by a decode loop while the weights stay fixed, so a decode step runs no embedding
        circuit."""
        if self.circuit.name == "polar":
            return None
        return self.run(self.circuit, self.token_inputs, self.weights)  # (V, n)

    def forward(self, idx: torch.Tensor, start: int | torch.Tensor = 0,
                table: torch.Tensor | None = None) -> torch.Tensor:  # (B, T) -> (B, T, d_model)
        """Embed token ids.

        Args:
            idx: token ids ``(B, T)``.
            start: the position of ``idx[:, 0]`` (non-zero when generating with a KV cache; a 0-dim tensor
                with a static cache).
            table: :meth:`table` computed beforehand, read instead of running the circuit.

        Returns:
            The embeddings ``(B, T, d_model)``, positions included.
        """
        B, T = idx.shape
        positions = start + torch.arange(T, device=idx.device)  # (T,)
        if self.circuit.name == "polar":
            pos = positions.expand(B, T)
            inputs = self.circuit.polar_inputs(*self.token_inputs[idx].chunk(2, dim=-1), pos)  # (B, T, 2n)
            z = self.run(self.circuit, inputs, self.weights)  # (B, T, n)
            return self.expand(z)
        position = self.position
        assert position is not None  # every embedding circuit but polar adds a learned position
        if table is not None:
            return self.expand(table[idx]) + position(positions)
        if torch.compiler.is_compiling() or capturing(idx.device):  # fixed shapes: every token of the vocabulary
            z = self.run(self.circuit, self.token_inputs, self.weights)[idx]  # (B, T, n)
            return self.expand(z) + position(positions)
        ids, inverse = torch.unique(idx, return_inverse=True)  # (U,), (B, T)
        z = self.run(self.circuit, self.token_inputs[ids], self.weights)  # (U, n)
        return self.expand(z[inverse]) + position(positions)


class QuantumAttentionHead(QuantumLayer):
    """The quantum part of attention for ``n_heads`` heads at once, on reduced features ``(B, T, H, n)``.

    ``mode="quantum"``: three re-uploading circuits per head give query, key and value features
    (<Z> of each qubit); scaled dot-product attention with a causal mask on those n-dim features.

    ``mode="fidelity"``: each token's features are encoded into a state ``|psi_t>`` and the score of
    tokens i, j is ``|<psi_i|psi_j>|^2``, exact from the state vector (``method="exact"``) or from the
    swap-test circuit (``method="swap_test"``, which works with shots and any backend). Scores under the
    causal mask, optionally thresholded per row at ``mean + 0.5 std`` of the visible scores (a token always
    keeps itself), are normalised to sum to one. Values are the <Z> features of the same state.

    Returns ``(B, T, H, n)``. The last attention weights ``(B, H, T, T)`` are kept in ``last_attention``
    when ``keep_attention`` is set (for plots).

    Args:
        n_qubits: qubits per circuit (the features ``n`` of each head).
        circuit_layers: variational layers per circuit.
        n_heads: heads, all run in one execution.
        mode: ``"quantum"`` or ``"fidelity"``.
        method: fidelity only: ``"exact"`` or ``"swap_test"``.
        adaptive_threshold: fidelity only: keep the scores >= row mean + 0.5 std.
        backend: a backend name or a built backend.
        readout: the q/k/v circuits' readout (``"z"``, ``"zz"`` or ``"probs"``).
        circuit: the heads' circuit: ``"attention"`` or one registered of kind ``"attention"``
            (:data:`qelm.circuits.SLOTS` says what it takes and gives); ``n`` below is its ``n_inputs``.
        **backend_options: the backend's options, when ``backend`` is a name.

    Examples:
        >>> import torch
        >>> from qelm import QuantumAttentionHead
        >>> heads = QuantumAttentionHead(n_qubits=2, circuit_layers=1, n_heads=2)
        >>> tuple(heads(torch.randn(1, 5, 2, 2)).shape)
        (1, 5, 2, 2)
    """

    def __init__(self, n_qubits: int = 4, circuit_layers: int = 2, n_heads: int = 1, mode: str = "quantum",
                 method: str = "exact", adaptive_threshold: bool = False, backend: str | Backend = "qelm.fused",
                 readout: str = "z", circuit: str = "attention", **backend_options) -> None:
        super().__init__(backend, **backend_options)
        if mode not in ("quantum", "fidelity"):
            raise ConfigError(f"attention mode {mode!r} is invalid: choose quantum or fidelity")
        if method not in ("exact", "swap_test"):
            raise ConfigError(f"fidelity method {method!r} is invalid: choose exact or swap_test")
        self.mode, self.method, self.adaptive_threshold = mode, method, adaptive_threshold
        self.n_heads, self.n_qubits = n_heads, n_qubits
        # q/k/v features read out as the config says; fidelity values stay <Z> per qubit
        self.features = check_slot(build_circuit(circuit, n_qubits, circuit_layers, readout if mode == "quantum" else "z"),
                                   "attention")
        self.n_inputs = self.features.n_inputs  # per head: what the circuit takes (n for the built-in)
        self.out_features = self.features.n_outputs  # per head: F for quantum attention, n for fidelity
        if circuit == "attention":  # the built-in state circuits (the same gates, read out as a state)
            self.fidelity: Circuit = build_circuit("fidelity", n_qubits, circuit_layers)
            self.swap_test: Circuit = build_circuit("swap_test", n_qubits, circuit_layers)
        else:  # a circuit of your own: its state, and the swap test of two of its states
            self.fidelity = self.features
            self.swap_test = SwapTestCircuit(n_qubits, circuit_layers, state=type(self.features))
        slots = 3 if mode == "quantum" else 1  # q, k, v circuits per head, or one state per head
        self.weights = _init_circuit_weights((n_heads, slots) + self.features.weight_shape)
        self.keep_attention = False
        self.last_attention: torch.Tensor | None = None
        self.check_backend()

    def circuits(self) -> tuple[Circuit, ...]:
        """The q/k/v feature circuit (quantum), the state circuit (fidelity, exact), or the swap test and the
        value circuit (fidelity, swap test)."""
        if self.mode == "quantum":
            return (self.features,)
        return (self.fidelity,) if self.method == "exact" else (self.swap_test, self.features)

    def circuit_runs(self) -> tuple[tuple[Circuit, torch.Tensor], ...]:
        """The q/k/v circuit with every head's weights ``(H, 3, ...)`` (quantum mode)."""
        return ((self.features, self.weights),) if self.mode == "quantum" else ()

    def forward(self, x: torch.Tensor, cache: dict | None = None) -> torch.Tensor:  # x (B, T, H, n)
        """Attend, causally, over every head at once.

        Args:
            x: reduced features ``(B, T, H, n)``.
            cache: a dict, filled here: the earlier tokens' keys and values (states, features), so that new
                tokens run only their own circuits and attend to everything before them.

        Returns:
            The attended values ``(B, T, H, out_features)``.
        """
        B, T, H, n = x.shape
        if isinstance(cache, StaticBlock):  # every slot of the static cache, the ones not yet seen masked
            start, Tk = 0, cache.cache.context_len
            causal = cache.visible(T, x.device)  # (T, Tk)
        else:
            start = cache["length"] if cache else 0
            Tk = start + T  # every key position, the new tokens last
            causal = torch.ones(T, Tk, dtype=torch.bool, device=x.device).tril(start)  # (T, Tk)
        if self.mode == "quantum":
            # weight sets (H, 3) first: the same features go into the q, k and v circuits of each head
            inputs = x.permute(2, 0, 1, 3).reshape(H, 1, B * T, n).expand(H, 3, B * T, n)
            qkv = self.run(self.features, inputs, self.weights)  # (H, 3, B*T, F), F features per circuit
            F = qkv.shape[-1]
            q, k, v = qkv.reshape(H, 3, B, T, F).permute(1, 2, 0, 3, 4).unbind(0)  # each (B, H, T, F)
            k, v = _cached(cache, "k", k), _cached(cache, "v", v)  # (B, H, Tk, F)
            scores = (q @ k.transpose(-1, -2)) / math.sqrt(F)  # (B, H, T, Tk)
            att = scores.masked_fill(~causal, float("-inf")).softmax(dim=-1)
        else:
            w = self.weights[:, 0]  # (H, *weight_shape)
            xh = x.permute(2, 0, 1, 3)  # (H, B, T, n): each head's samples with its weight set
            if self.method == "exact":
                psi_new = self.run_state(self.fidelity, xh, w).transpose(0, 1)  # (B, H, T, D)
                psi = _cached(cache, "psi", psi_new)  # (B, H, Tk, D)
                scores = (psi_new.conj() @ psi.transpose(-1, -2)).abs().square().to(x.dtype)  # (B, H, T, Tk)
                probs = psi_new.abs().square().to(x.dtype)  # (B, H, T, D)
                signs = z_signs(self.fidelity.n_wires, self.fidelity.observables, probs)  # (D, n)
                v = _cached(cache, "v", probs @ signs)  # (B, H, Tk, n) <Z> of each qubit
            else:
                x_all = _cached(cache, "x", x)  # (B, Tk, H, n): the swap test pairs new tokens with all before
                scores = self._swap_test_scores(x_all, w, start)
                v = _cached(cache, "v", self.run(self.features, xh, w).transpose(0, 1))  # (B, H, Tk, n)
            keep = causal.expand(B, H, T, Tk)
            if self.adaptive_threshold:
                keep = keep & _adaptive_keep(scores, causal, start)
            scores = scores * keep
            att = scores / scores.sum(dim=-1, keepdim=True).clamp_min(1e-12)
        if isinstance(cache, dict):
            cache["length"] = Tk
        if self.keep_attention:
            self.last_attention = att.detach()
        return (att @ v).permute(0, 2, 1, 3)  # (B, T, H, n)

    def _swap_test_scores(self, x: torch.Tensor, w: torch.Tensor, start: int = 0) -> torch.Tensor:
        """Fidelities of every causal pair (i >= j, i >= start) from swap-test circuits: ``(B, H, T - start, T)``,
        zero above the diagonal. One execution of all pairs of all heads."""
        B, T, H, _ = x.shape
        i, j = torch.tril_indices(T, T, device=x.device)  # (Np,) each
        new = i >= start
        i, j = i[new], j[new]
        xh = x.permute(2, 0, 1, 3)  # (H, B, T, n): each head's samples with its weight set
        pairs = torch.stack([xh[:, :, i], xh[:, :, j]], dim=3)  # (H, B, Np, 2, n)
        fid = self.run(self.swap_test, pairs, w)[..., 0]  # (H, B, Np)
        scores = x.new_zeros(B, H, T - start, T)
        scores[:, :, i - start, j] = fid.transpose(0, 1)
        return scores


def _cached(cache: dict | StaticBlock | None, key: str, new: torch.Tensor) -> torch.Tensor:
    """``new`` (..., T, ...) after what ``cache`` holds under ``key`` along the token axis (-2, or 1 for the
    swap test's inputs ``x``); the cache then holds both (a static cache: written into its slots, all of
    them returned)."""
    if cache is None:
        return new
    if isinstance(cache, StaticBlock):
        return cache.append(key, new)
    dim = 1 if key == "x" else -2
    full = new if key not in cache else torch.cat([cache[key], new], dim=dim)
    cache[key] = full
    return full


def _adaptive_keep(scores: torch.Tensor, causal: torch.Tensor, start: int = 0) -> torch.Tensor:
    """Keep scores >= mean + 0.5 std of each row's visible (causal) scores; the diagonal (each token itself,
    at key position ``start + row``) always stays, since a row whose scores are nearly all 1 can put the
    threshold above every score."""
    visible = causal.to(scores.dtype)
    count = visible.sum(-1, keepdim=True)
    mean = (scores * visible).sum(-1, keepdim=True) / count
    std = (((scores - mean) * visible).square().sum(-1, keepdim=True) / count).sqrt()
    eye = torch.eye(causal.shape[0], causal.shape[1], dtype=torch.bool, device=scores.device).roll(start, dims=1)
    return (scores >= mean + 0.5 * std) | eye


class QuantumMultiHeadAttention(QuantumLayer):
    """Multi-head attention whose heads are circuits: ``reduce`` (d_model -> H*n), the heads'
    :class:`QuantumAttentionHead` in one execution, ``expand`` (H*n -> d_model).

    Args:
        config: the model's config (``d_model``, ``n_heads``, ``n_qubits``, ``circuit_layers``,
            ``attention``, ``attention_circuit``, ``fidelity_method``, ``adaptive_threshold``, ``readout``).
        backend: the model's shared backend; None builds an exact ``qelm.fused``.

    Examples:
        >>> import torch
        >>> from qelm import QELMConfig, QuantumMultiHeadAttention
        >>> attention = QuantumMultiHeadAttention(QELMConfig(d_model=8, n_heads=2, n_qubits=2, circuit_layers=1))
        >>> tuple(attention(torch.randn(1, 5, 8)).shape)
        (1, 5, 8)
    """

    def __init__(self, config: QELMConfig, backend: Backend | None = None) -> None:
        super().__init__(backend or DEFAULT_BACKEND)
        self.n_heads, self.n_qubits = config.n_heads, config.n_qubits
        self.n_inputs = config.circuit(config.attention_circuit).n_inputs  # per head: n_qubits for the built-in
        self.reduce = nn.Linear(config.d_model, config.n_heads * self.n_inputs)
        self.heads = QuantumAttentionHead(config.n_qubits, config.circuit_layers, config.n_heads, config.attention,
                                          config.fidelity_method, config.adaptive_threshold, self.backend,
                                          readout=config.readout, circuit=config.attention_circuit)
        self.expand = nn.Linear(config.n_heads * self.heads.out_features, config.d_model)

    def set_backend(self, backend: str | Backend, **options) -> None:
        """Run this layer's circuits, its heads' included, on another backend."""
        backend = get_backend(backend, **options)
        self.heads.check_backend(backend)
        self.backend = self.heads.backend = backend

    def forward(self, x: torch.Tensor, cache: dict | None = None) -> torch.Tensor:  # x (B, T, d_model)
        """Causal self-attention of ``x`` ``(B, T, d_model)`` -> ``(B, T, d_model)``; ``cache`` as for
        :meth:`QuantumAttentionHead.forward`."""
        B, T, _ = x.shape
        h = self.reduce(x).view(B, T, self.n_heads, self.n_inputs)  # (B, T, H, n)
        return self.expand(self.heads(h, cache).reshape(B, T, -1))  # (B, T, d_model)


class QuantumFeedForward(QuantumLayer):
    """Feed-forward slot as a circuit: ``reduce`` (d_model -> n), the feed-forward circuit (the built-in
    re-uploading one, <Z> per qubit, or one registered of kind ``"feed_forward"``), ``expand`` (n -> d_model);
    ``n`` is the circuit's ``n_inputs``.

    Args:
        config: the model's config (``d_model``, ``n_qubits``, ``circuit_layers``, ``feed_forward_circuit``,
            ``readout``).
        backend: the model's shared backend; None builds an exact ``qelm.fused``.

    Examples:
        >>> import torch
        >>> from qelm import QELMConfig, QuantumFeedForward
        >>> ff = QuantumFeedForward(QELMConfig(d_model=8, n_qubits=2, circuit_layers=1))
        >>> tuple(ff(torch.randn(1, 5, 8)).shape)
        (1, 5, 8)
    """

    def __init__(self, config: QELMConfig, backend: Backend | None = None) -> None:
        super().__init__(backend or DEFAULT_BACKEND)
        self.circuit = check_slot(config.circuit(config.feed_forward_circuit), "feed_forward")
        self.reduce = nn.Linear(config.d_model, self.circuit.n_inputs)
        self.weights = _init_circuit_weights(self.circuit.weight_shape)
        self.expand = nn.Linear(self.circuit.n_outputs, config.d_model)
        self.check_backend()

    def circuits(self) -> tuple[Circuit, ...]:
        """The feed-forward circuit."""
        return (self.circuit,)

    def circuit_runs(self) -> tuple[tuple[Circuit, torch.Tensor], ...]:
        """The feed-forward circuit with its weights."""
        return ((self.circuit, self.weights),)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x (B, T, d_model)
        """``(B, T, d_model)`` -> ``(B, T, d_model)``: each token through the circuit."""
        z = self.run(self.circuit, self.reduce(x), self.weights)  # (B, T, F)
        return self.expand(z)
