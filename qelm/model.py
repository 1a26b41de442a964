"""The decoder-only QELM and its classical twin, built from the same blocks.

``QELM(config)``: embedding -> ``n_layers`` x Block(LayerNorm -> attention -> residual, LayerNorm ->
feed-forward -> residual) -> LayerNorm -> linear LM head. Each slot (embedding, attention, feed-forward)
is quantum or classical by config; everything else is shared code. ``ClassicalLM(config)`` is the same
class with every slot classical; ``ClassicalLM.matched_to(qelm)`` shrinks it to the QELM's parameter
count, the fair "is the circuit worth its parameters?" baseline.
"""

from __future__ import annotations

import contextlib
import math
import os
from collections.abc import Generator
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F
from huggingface_hub import PyTorchModelHubMixin, snapshot_download

from . import decode
from .backends import Backend, BackendSpec, get_backend
from .backends.cpu_threads import check as check_threads
from .backends.cpu_threads import guard_optimizers, limited, mark_parameters
from .config import QELMConfig, check_fits
from .errors import CheckpointError, ConfigError, DataError
from .kv_cache import KVCache, StaticBlock, StaticCache
from .layers import QuantumEmbedding, QuantumFeedForward, QuantumLayer, QuantumMultiHeadAttention
from .model_contents import check_weights, read_config, read_weights
from .model_files import CONFIG, CONFIG_JSON, TOKENIZER, WEIGHTS, check_pretrained_folder, snapshot, write_pretrained
from .pretrained_source import local_folder_or_repo_id
from .sampling import check_sampling
from .version import URL

__all__ = ["QELM", "ClassicalLM", "CausalSelfAttention", "MLP", "ClassicalEmbedding", "Block", "KVCache", "model_kind",
           "load_model"]


class ClassicalEmbedding(nn.Module):
    """Token + learned position embedding."""

    def __init__(self, config: QELMConfig) -> None:
        super().__init__()
        self.token = nn.Embedding(config.vocab_size, config.d_model)
        self.position = nn.Embedding(config.context_len, config.d_model)

    def forward(self, idx: torch.Tensor, start: int | torch.Tensor = 0,
                table: torch.Tensor | None = None) -> torch.Tensor:  # (B, T) -> (B, T, d_model)
        return self.token(idx) + self.position(start + torch.arange(idx.shape[1], device=idx.device))

    def table(self) -> torch.Tensor | None:
        """Nothing to compute ahead: the token embedding is a lookup already (see ``QuantumEmbedding.table``)."""
        return None


