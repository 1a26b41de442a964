"""Launch-free inference on CUDA, and the sampling loop: a model's no-grad forward replayed from a recorded
CUDA graph (:func:`graphed_logits`), generation as one recorded decode step on a static KV cache
(:class:`Decoder`, driven by :func:`steps`), and both compiled on request (:func:`compile_model`).

Why: a tiny model's forward is a few hundred small kernels whose launches, and the Python that issues them,
cost more than their arithmetic (one H200: a QELM forward 5-7x its twin's time, generation ~400 tokens/s at
batch 2, nearly all host time). A ``torch.cuda.CUDAGraph`` records the kernels once and replays them with one
launch. Training already does this per circuit call (:class:`qelm.backends.cuda_graph.GraphPool`); inference
records the whole model, which also covers the classical layers between the circuits, and the twin.

* **Forward** (:func:`graphed_logits`): a no-grad call of a model on CUDA replays the graph recorded for its
  input's shape (a few kept, :class:`~qelm.backends.cuda_graph.Replays`). On by default
  (``model.cuda_graphs``), because the logits are those of the eager call; a call that needs gradients, runs
  on the CPU, holds a cache, keeps attention maps for a plot or is observed by a benchmark's clock runs
  eagerly, as does a backend that is not pure torch.
* **Generation** (:class:`Decoder`): after the prompt's eager pass on the growing
  :class:`~qelm.kv_cache.KVCache`, its keys and values are copied into a :class:`~qelm.kv_cache.StaticCache`,
  and each new token is one call of the same function (the token's circuits, attention against the static
  cache under a mask, the feed-forward, the logits and the sampling), recorded once and replayed per token;
  the embedding circuit's features of every token are computed once per generation where they do not depend
  on the position. Nothing is read on the host per token: sampling draws with :func:`qelm.sampling.draw`,
  whose noise is drawn from the caller's generator just before the replay, exactly as ``torch.multinomial``
  draws it, so the tokens are those of the growing cache for the same seed. Once the sequence reaches
  ``context_len`` the window slides and every step re-reads it (positions are absolute): that part runs the
  growing cache's path.
* **Compiled** (:func:`compile_model`): the cache-free forward and the decode step through ``torch.compile``;
  the graphs then record the compiled kernels. On the CPU it pays for generation, not for the QELM's
  forward (``docs/measurements/launch.md``).

Where recording fails (an op that reads a tensor on the host, a shape that depends on values), the call runs
eagerly with one warning naming the cause; results never change. On the CPU the same decoder runs eagerly
(no graphs), which is how the tests hold it to the growing cache's tokens.
"""

from __future__ import annotations

import contextlib
import threading
from collections import OrderedDict
from collections.abc import Generator, Iterator
from typing import Any

import torch

from .backends.cuda_graph import Replays, capturing, fixed_weights
from .errors import ConfigError
from .kv_cache import KVCache, StaticCache
from .sampling import draw, greedy, next_probs, penalized, sample_next

__all__ = ["steps", "eager", "graphs_apply", "graphed_logits", "static_reason", "Decoder", "decoder_for", "CACHE_IMPLEMENTATIONS",
           "compile_model", "compile_refusal", "compiled", "logits_function", "COMPILABLE"]

#: the backends ``torch.compile`` traces through (pure torch); any other is a boundary the compiler stops at
COMPILABLE = ("qelm.fused",)

#: ``generate(cache_implementation=...)``: None picks "static" where graphs apply, else "dynamic"
CACHE_IMPLEMENTATIONS = ("dynamic", "static")
_FEW = 3  # warm-up runs and the recorded run of a decode step write this many slots of a scratch cache


class _Kept(OrderedDict):
    """Recorded calls and decoders a model keeps: never copied with it, never pickled (graphs and device
    buffers of one process)."""

    def __deepcopy__(self, memo: dict) -> _Kept:
        return _Kept()

    def __reduce__(self):
        return (_Kept, ())


def _replays(model: Any) -> Replays:
    """The model's recorded forward calls (made on first use; not weights: never saved, never copied)."""
    pool = model.__dict__.get("_replays")
    if pool is None:
        pool = model.__dict__["_replays"] = Replays(size=4)
    return pool


def _weights_key(model: Any, versions: bool = False) -> tuple:
    """What a recorded call depends on besides its inputs: where every weight lives (a graph reads them by
    address, so ``.to()`` or a replaced parameter needs a new one; a recorded forward reads their values anew),
    with ``versions`` their versions too (a recorded decode step applies matrices built from their values when
    it was recorded, :func:`fixed_weights`; an optimizer step or ``load_state_dict`` changes them in place and
    bumps the version), and the backend that runs the circuits."""
    backend = model.backend
    return (tuple(t.data_ptr() for t in model.parameters()), tuple(t.data_ptr() for t in model.buffers()),
            tuple(t._version for t in model.parameters()) if versions else None,
            None if backend is None else (id(backend), backend.describe()))


