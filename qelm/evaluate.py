"""Measuring and sampling a trained model: validation loss and perplexity (:func:`evaluate`), the unigram
baseline every run is set against (:func:`unigram_baseline`), and text generation (:func:`generate_text`,
or :func:`stream_text` for the text piece by piece as it is sampled).

Validation loss is the mean cross-entropy (nats/token) over every token of a text, read in non-overlapping
windows of ``context_len`` tokens; perplexity is its exponential. The unigram baseline is a token-frequency
model fitted on the training split (add-one smoothing), scored on the same tokens. ``qelm.evaluate(...)``
calls :func:`evaluate`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator

import torch
import torch.nn.functional as F

from ._compat import make_callable
from .data import check_seed
from .model import QELM, KVCache, check_sampling
from .tokenizer import Tokenizer

__all__ = ["evaluate", "unigram_baseline", "generate_text", "stream_text", "sample_tokens"]


@torch.no_grad()
def evaluate(model: torch.nn.Module, token_ids: torch.Tensor, *, batch_size: int, context_len: int,
             progress: Callable[[int, int], None] | None = None) -> dict[str, float]:
    """Mean next-token cross-entropy of ``model`` over every token of ``token_ids`` (1-D), read in
    non-overlapping windows of ``context_len`` (the last, shorter window takes the remainder), so each
    token but the first is predicted exactly once. Returns ``loss`` (nats/token), ``perplexity``
    (``exp(loss)``) and ``tokens`` (how many were scored). Deterministic; uses no RNG.
    ``progress(tokens scored, tokens in all)`` is called after each batch of windows."""
    model = getattr(model, "module", model)
    ids = torch.as_tensor(token_ids, dtype=torch.long).reshape(-1)
    if ids.numel() < 2:
        raise ValueError(f"evaluation needs at least 2 tokens, got {ids.numel()}")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size={batch_size!r} is invalid: use an integer >= 1")
    device = next(model.parameters()).device
    n_full = (ids.numel() - 1) // context_len
    full = ids[: n_full * context_len + 1]
    # (W, T+1) windows sharing their boundary token: window w covers tokens w*T .. (w+1)*T
    windows = full.unfold(0, context_len + 1, context_len) if n_full else ids.new_empty(0, context_len + 1)
    chunks = list(windows.split(min(batch_size, n_full))) if n_full else []  # (a batch beyond the text is the text)
    rest = (ids.numel() - 1) - n_full * context_len
    if rest:
        chunks.append(ids[-(rest + 1):].unsqueeze(0))  # (1, rest+1)
    was_training = model.training
    model.eval()
    total = torch.zeros((), dtype=torch.float64)
    scored = 0
    try:
        for chunk in chunks:  # batches of windows, not tokens
            chunk = chunk.to(device)
            logits, _ = model(chunk[:, :-1])  # (b, t, V)
            loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), chunk[:, 1:].reshape(-1), reduction="sum")
            total += loss.double().cpu()
            scored += chunk[:, 1:].numel()
            if progress is not None:
                progress(scored, ids.numel() - 1)
    finally:
        model.train(was_training)
    count = ids.numel() - 1
    mean = float(total) / count
    return {"loss": mean, "perplexity": _perplexity(mean), "tokens": count}


def unigram_baseline(train_ids: torch.Tensor, val_ids: torch.Tensor, vocab_size: int) -> dict[str, float]:
    """The unigram model (token frequencies of ``train_ids``, add-one smoothed) scored like
    :func:`evaluate`: mean cross-entropy over ``val_ids[1:]``, its perplexity and the token count."""
    counts = torch.bincount(torch.as_tensor(train_ids).reshape(-1), minlength=vocab_size).double() + 1.0  # (V,)
    logp = counts.log() - counts.sum().log()
    targets = torch.as_tensor(val_ids).reshape(-1)[1:]
    mean = float(-logp[targets].mean())
    return {"loss": mean, "perplexity": _perplexity(mean), "tokens": int(targets.numel())}


def _perplexity(loss: float) -> float:
    """``exp(loss)``, held at ``exp(700)`` (about 1e304) where a diverged model's loss would overflow it."""
    return math.exp(min(loss, 700.0))


def generate_text(model: QELM, tokenizer: Tokenizer, prompt: str, *, max_new_tokens: int = 200,
                  temperature: float = 1.0, top_k: int | None = None, seed: int = 0) -> str:
    """Sample a continuation of ``prompt`` (the new text only). The same seed gives the same text."""
    return "".join(stream_text(model, tokenizer, prompt, max_new_tokens=max_new_tokens, temperature=temperature,
                               top_k=top_k, seed=seed))


def stream_text(model: QELM, tokenizer: Tokenizer, prompt: str, *, max_new_tokens: int = 200,
                temperature: float = 1.0, top_k: int | None = None, seed: int = 0) -> Iterator[str]:
    """:func:`generate_text` piece by piece, each as soon as its tokens are sampled: a caller can print
    them as they come and keep what it has when it stops early. The pieces join to the same text.
    Every argument is checked before the first token is sampled."""
    if not prompt:
        raise ValueError("the prompt is empty: give at least one character to continue from")
    check_sampling(max_new_tokens, temperature, top_k)
    check_seed(seed)
    ids = tokenizer.encode(prompt)  # raises, naming characters outside the vocabulary
    return _decoded(tokenizer, sample_tokens(model, ids, max_new_tokens=max_new_tokens, temperature=temperature,
                                             top_k=top_k, seed=seed))


def _decoded(tokenizer: Tokenizer, tokens: Iterator[int]) -> Iterator[str]:
    """Text of ``tokens`` as it completes: a byte-level BPE token can hold part of a character, so tokens
    wait until they decode to whole characters (or eight of them have waited)."""
    waiting: list[int] = []
    for token in tokens:
        waiting.append(token)
        text = tokenizer.decode(waiting)
        if not text.endswith("\ufffd") or len(waiting) >= 8:
            waiting.clear()
            yield text
    if waiting:
        yield tokenizer.decode(waiting)


@torch.no_grad()
def sample_tokens(model: QELM, ids: list[int], *, max_new_tokens: int, temperature: float = 1.0,
                  top_k: int | None = None, seed: int = 0) -> Iterator[int]:
    """The token ids :meth:`QELM.generate` samples after ``ids`` (one sequence) with a generator seeded
    by ``seed``, yielded one by one as they are drawn; the same ids, by the same steps (KV cache, sliding
    window)."""
    check_sampling(max_new_tokens, temperature, top_k)
    model = getattr(model, "module", model)
    device = next(model.parameters()).device
    generator = torch.Generator(device=device).manual_seed(check_seed(seed))
    C = model.config.context_len
    idx = torch.tensor([ids], dtype=torch.long, device=device)  # (1, T0)
    was_training = model.training
    model.eval()
    try:
        cache = None
        for _ in range(max_new_tokens):
            if cache is None or cache.length >= C:  # start, or the window slid: read the whole window
                cache = KVCache(len(model.blocks))
                logits, _ = model(idx[:, -C:], cache=cache)
            else:
                logits, _ = model(idx[:, -1:], cache=cache)
            logits = logits[:, -1, :] / max(temperature, 1e-8)  # as QELM.generate
            if top_k is not None:
                kth = torch.topk(logits, min(top_k, logits.shape[-1])).values[:, [-1]]
                logits = logits.masked_fill(logits < kth, float("-inf"))
            nxt = torch.multinomial(logits.softmax(dim=-1), 1, generator=generator)  # (1, 1)
            idx = torch.cat([idx, nxt], dim=1)
            yield int(nxt)
    finally:
        model.train(was_training)


make_callable(__name__)