class CausalSelfAttention(nn.Module):
    """Classical multi-head causal self-attention, all heads in a batch (nanoGPT style)."""

    def __init__(self, config: QELMConfig) -> None:
        super().__init__()
        self.n_heads = config.n_heads
        self.qkv = nn.Linear(config.d_model, 3 * config.d_model)
        self.proj = nn.Linear(config.d_model, config.d_model)
        self.keep_attention = False
        self.last_attention: torch.Tensor | None = None

    def forward(self, x: torch.Tensor, cache: dict | StaticBlock | None = None) -> torch.Tensor:  # (B, T, C)
        B, T, C = x.shape
        q, k, v = self.qkv(x).split(C, dim=2)
        q, k, v = (t.view(B, T, self.n_heads, C // self.n_heads).transpose(1, 2) for t in (q, k, v))  # (B, nh, T, hs)
        if isinstance(cache, StaticBlock):  # every slot of the static cache (B, nh, context_len, hs), masked
            k, v = cache.append("k", k), cache.append("v", v)
            causal = cache.visible(T, x.device)
        else:
            start = cache["length"] if cache else 0
            if cache is not None:  # earlier tokens' keys and values first: (B, nh, start + T, hs)
                k = torch.cat([cache["k"], k], dim=2) if "k" in cache else k
                v = torch.cat([cache["v"], v], dim=2) if "v" in cache else v
                cache.update(k=k, v=v, length=start + T)
            causal = torch.ones(T, start + T, dtype=torch.bool, device=x.device).tril(start)
        scores = (q @ k.transpose(-2, -1)) / math.sqrt(k.shape[-1])  # (B, nh, T, start + T)
        att = scores.masked_fill(~causal, float("-inf")).softmax(dim=-1)
        if self.keep_attention:
            self.last_attention = att.detach()
        y = (att @ v).transpose(1, 2).reshape(B, T, C)  # (B, T, C)
        return self.proj(y)


class MLP(nn.Module):
    def __init__(self, config: QELMConfig) -> None:
        super().__init__()
        self.fc = nn.Linear(config.d_model, config.d_hidden)
        self.proj = nn.Linear(config.d_hidden, config.d_model)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(F.gelu(self.fc(x)))


class Block(nn.Module):
    def __init__(self, config: QELMConfig, backend: Backend | None = None) -> None:
        super().__init__()
        self.ln1 = nn.LayerNorm(config.d_model)
        self.attention = CausalSelfAttention(config) if config.attention == "classical" else QuantumMultiHeadAttention(config, backend)
        self.ln2 = nn.LayerNorm(config.d_model)
        self.feed_forward = MLP(config) if config.feed_forward == "classical" else QuantumFeedForward(config, backend)

    def forward(self, x: torch.Tensor, cache: dict | StaticBlock | None = None) -> torch.Tensor:
        x = x + self.attention(self.ln1(x), cache)
        return x + self.feed_forward(self.ln2(x))


#: the README.md that ``save_pretrained`` and ``push_to_hub`` write (a Jinja template of huggingface_hub's ModelCard)
MODEL_CARD = """
---
{{ card_data }}
---

# {{ model_name }}

A {{ description }} made with [qelm]({{ repo_url }}): {{ parameters }} parameters.

## Use

```sh
pip install qelm-lab   # the distribution's name: `pip install qelm` installs another project
```

```python
import torch
from qelm import QELM

# this repository's id on the Hub, or the folder it is saved in
model = QELM.from_pretrained("{{ repo_id | default('user/repo', true) }}")
idx = torch.zeros((1, 1), dtype=torch.long)     # token ids: (batch, seq)
out = model.generate(idx, max_new_tokens=20)    # (1, 21)
```

A folder that holds `tokenizer.json` beside the weights turns text into ids and back with
`qelm.tokenizer.load_tokenizer(folder)` (`encode`, `decode`).

- Code: {{ repo_url }}
"""


class QELM(nn.Module, PyTorchModelHubMixin, library_name="qelm", license="apache-2.0", repo_url=URL,
           model_card_template=MODEL_CARD, tags=["quantum-machine-learning", "language-model", "qelm"]):
    """Decoder-only quantum-enhanced language model. ``forward(idx, targets=None) -> (logits, loss)``.

    Its slots (embedding, attention, feed-forward) run circuits or classical blocks as the config says; all
    its quantum layers share one backend. ``save_pretrained(folder)`` / ``QELM.from_pretrained(folder or Hub
    id)`` / ``push_to_hub(repo)`` come from Hugging Face's ``PyTorchModelHubMixin``: ``model.safetensors``
    and ``config.json``. A qelm checkpoint folder is such a folder too (:mod:`qelm.checkpoint`), so either
    loads either.

    Args:
        config: the architecture (what the model is; the model never changes it).
        backend: how the circuits run, a `qelm.backends.BackendSpec` (default: exact, on `qelm.fused`); the
            model keeps it as `spec`, and a checkpoint writes it as its `[runtime]` table.

    Examples:
        >>> import torch
        >>> from qelm import QELM, QELMConfig
        >>> _ = torch.manual_seed(0)
        >>> config = QELMConfig(vocab_size=16, d_model=8, n_heads=2, context_len=8, n_qubits=2, circuit_layers=1)
        >>> model = QELM(config)
        >>> model.num_parameters(), model.circuit_parameters()
        (462, 48)
        >>> idx = torch.randint(0, 16, (2, 5))
        >>> logits, loss = model(idx, targets=idx)
        >>> tuple(logits.shape), loss.dim()
        ((2, 5, 16), 0)
    """

    config: QELMConfig  # what the model is
    spec: BackendSpec  # how its circuits run (a checkpoint's [runtime] table)
    @property
    def cpu_threads(self) -> int | None:
        """Most intra-op threads of a CPU forward call, of its backward pass and of an optimizer step over
        this model's parameters (:mod:`qelm.backends.cpu_threads`: a model this small loses to the barriers of
        a second thread, up to 10x on a loaded machine); default 1, ``None`` runs on torch's own setting. Any
        other value than a positive int or None is refused with a :class:`~qelm.errors.ConfigError`."""
        return self.__dict__.get("_cpu_threads", self.__dict__.get("cpu_threads", 1))  # a model pickled before: 1

    @cpu_threads.setter
    def cpu_threads(self, threads: int | None) -> None:
        self.__dict__["_cpu_threads"] = check_threads(threads)
        mark_parameters(self.parameters(), threads)
    #: replay recorded CUDA graphs for no-grad calls on CUDA (:mod:`qelm.decode`): a forward without a cache
    #: replays the graph of its input's shape, and ``generate`` replays one recorded decode step per token.
    #: The same logits and tokens as eager calls, without the launch overhead that bounds a model this small;
    #: set ``model.cuda_graphs = False`` to run every call eagerly
    cuda_graphs: bool = True

    def __init__(self, config: QELMConfig, backend: BackendSpec | None = None) -> None:
        """``backend``: how the circuits run (default: exact, on ``qelm.fused``); the model keeps it as ``spec``."""
        super().__init__()
        check_fits(config)  # parameters this machine cannot train are refused before a tensor is allocated
        self.config = config
        self.spec = (backend or BackendSpec()).check()
        # one backend object for every layer: one cache of compiled circuits, one place to swap it
        shared = self.spec.build() if config.uses_circuits else None
        self.embedding = ClassicalEmbedding(config) if config.embedding == "classical" else QuantumEmbedding(config, shared)
        self.blocks = nn.ModuleList([Block(config, shared) for _ in range(config.n_layers)])
        self.ln_f = nn.LayerNorm(config.d_model)
        self.lm_head = nn.Linear(config.d_model, config.vocab_size, bias=False)
        guard_optimizers()  # an optimizer step over these parameters runs on cpu_threads too
        self.cpu_threads = 1

    def forward(self, idx: torch.Tensor, targets: torch.Tensor | None = None, cache: KVCache | None = None):
        """Logits of the next token at every position, and the loss when targets are given. Without a cache and
        without gradients, a call on CUDA replays the CUDA graph recorded for its shape (``cuda_graphs``).

        Args:
            idx: token ids ``(batch, seq)``, ``seq <= context_len`` (a tensor, numpy array or nested list).
            targets: the ids to predict ``(batch, seq)``, or None for no loss.
            cache: a :class:`KVCache`: ``idx`` continues the tokens the cache has seen; their keys and values
                are reused and the new ones added (generation, one token at a time).

        Returns:
            tuple[torch.Tensor, torch.Tensor | None]: ``(logits, loss)``: logits ``(batch, seq, vocab_size)``; the mean cross-entropy against
            ``targets`` (a scalar), or None without targets.
        """
        idx = self._check_ids(idx)
        if targets is not None and not isinstance(targets, torch.Tensor):
            targets = torch.as_tensor(targets, dtype=torch.long, device=idx.device)
        if idx.numel() == 0:  # an empty batch, or empty sequences: empty logits, as torch's own layers give
            logits = self.lm_head(self.ln_f(self.lm_head.weight.new_zeros(*idx.shape, self.config.d_model)))  # (B, T, vocab)
            return logits, None if targets is None else F.cross_entropy(logits.reshape(-1, logits.shape[-1]),
                                                                        targets.reshape(-1))
        start = cache.length if isinstance(cache, KVCache) else 0
        if start + idx.shape[1] > self.config.context_len:
            raise DataError(f"the KV cache holds {start} tokens; {idx.shape[1]} more exceed context_len="
                             f"{self.config.context_len}: start a new cache from the last {self.config.context_len} tokens")
        with limited(self.cpu_threads, idx.device) as mark, self._prepared():  # forward and backward on cpu_threads
            if cache is None and decode.graphs_apply(self, idx.device):  # no grad, CUDA: a recorded graph
                logits = decode.graphed_logits(self, idx)
            elif cache is None:
                logits = mark(decode.logits_function(self)(idx, None))  # (B, T, vocab); compiled if it was
            else:
                logits = mark(self._logits(idx, cache))  # (B, T, vocab)
            loss = None
            if targets is not None:
                loss = mark(F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1)))
        return logits, loss

    def _prepared(self):
        """The backend's preparation of the circuit calls of one eager forward pass with gradients
        (:meth:`qelm.backends.Backend.prepare`: ``qelm.fused`` builds the matrices of circuits of one structure
        at once); nothing without gradients or once compiled."""
        layers = self.quantum_layers()
        if not layers or not torch.is_grad_enabled() or torch.compiler.is_compiling() or decode.compiled(self) is not None:
            return contextlib.nullcontext()
        backend = layers[0].backend
        return backend.prepare([run for layer in layers if layer.backend is backend for run in layer.circuit_runs()])

    def _logits(self, idx: torch.Tensor, cache: KVCache | StaticCache | None) -> torch.Tensor:
        """The forward pass of checked ids: logits (B, T, vocab); a cache's keys and values read and extended
        (a :class:`StaticCache` at its position tensor, advanced in place: what a recorded step replays)."""
        start: int | torch.Tensor = cache.length if isinstance(cache, KVCache) else \
            cache.position if cache is not None else 0
        table = cache.embedding if isinstance(cache, StaticCache) else None  # circuit features, computed ahead
        x = self.embedding(idx, start, table)  # (B, T, d_model)
        for i, block in enumerate(self.blocks):
            x = block(x, cache.blocks[i] if cache is not None else None)
        if isinstance(cache, KVCache):
            cache.length += idx.shape[1]
        elif cache is not None:
            cache.advance(idx.shape[1])
        return self.lm_head(self.ln_f(x))  # (B, T, vocab)

    def _check_ids(self, idx) -> torch.Tensor:
        """``idx`` as a (batch, seq) tensor of token ids, checked; a numpy array or list becomes one."""
        if not isinstance(idx, torch.Tensor):
            idx = torch.as_tensor(idx, device=self.lm_head.weight.device)
        if idx.dtype.is_floating_point or idx.dtype.is_complex or idx.dtype == torch.bool:
            raise DataError(f"token ids must be integers, got dtype {idx.dtype}: pass a tensor of token ids "
                             f"(torch.long)")
        if idx.dtype != torch.long:
            idx = idx.long()
        if idx.dim() != 2:
            raise DataError(f"token ids must be (batch, seq), got shape {tuple(idx.shape)}")
        if idx.shape[1] > self.config.context_len:
            raise DataError(f"sequence length {idx.shape[1]} exceeds context_len={self.config.context_len}; "
                             f"crop the input to its last {self.config.context_len} tokens")
        if torch.compiler.is_compiling():  # value checks read the tensor: done when the model runs eagerly
            return idx
        if not idx.numel():
            return idx
        low, high = torch.stack(torch.aminmax(idx)).tolist()  # one read of the host per call, not two
        if low < 0 or high >= self.config.vocab_size:
            bad = high if high >= self.config.vocab_size else low
            raise DataError(f"token id {bad} is out of range for vocab_size={self.config.vocab_size}: "
                             f"ids must be in [0, {self.config.vocab_size - 1}]")
        return idx

    # --- Hugging Face Hub ------------------------------------------------------------------------------
    def save_pretrained(self, save_directory: str | os.PathLike, **kwargs: Any):
        """Hugging Face's ``save_pretrained`` (``model.safetensors``, ``config.json``, a model card); a qelm
        checkpoint folder is refused before anything in it changes (use :func:`qelm.save_checkpoint`).

        Args:
            save_directory: the folder to write (created if missing).
            **kwargs: the mixin's options (``push_to_hub``, ``repo_id``, ``model_card_kwargs``, ...).

        Returns:
            str | None: what the mixin returns (None, or the Hub commit's URL when pushing).
        """
        check_pretrained_folder(save_directory)
        if kwargs.get("repo_id"):  # the model card's usage snippet names the repository
            kwargs["model_card_kwargs"] = {"repo_id": kwargs["repo_id"], **(kwargs.get("model_card_kwargs") or {})}
        return super().save_pretrained(os.fspath(save_directory), **kwargs)

    def generate_model_card(self, *args: Any, **kwargs: Any) -> Any:
        """huggingface_hub's model card, filled in with what this model is (:data:`MODEL_CARD`)."""
        quantum = model_kind(self) == "qelm"
        kwargs.setdefault("model_name", "QELM" if quantum else "ClassicalLM")
        kwargs.setdefault("description", "quantum-enhanced language model" if quantum else
                          "classical language model (the twin of a quantum-enhanced one)")
        kwargs.setdefault("parameters", f"{self.num_parameters():,}")
        return super().generate_model_card(*args, **kwargs)

    def _save_pretrained(self, save_directory: Path) -> None:
        write_pretrained(save_directory, model_kind(self), self)

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path: str | os.PathLike, **kwargs: Any) -> QELM:
        """Hugging Face's ``from_pretrained``: a local folder (a ``save_pretrained`` folder or a qelm
        checkpoint, older ones without ``config.json`` too) is read here directly, a Hub id through the
        mixin (downloaded first). Keywords: ``map_location``, ``backend`` and backend options, and for the
        Hub ``revision``, ``cache_dir``, ``token``, ...

        Args:
            pretrained_model_name_or_path: a local folder, or a Hub repository id (``user/name``).
            **kwargs: ``map_location``, ``backend`` and its options, and the Hub's download options.

        Returns:
            The model, of the class the folder holds (a :class:`ClassicalLM` folder needs
            ``ClassicalLM.from_pretrained`` or ``QELM.from_pretrained``).
        """
        source = local_folder_or_repo_id(pretrained_model_name_or_path)  # a missing local path fails here
        if isinstance(source, Path):
            return cls._from_pretrained(model_id=str(source), **kwargs)
        return super().from_pretrained(source, **kwargs)

    @classmethod
    def _from_pretrained(cls, *, model_id: str, revision: str | None = None, cache_dir: str | os.PathLike | None = None,
                         force_download: bool = False, local_files_only: bool = False, token: str | bool | None = None,
                         map_location: str = "cpu", strict: bool = True, backend: str | None = None,
                         **options: Any) -> QELM:
        """Read the folder (a local one, else the Hub repository ``model_id`` downloaded): safetensors and the
        config only, checked strictly (``strict`` is accepted for the mixin's signature and always on).
        ``backend`` and its options run the circuits elsewhere than the saved ``[runtime]`` says."""
        options.pop("config", None)  # the mixin's reading of config.json; the folder's own config is read below
        folder = Path(model_id)
        if not folder.is_dir():
            folder = Path(snapshot_download(repo_id=model_id, revision=revision,
                                            cache_dir=None if cache_dir is None else os.fspath(cache_dir),
                                            force_download=force_download, local_files_only=local_files_only,
                                            token=token, allow_patterns=[WEIGHTS, CONFIG_JSON, CONFIG, TOKENIZER]))
        model = _load_pretrained(folder, backend=backend, **options)
        if not isinstance(model, cls):
            raise DataError(f"{model_id} holds a {type(model).__name__}, not a {cls.__name__}: load it with "
                             f"{type(model).__name__}.from_pretrained (or QELM.from_pretrained, which loads either)")
        return model.to(map_location)

    # --- backends ------------------------------------------------------------------------------------
    def quantum_layers(self) -> list[QuantumLayer]:
        """The layers that run circuits (empty for a classical model), in module order."""
        return [m for m in self.modules() if isinstance(m, QuantumLayer)]

    def set_backend(self, backend: str | Backend, **options) -> QELM:
        """Run every circuit on another backend; weights are untouched.

        Args:
            backend: a backend name (see :func:`qelm.available_backends`) or a built :class:`Backend`.
            **options: the backend's options (``shots``, ``seed``, ``noise``, ...).

        Returns:
            The model itself, so calls chain: ``model.set_backend("default.qubit").eval()``.

        Raises:
            BackendUnavailable: the backend cannot run here; the message says what to install.
            BackendError: the backend cannot run one of the model's circuits (a circuit of your own whose gates
                it has no kernel for, say); the message names a backend that can, and the model keeps its own.

        Examples:
            >>> from qelm import QELM, QELMConfig
            >>> model = QELM(QELMConfig(vocab_size=16, d_model=8, n_qubits=2, circuit_layers=1))
            >>> model.set_backend("default.qubit", shots=100, seed=0).backend
            <qelm backend default.qubit (100 shots)>
        """
        shared = get_backend(backend, **options)
        for layer in self.quantum_layers():  # every circuit checked before any layer changes
            layer.check_backend(shared)
        for layer in self.quantum_layers():
            layer.backend = shared
        self.spec = BackendSpec(shared.name, shared.shots, {k: v for k, v in options.items() if k != "shots"})
        return self

    @property
    def backend(self) -> Backend | None:
        """The backend every quantum layer runs on; None for a model without circuits."""
        layers = self.quantum_layers()
        return layers[0].backend if layers else None

    # --- introspection -------------------------------------------------------------------------------
    def num_parameters(self) -> int:
        """Every trainable and frozen parameter, circuit gate angles included (what comparisons count)."""
        return sum(p.numel() for p in self.parameters())

    def circuit_parameters(self) -> int:
        """Parameters that are gate angles inside circuits (the circuit weights of quantum layers)."""
        return sum(p.numel() for name, p in self.named_parameters() if name.endswith("weights"))

    @torch.no_grad()
    def generate(self, idx: torch.Tensor | None = None, max_new_tokens: int | None = None, temperature: float = 1.0,
                 top_k: int | None = None, generator: torch.Generator | None = None, use_cache: bool = True, *,
                 top_p: float | None = None, min_p: float | None = None, repetition_penalty: float = 1.0,
                 input_ids: torch.Tensor | None = None, do_sample: bool = True, streamer: Any = None,
                 cache_implementation: str | None = None) -> torch.Tensor:
        """Sample ``max_new_tokens`` tokens after ``idx`` (B, T) and return ``idx`` with them appended
        (B, T + max_new_tokens); the window slides at ``context_len``. The sampling options are those of
        Hugging Face's ``generate`` (:func:`sample_next` applies them, :func:`check_sampling` checks them).

        With ``use_cache`` (the default) each new token runs only its own circuits and attends to the
        cached keys and values of the tokens before it. Positions are absolute, so once the sequence
        passes ``context_len`` the window slides and every step re-reads the whole window (as without the
        cache); the logits are the same either way. After the prompt, the cache is static where CUDA graphs
        apply (:mod:`qelm.decode`): fixed-size buffers and one recorded decode step replayed per token, sampling
        on the GPU, the same tokens for the same seed.

        Args:
            idx: the prompt's token ids ``(batch, seq)``, ``seq >= 1``.
            max_new_tokens: how many tokens to sample.
            temperature: divides the logits; lower is more conservative.
            top_k: sample only from the ``top_k`` most likely tokens (None: all).
            generator: a seeded ``torch.Generator`` for reproducible samples.
            use_cache: reuse the keys and values of earlier tokens (the same logits, faster).
            top_p: nucleus sampling: the smallest set of tokens whose probability reaches ``top_p``.
            min_p: drop tokens less likely than ``min_p`` times the most likely one.
            repetition_penalty: > 1 makes tokens already in the sequence less likely.
            input_ids: Hugging Face's name for ``idx`` (give one of the two).
            do_sample: False (or ``temperature=0``) for greedy decoding: the most likely token each step.
            streamer: an object with ``put(token_ids)`` and ``end()`` (as Hugging Face's ``TextStreamer``):
                it gets the prompt's ids, then each step's new ids ``(B,)``, then ``end()``.
            cache_implementation: ``"static"`` (fixed-size buffers, a step of fixed shapes: replayed from a
                recorded CUDA graph where ``cuda_graphs`` applies, eager elsewhere), ``"dynamic"`` (the cache
                grows each step) or None: static where graphs apply, else dynamic. Hugging Face's name.

        Returns:
            ``(batch, seq + max_new_tokens)`` token ids: the prompt, then the new tokens.

        Examples:
            >>> import torch
            >>> from qelm import QELM, QELMConfig
            >>> model = QELM(QELMConfig(vocab_size=16, d_model=8, context_len=8, n_qubits=2, circuit_layers=1))
            >>> out = model.eval().generate(torch.tensor([[1, 2, 3]]), 4, generator=torch.Generator().manual_seed(0))
            >>> tuple(out.shape), out[0, :3].tolist()
            ((1, 7), [1, 2, 3])
            >>> greedy = model.generate(input_ids=torch.tensor([[1, 2, 3]]), max_new_tokens=4, do_sample=False)
            >>> torch.equal(greedy, model.generate(torch.tensor([[1, 2, 3]]), 4, temperature=0))
            True
        """
        # Hugging Face's spellings: input_ids= for idx; do_sample=False (or temperature=0) for greedy decoding
        # (qelm samples by default); a streamer gets put(prompt ids), put(each step's new ids (B,)) and end()
        if input_ids is not None:
            if idx is not None:
                raise DataError("generate takes the prompt once: pass idx or input_ids, not both")
            idx = input_ids
        if idx is None or max_new_tokens is None:
            raise DataError("generate needs the prompt's token ids (idx or input_ids) and max_new_tokens")
        if not isinstance(do_sample, bool):
            raise ConfigError(f"do_sample={do_sample!r} is invalid: use True (sample) or False (greedy)")
        if streamer is not None and not (callable(getattr(streamer, "put", None)) and callable(getattr(streamer, "end", None))):
            raise ConfigError(f"streamer={streamer!r} is invalid: use an object with put(token_ids) and end(), as "
                              f"Hugging Face's TextStreamer")
        steps = self.stream(idx, max_new_tokens, temperature=temperature if do_sample else 0.0, top_k=top_k,
                            top_p=top_p, min_p=min_p, repetition_penalty=repetition_penalty, generator=generator,
                            use_cache=use_cache, cache_implementation=cache_implementation)
        if streamer is None:
            return torch.cat([idx, *steps], dim=1)
        streamer.put(idx.cpu())
        new = []
        for step in steps:  # (B, 1)
            new.append(step)
            streamer.put(step[:, 0].cpu())
        streamer.end()
        return torch.cat([idx, *new], dim=1)

    def stream(self, idx: torch.Tensor, max_new_tokens: int, *, temperature: float = 1.0, top_k: int | None = None,
               top_p: float | None = None, min_p: float | None = None, repetition_penalty: float = 1.0,
               generator: torch.Generator | None = None, use_cache: bool = True,
               never: tuple[int, ...] = (), cache_implementation: str | None = None) -> Generator[torch.Tensor, None, None]:
        """:meth:`generate` one step at a time: yields each step's new tokens (B, 1) as they are drawn, so a
        caller can print them or stop early. The one sampling loop: :meth:`generate` and
        :func:`qelm.evaluate.stream_text` both run it. Every argument is checked before the first step.

        The arguments are those of :meth:`generate`, and:

        Args:
            never: token ids never to sample (e.g. the unknown token).

        Returns:
            A generator of ``(batch, 1)`` tensors, one per new token.
        """
        check_sampling(max_new_tokens, temperature, top_k, top_p=top_p, min_p=min_p,
                       repetition_penalty=repetition_penalty)
        decode.check_cache_implementation(cache_implementation, self.config)
        if not isinstance(idx, torch.Tensor) or idx.dim() != 2 or idx.shape[1] == 0:
            got = f"shape {tuple(idx.shape)}" if isinstance(idx, torch.Tensor) else type(idx).__name__
            raise DataError(f"generate continues (batch, seq) token ids with seq >= 1, got {got}")
        return decode.steps(self, idx, max_new_tokens, dict(temperature=temperature, top_k=top_k, top_p=top_p,
                                                            min_p=min_p, repetition_penalty=repetition_penalty,
                                                            never=tuple(never)),
                            generator, use_cache, cache_implementation)