def _modes(device: torch.device) -> tuple:
    """The torch modes a recording holds to: inference mode (its tensors) and autocast (its dtypes)."""
    kind = device.type
    autocast = torch.is_autocast_enabled(kind)
    return torch.is_inference_mode_enabled(), autocast, torch.get_autocast_dtype(kind) if autocast else None


_local = threading.local()


def _records(device: torch.device) -> bool:
    """Whether graphs are recorded on ``device``: CUDA only (tests stand a recorder in on the CPU)."""
    return device.type == "cuda"


@contextlib.contextmanager
def eager() -> Iterator[None]:
    """Within the block, forwards run eagerly: calls whose shapes change every time (generation without a
    cache reads a window one token longer each step) would record a graph per call and replay none."""
    held = getattr(_local, "eager", False)
    _local.eager = True
    try:
        yield
    finally:
        _local.eager = held


def graphs_apply(model: Any, device: torch.device) -> bool:
    """Whether a no-grad call of ``model`` on ``device`` may replay a recorded graph: ``model.cuda_graphs``
    is on, the device is CUDA, no gradient is wanted, nothing is being recorded or compiled already, no
    attention map is kept, the circuits run on a pure-torch backend (``traceable``) nobody observes, and no
    :func:`eager` block is open."""
    if torch.compiler.is_compiling():  # the compiler traces the eager call (first: it reads no thread state)
        return False
    if not getattr(model, "cuda_graphs", False) or not _records(device) or torch.is_grad_enabled():
        return False
    if getattr(_local, "eager", False) or capturing(device):
        return False
    backend = model.backend
    if backend is not None and (not backend.traceable or backend.__dict__.get("_observers")):
        return False
    return not any(getattr(m, "keep_attention", False) for m in model.modules())


def graphed_logits(model: Any, idx: torch.Tensor) -> torch.Tensor:
    """``model._logits(idx)`` (B, T, vocab) from the graph recorded for this shape (recorded on first use; the
    compiled function where :func:`compile_model` made one, so the graph replays its fused kernels)."""
    key = ("forward", tuple(idx.shape), idx.device, _modes(idx.device), compiled(model) is not None,
           _weights_key(model))
    run = logits_function(model)
    return _replays(model)(key, lambda i: run(i, None), idx)


def logits_function(model: Any) -> Any:
    """What a cache-free forward runs: ``model._logits``, or its compiled form after :func:`compile_model`."""
    return compiled(model) or model._logits


def compile_model(model: Any, **options: Any) -> Any:
    """``torch.compile`` (``options`` are its) what ``model`` computes: its cache-free forward (inference and
    training) and the decode step its ``generate`` runs on a static cache; on CUDA the recorded graphs then
    replay the compiled kernels. Calls with a growing cache (a prompt's pass) stay eager: their shapes change
    every call. Refused for circuits on a backend the compiler cannot trace (it would stop at every circuit
    call and compile only the glue between them).

    Returns:
        The model (compiled in place).

    Raises:
        ConfigError: the model's backend is not one of :data:`COMPILABLE`, or the model is on CUDA
            (:data:`CUDA_COMPILE_REFUSAL`: there the recorded graphs alone measured faster).
    """
    backend = model.backend
    if backend is not None and not backend.traceable:
        raise ConfigError(compile_refusal(backend.name))
    if any(p.is_cuda for p in model.parameters()):
        raise ConfigError(CUDA_COMPILE_REFUSAL)
    model.__dict__["_compiled"] = _Kept(logits=torch.compile(model._logits, **options), options=options)
    return model


def compiled(model: Any) -> Any:
    """The compiled forward :func:`compile_model` made, or None (its decode step is compiled alike)."""
    held = model.__dict__.get("_compiled")
    return held.get("logits") if held else None


def _compile_options(model: Any) -> dict | None:
    """The options :func:`compile_model` was given (None: not compiled)."""
    held = model.__dict__.get("_compiled")
    return dict(held["options"]) if held else None


#: why :func:`compile_model` refuses a model on CUDA, from one H200 (``benchmarks/gpu/launch_h200.sh``,
#: ``benchmarks/results/launch-compile*-h200.json``): the recorded graphs alone were faster (a QELM's decode
#: step 0.29 ms graphed against 3.9 ms compiled and graphed; the twin's 0.12 against 0.87), and the compiled
#: QELM's forward failed to trace under the graphs (a symbolic shape in the circuits' wire arithmetic)
CUDA_COMPILE_REFUSAL = ("--compile is for the CPU: on CUDA qelm replays recorded CUDA graphs, which measured faster "
                        "than compiled ones (decode step 0.29 ms against 3.9 ms on an H200); run without --compile "
                        "(or compile on the CPU, then move the model)")


