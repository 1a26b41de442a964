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
from collections.abc import Callable, Iterator, Sequence

import torch
import torch.nn.functional as F

from ._compat import make_callable
from .data import check_seed
from .model import QELM
from .tokenizer import Tokenizer

__all__ = ["evaluate", "unigram_baseline", "generate_text", "stream_text", "stream_ids", "sample_tokens", "check_stop"]


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
                  temperature: float = 1.0, top_k: int | None = None, seed: int = 0, top_p: float | None = None,
                  min_p: float | None = None, repetition_penalty: float = 1.0, stop: Sequence[str] = ()) -> str:
    """Sample a continuation of ``prompt`` (the new text only). The same seed gives the same text. The
    sampling options are :meth:`QELM.generate`'s; ``stop``: strings that end the text (the first one
    sampled is not part of it)."""
    return "".join(stream_text(model, tokenizer, prompt, max_new_tokens=max_new_tokens, temperature=temperature,
                               top_k=top_k, seed=seed, top_p=top_p, min_p=min_p,
                               repetition_penalty=repetition_penalty, stop=stop))


def stream_text(model: QELM, tokenizer: Tokenizer, prompt: str, *, max_new_tokens: int = 200,
                temperature: float = 1.0, top_k: int | None = None, seed: int = 0, top_p: float | None = None,
                min_p: float | None = None, repetition_penalty: float = 1.0, stop: Sequence[str] = (),
                generator: torch.Generator | None = None) -> Iterator[str]:
    """:func:`generate_text` piece by piece, each as soon as its tokens are sampled: a caller can print
    them as they come and keep what it has when it stops early. The pieces join to the same text.
    Every argument is checked before the first token is sampled. ``generator`` (instead of ``seed``)
    carries one random stream across calls, as a conversation does."""
    if not prompt:
        raise ValueError("the prompt is empty: give at least one character to continue from")
    ids = tokenizer.encode(prompt)  # characters outside the vocabulary become the unknown token (or raise, naming them)
    return stream_ids(model, tokenizer, ids, max_new_tokens=max_new_tokens, temperature=temperature, top_k=top_k,
                      seed=seed, top_p=top_p, min_p=min_p, repetition_penalty=repetition_penalty, stop=stop,
                      generator=generator)


def stream_ids(model: QELM, tokenizer: Tokenizer, ids: list[int], *, max_new_tokens: int = 200,
               temperature: float = 1.0, top_k: int | None = None, seed: int = 0, top_p: float | None = None,
               min_p: float | None = None, repetition_penalty: float = 1.0, stop: Sequence[str] = (),
               generator: torch.Generator | None = None) -> Iterator[str]:
    """:func:`stream_text` after token ids rather than text (a conversation keeps its tokens)."""
    stop = check_stop(stop)
    tokens = sample_tokens(model, ids, max_new_tokens=max_new_tokens, temperature=temperature, top_k=top_k, seed=seed,
                           top_p=top_p, min_p=min_p, repetition_penalty=repetition_penalty, generator=generator)
    return _until_stop(_decoded(tokenizer, tokens), stop)


def check_stop(stop: Sequence[str] | str | None) -> tuple[str, ...]:
    """``stop`` as a tuple of non-empty strings (one string is one stop string); ``ValueError`` otherwise."""
    if stop is None:
        return ()
    if isinstance(stop, str):
        stop = (stop,)
    stop = tuple(stop)
    for s in stop:
        if not isinstance(s, str) or not s:
            raise ValueError(f"stop string {s!r} is invalid: use non-empty text")
    return stop


def _decoded(tokenizer: Tokenizer, tokens: Iterator[int]) -> Iterator[str]:
    """Text of ``tokens`` as it completes: a byte-level BPE token can hold part of a character, so tokens
    wait until they decode to whole characters (or eight of them have waited). The unknown token, which
    decodes to U+FFFD itself, never waits."""
    waiting: list[int] = []
    unk = getattr(tokenizer, "unk_id", None)
    try:
        for token in tokens:
            waiting.append(token)
            text = tokenizer.decode(waiting)
            if not text.endswith("\ufffd") or token == unk or len(waiting) >= 8:
                waiting.clear()
                yield text
        if waiting:
            yield tokenizer.decode(waiting)
    finally:
        tokens.close()  # a caller that stops early stops the sampling (and restores the model's mode) now


def _until_stop(pieces: Iterator[str], stop: tuple[str, ...]) -> Iterator[str]:
    """``pieces`` up to the first stop string (left out); text that may be the start of one waits until
    it is known not to be."""
    held = ""
    try:
        for piece in pieces:
            if not stop:
                yield piece
                continue
            held += piece
            found = [i for i in (held.find(s) for s in stop) if i >= 0]
            if found:
                if min(found):
                    yield held[:min(found)]
                return
            keep = max((k for s in stop for k in range(min(len(s) - 1, len(held)), 0, -1) if held.endswith(s[:k])),
                       default=0)
            if len(held) > keep:
                yield held[:len(held) - keep]
                held = held[len(held) - keep:]
        if held:
            yield held
    finally:
        pieces.close()


def sample_tokens(model: QELM, ids: list[int], *, max_new_tokens: int, temperature: float = 1.0,
                  top_k: int | None = None, seed: int = 0, top_p: float | None = None, min_p: float | None = None,
                  repetition_penalty: float = 1.0, generator: torch.Generator | None = None) -> Iterator[int]:
    """The token ids :meth:`QELM.generate` samples after ``ids`` (one sequence) with a generator seeded by
    ``seed`` (or ``generator``), yielded one by one as they are drawn, with the model in eval mode
    meanwhile: :meth:`QELM.stream`, the one sampling loop. Every argument is checked here."""
    model = getattr(model, "module", model)
    device = next(model.parameters()).device
    if generator is None:
        generator = torch.Generator(device=device).manual_seed(check_seed(seed))
    idx = torch.tensor([ids], dtype=torch.long, device=device)  # (1, T0)
    steps = model.stream(idx, max_new_tokens, temperature=temperature, top_k=top_k, top_p=top_p, min_p=min_p,
                         repetition_penalty=repetition_penalty, generator=generator)  # checks every argument
    return _in_eval_mode(model, steps)


def _in_eval_mode(model: QELM, steps: Iterator[torch.Tensor]) -> Iterator[int]:
    was_training = model.training
    model.eval()
    try:
        for nxt in steps:  # (1, 1)
            yield int(nxt)
    finally:
        steps.close()
        model.train(was_training)


make_callable(__name__)