class ClassicalLM(QELM):
    """The classical twin: the same blocks as :class:`QELM` with every slot classical.

    Args:
        config: the QELM's config; its slots are made classical (``config.classical()``).

    Examples:
        >>> from qelm import ClassicalLM, QELMConfig
        >>> config = QELMConfig(vocab_size=16, d_model=8, n_heads=2, context_len=8, n_qubits=2, circuit_layers=1)
        >>> twin = ClassicalLM(config)
        >>> twin.num_parameters() == ClassicalLM.parameter_count(config) == 1208
        True
        >>> twin.backend is None
        True
    """

    def __init__(self, config: QELMConfig, backend: BackendSpec | None = None) -> None:
        super().__init__(config.classical(), backend)

    @staticmethod
    def parameter_count(config: QELMConfig) -> int:
        """Exact parameter count of ``ClassicalLM(config)``, from the module definitions, without building it.

        Args:
            config: any config (its slots are ignored: the count is the twin's).

        Returns:
            The number of parameters ``ClassicalLM(config).num_parameters()`` would report.
        """
        V, C, d, h, L = config.vocab_size, config.context_len, config.d_model, config.d_hidden, config.n_layers
        per_block = 2 * d + (3 * d * d + 3 * d) + (d * d + d) + 2 * d + (d * h + h) + (h * d + d)
        return V * d + C * d + L * per_block + 2 * d + d * V

    @classmethod
    def matched_to(cls, model: QELM, tolerance: float = 0.02) -> ClassicalLM:
        """A classical LM of the same vocab, context, heads and layers, with ``d_model`` and ``d_hidden``
        shrunk so its parameter count is as close as possible to ``model``'s.

        Args:
            model: the model to match (usually a :class:`QELM`).
            tolerance: the largest relative difference in parameters accepted.

        Returns:
            The matched classical model, freshly initialised.

        Raises:
            DataError: no classical model of this shape comes within ``tolerance``.

        Examples:
            >>> from qelm import QELM, ClassicalLM, QELMConfig
            >>> qelm = QELM(QELMConfig(vocab_size=16, d_model=8, n_heads=2, context_len=8, n_qubits=2, circuit_layers=1))
            >>> matched = ClassicalLM.matched_to(qelm)
            >>> qelm.num_parameters(), matched.num_parameters()
            (462, 466)
        """
        target = sum(p.numel() for p in model.parameters())
        base: QELMConfig = model.config.classical()
        ratio = base.d_hidden / base.d_model  # keep the twin's shape where the budget allows
        candidates = []
        for d in range(base.n_heads, 4 * base.d_model + 1, base.n_heads):
            per_unit = base.n_layers * (2 * d + 1)  # each hidden unit adds 2d+1 parameters per block
            fixed = cls.parameter_count(base.replace(d_model=d, d_hidden=1)) - per_unit
            h = max(1, round((target - fixed) / per_unit))
            cfg = base.replace(d_model=d, d_hidden=h)
            err = abs(cls.parameter_count(cfg) - target)
            candidates.append((err > tolerance * target, abs(math.log(h / d / ratio)), err, d, cfg))
        outside, _, err, _, cfg = min(candidates, key=lambda c: c[:3])
        if outside:
            raise DataError(f"no classical model with vocab_size={base.vocab_size}, context_len={base.context_len}, "
                             f"n_heads={base.n_heads}, n_layers={base.n_layers} comes within {tolerance:.0%} of "
                             f"{target} parameters (closest: {target + err}); the fixed-size parts alone are too large")
        return cls(cfg)