def compile_refusal(backend: str) -> str:
    """The one line that refuses ``--compile`` for circuits on ``backend``, naming the backends that compile."""
    return (f"--compile needs circuits torch.compile can trace: backend {' or '.join(COMPILABLE)} (or a model "
            f"without circuits), not {backend!r}")


def static_reason(config: Any) -> str | None:
    """Why a static cache cannot hold ``config``'s attention (None: it can). The swap test pairs each new
    token with a growing set of earlier ones, and the adaptive threshold's statistics run over the visible
    row: both have shapes that change per token."""
    if config.attention == "fidelity" and config.fidelity_method == "swap_test":
        return "fidelity attention with fidelity_method='swap_test'"
    if config.attention == "fidelity" and config.adaptive_threshold:
        return "fidelity attention with adaptive_threshold"
    return None


def check_cache_implementation(value: Any, config: Any) -> None:
    """Raise ``ConfigError`` for a ``cache_implementation`` that is not one, or "static" for attention a
    static cache cannot hold."""
    if value is not None and value not in CACHE_IMPLEMENTATIONS:
        raise ConfigError(f"cache_implementation={value!r} is invalid: use 'static', 'dynamic' or None (static "
                          f"where CUDA graphs apply)")
    reason = static_reason(config) if value == "static" else None
    if reason:
        raise ConfigError(f"cache_implementation='static' cannot hold {reason}: use cache_implementation='dynamic'")


class Decoder:
    """One decode step of ``model`` for a batch of ``batch`` sequences on a :class:`StaticCache`, replayed
    from a recorded CUDA graph where ``graphs`` (else run eagerly, same tokens).

    Args:
        model: a QELM or ClassicalLM (its ``_logits(idx, cache)``).
        batch: sequences.
        device: where they are.
        sampling: ``temperature``, ``top_k``, ``top_p``, ``min_p``, ``repetition_penalty``, ``never`` (as
            :func:`qelm.sampling.sample_next` takes them).
        graphs: record the step in a CUDA graph and replay it.
        compiled: run the step through ``torch.compile`` with these options (fewer, fused kernels; recorded
            as well on CUDA); None: eager.
    """

    def __init__(self, model: Any, batch: int, device: torch.device, sampling: dict, graphs: bool,
                 compiled: dict | None = None) -> None:
        self.model, self.graphs = model, graphs
        self.sampling = {k: v for k, v in sampling.items() if k not in ("never", "repetition_penalty")}
        self.penalty = sampling.get("repetition_penalty", 1.0)
        never, V = tuple(sampling.get("never", ())), model.config.vocab_size
        self.banned = torch.tensor(never, device=device) if never else None
        self.cache = StaticCache(len(model.blocks), model.config.context_len, device)
        self.token = torch.zeros(batch, 1, dtype=torch.long, device=device)  # (B, 1): the last token drawn
        self.present = torch.zeros(batch, V, dtype=torch.bool, device=device) if self.penalty != 1.0 else None
        # the draw's noise, of the probabilities' dtype (float32): what torch.multinomial would draw
        self.noise = (torch.empty(batch, V, dtype=torch.float32, device=device)
                      if self.sampling["temperature"] > 0 else None)
        self.length = 0  # the tokens the cache holds, on the host: no read of ``cache.position``
        self._run = torch.compile(self._step, **compiled) if compiled is not None else self._step
        self._replay: Any = None  # the recorded step (record)
        self._fixed: dict = {}  # what the recorded step derived from the weights (fixed_weights), kept with it

    def load(self, blocks: list[dict], length: int, seen: torch.Tensor, token: torch.Tensor) -> None:
        """Start from a dynamic cache (``blocks``, ``length``), the tokens ``seen`` so far (B, T) (for the
        repetition penalty) and the last token drawn ``token`` (B, 1), which the next step reads."""
        self.cache.load(blocks, length, self.model.embedding.table())  # the weights are fixed from here on
        self.length = length
        self.token.copy_(token)
        if self.present is not None:
            self.present.zero_()
            self.present.scatter_(1, seen, True)

    def _step(self) -> torch.Tensor:
        """The recorded work: the last token through the model at ``cache.position``, the next one drawn."""
        logits = self.model._logits(self.token, self.cache)  # (B, 1, V); the cache advanced by one
        scores = penalized(logits[:, -1], self.present, self.penalty) if self.present is not None \
            else logits[:, -1].float()
        probs = next_probs(scores, banned=self.banned, **self.sampling)
        if probs is None:
            nxt = greedy(scores, self.banned)  # (B, 1)
        else:
            assert self.noise is not None  # drawn by step() before every sampled step
            nxt = draw(probs, self.noise)  # (B, 1)
        self.token.copy_(nxt)
        if self.present is not None:
            self.present.scatter_(1, nxt, True)
        return self.token

    def ready(self) -> bool:
        """Whether one more step fits in the window (else the caller re-reads it: the window slides)."""
        return self.length < self.cache.context_len

    def step(self, generator: torch.Generator | None) -> torch.Tensor:
        """Draw the next tokens (B, 1): the sampling noise from ``generator`` first (as ``torch.multinomial``
        would draw it), then the step, replayed where recorded."""
        if self.noise is not None:
            self.noise.exponential_(1, generator=generator)
        out = self._replay() if self._replay is not None else self._run()
        self.length += 1
        return out.clone()

    def record(self) -> None:
        """Record the step now, on a scratch state (its warm-up runs write cache slots and draw tokens), so
        that :meth:`load` then starts the real generation from the prompt's state."""
        if not self.graphs or self._replay is not None or self.cache.context_len < _FEW:
            return  # eager, already recorded, or too short a window for the warm-up runs (then eager)
        self.cache.position.zero_()
        if self.noise is not None:
            self.noise.fill_(1.0)
        with fixed_weights(self._fixed):  # the circuits' matrices built once, in the warm-up: the step applies them
            self._replay = _replays(self.model).attempt(self._run, ())  # None: failed, warned once, eager