def model_kind(model: nn.Module) -> str:
    """"qelm" or "classical": which class a checkpoint folder builds for ``model`` (``kind`` in its config)."""
    if isinstance(model, ClassicalLM):
        return "classical"
    if isinstance(model, QELM):
        return "qelm"
    raise CheckpointError(f"save_checkpoint takes a QELM or ClassicalLM, got {type(model).__name__}")


def load_model(folder: Path, paths: dict[str, Path], backend: str | None, backend_options: dict[str, Any], *,
               vocab_size: int | None = None) -> tuple[str, QELM, dict[str, str]]:
    """``(kind, model in eval mode, safetensors metadata)`` of a checked folder (:func:`checkpoint_files`):
    the config read, the model of its kind built, the weights checked against it and loaded. Only safetensors
    and the config are read: nothing runs code."""
    kind, config, spec = read_config(folder, paths)
    if vocab_size is not None and vocab_size != config.vocab_size:
        raise CheckpointError(f"checkpoint {str(folder)!r} does not match its config: {TOKENIZER} has "
                         f"{vocab_size} tokens but {CONFIG if CONFIG in paths else CONFIG_JSON} says "
                         f"vocab_size={config.vocab_size}")
    spec = spec.replaced(backend, backend_options)
    model = ClassicalLM(config, spec) if kind == "classical" else QELM(config, spec)
    weights, metadata = read_weights(folder, paths)
    check_weights(folder, model, weights, config, CONFIG if CONFIG in paths else CONFIG_JSON)
    bad = [name for name, t in weights.items() if t.is_floating_point() and not bool(torch.isfinite(t).all())]
    if bad:
        raise CheckpointError(f"checkpoint {str(folder)!r} cannot be used: {WEIGHTS} holds NaN or infinity in "
                         f"{', '.join(bad[:4])} (the model diverged before it was saved); train it again")
    model.load_state_dict(weights, strict=True)
    model.eval()
    return kind, model, metadata


def _load_pretrained(directory: str | os.PathLike, *, backend: str | None = None, **backend_options: Any) -> QELM:
    """The model alone of a Hugging Face folder or a checkpoint folder (what ``QELM.from_pretrained``
    reads locally), in eval mode; checked as :func:`load_checkpoint` checks it. No tokenizer is needed."""
    folder = Path(directory)
    with snapshot(folder) as (paths, _):  # one consistent save, even while a run saves into the folder
        return load_model(folder, paths, backend, backend_options)[1]