def decoder_for(model: Any, batch: int, device: torch.device, sampling: dict) -> Decoder:
    """A :class:`Decoder` of ``model`` for these settings: the one kept from an earlier call where the
    settings and weights match (its graph is reused: recording costs more than a short generation), else a
    new one, recorded where graphs apply. Two are kept."""
    graphs, options = graphs_apply(model, device), _compile_options(model)
    key = (batch, device, tuple(sorted((k, v if not isinstance(v, list) else tuple(v)) for k, v in sampling.items())),
           graphs, repr(options), _modes(device), _weights_key(model, versions=True))
    kept = model.__dict__.setdefault("_decoders", _Kept())
    decoder = kept.get(key)
    if decoder is None:
        decoder = Decoder(model, batch, device, sampling, graphs, options)
        kept[key] = decoder
        while len(kept) > 2:
            kept.popitem(last=False)
    kept.move_to_end(key)
    return decoder


@torch.no_grad()
def steps(model: Any, idx: torch.Tensor, max_new_tokens: int, sampling: dict, generator: torch.Generator | None,
          use_cache: bool, cache_implementation: str | None = None) -> Generator[torch.Tensor, None, None]:
    """The one sampling loop (``QELM.stream`` and ``generate`` run it): yields each step's new tokens (B, 1).

    The prompt's pass runs on the growing :class:`KVCache`; then, where the cache is static, a
    :class:`Decoder` takes over its keys and values and draws each token by one (replayed) step while the
    window has room; once the sequence reaches ``context_len`` the window slides and every step re-reads it
    (positions are absolute), as without the cache. ``cache_implementation`` None: static where a decode
    step is recorded (CUDA graphs) or compiled (fixed shapes: a growing cache would recompile every step);
    dynamic elsewhere, where it costs less (no masked slots)."""
    C = model.config.context_len
    static = use_cache and (cache_implementation == "static" or (
        cache_implementation is None and not static_reason(model.config)
        and (graphs_apply(model, idx.device) or compiled(model) is not None)))
    cache = None
    decoder = None  # static: the decode steps after the prompt, while the window has room
    for step in range(max_new_tokens):  # autoregressive: each step depends on the previous token
        if decoder is not None and decoder.ready():
            nxt = decoder.step(generator)  # (B, 1), replayed where recorded
        else:
            if not use_cache:
                with eager():  # a window one token longer each step: a recording per call, none replayed
                    logits, _ = model(idx[:, -C:])
            elif decoder is not None or cache is None or cache.length >= C:  # start, or the window slid
                cache = KVCache(len(model.blocks))
                logits, _ = model(idx[:, -C:], cache=cache)
            else:
                logits, _ = model(idx[:, -1:], cache=cache)
            nxt = sample_next(logits[:, -1, :], idx, generator=generator, **sampling)  # (B, 1)
            if static and decoder is None and cache is not None and cache.length < C and step + 1 < max_new_tokens:
                decoder = decoder_for(model, idx.shape[0], idx.device, sampling)
                decoder.load(cache.blocks, cache.length, idx, nxt)  # allocates the buffers
                decoder.record()  # on a scratch state, where graphs apply
                decoder.load(cache.blocks, cache.length, torch.cat([idx, nxt], dim=1), nxt)
                cache = None
        idx = torch.cat([idx, nxt], dim=1)
        yield nxt
