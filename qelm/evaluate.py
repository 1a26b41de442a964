"""Measuring and sampling a trained model: validation loss and perplexity (:func:`evaluate`), the unigram
baseline every run is set against (:func:`unigram_baseline`), and text generation (:func:`generate_text`,
or :func:`stream_text` for the text piece by piece as it is sampled).

Validation loss is the mean cross-entropy (nats/token) over every token of a text, read in non-overlapping
windows of ``context_len`` tokens; perplexity is its exponential. The unigram baseline is a token-frequency
model fitted on the training split (add-one smoothing), scored on the same tokens.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Generator, Sequence

import torch
import torch.nn.functional as F

from .data import check_seed
from .errors import ConfigError, DataError
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
        raise DataError(f"evaluation needs at least 2 tokens, got {ids.numel()}")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ConfigError(f"batch_size={batch_size!r} is invalid: use an integer >= 1")
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
    sampled is not part of it).

    Args:
        model: the model (any of :class:`QELM`, :class:`ClassicalLM`); put in eval mode while it samples.
        tokenizer: the tokenizer of its training data.
        prompt: the text to continue.
        max_new_tokens: the most tokens to sample.
        temperature: divides the logits; lower is more conservative.
        top_k: sample only from the ``top_k`` most likely tokens (None: all).
        seed: the sampler's seed.
        top_p: nucleus sampling threshold (None: off).
        min_p: drop tokens less likely than ``min_p`` times the most likely one (None: off).
        repetition_penalty: > 1 makes tokens already in the text less likely.
        stop: strings that end the text.

    Returns:
        The sampled text, without the prompt.

    Examples:
        >>> from qelm import QELM, QELMConfig, TextDataset, generate_text
        >>> data = TextDataset.from_text("the cat sat on the mat. " * 20)
        >>> model = QELM(QELMConfig(vocab_size=data.vocab_size, d_model=8, context_len=8, n_qubits=2, circuit_layers=1))
        >>> text = generate_text(model, data.tokenizer, "the ", max_new_tokens=10, seed=0)
        >>> len(text), text == generate_text(model, data.tokenizer, "the ", max_new_tokens=10, seed=0)
        (10, True)
    """
    return "".join(stream_text(model, tokenizer, prompt, max_new_tokens=max_new_tokens, temperature=temperature,
                               top_k=top_k, seed=seed, top_p=top_p, min_p=min_p,
                               repetition_penalty=repetition_penalty, stop=stop))


def stream_text(model: QELM, tokenizer: Tokenizer, prompt: str, *, max_new_tokens: int = 200,
                temperature: float = 1.0, top_k: int | None = None, seed: int = 0, top_p: float | None = None,
                min_p: float | None = None, repetition_penalty: float = 1.0, stop: Sequence[str] = (),
                generator: torch.Generator | None = None) -> Generator[str, None, None]:
    """:func:`generate_text` piece by piece, each as soon as its tokens are sampled: a caller can print
    them as they come and keep what it has when it stops early. The pieces join to the same text.
    Every argument is checked before the first token is sampled. ``generator`` (instead of ``seed``)
    carries one random stream across calls, as a conversation does."""
    if not prompt:
        raise DataError("the prompt is empty: give at least one character to continue from")
    ids = tokenizer.encode(prompt)  # characters outside the vocabulary become the unknown token (or raise, naming them)
    return stream_ids(model, tokenizer, ids, max_new_tokens=max_new_tokens, temperature=temperature, top_k=top_k,
                      seed=seed, top_p=top_p, min_p=min_p, repetition_penalty=repetition_penalty, stop=stop,
                      generator=generator)


def stream_ids(model: QELM, tokenizer: Tokenizer, ids: list[int], *, max_new_tokens: int = 200,
               temperature: float = 1.0, top_k: int | None = None, seed: int = 0, top_p: float | None = None,
               min_p: float | None = None, repetition_penalty: float = 1.0, stop: Sequence[str] = (),
               generator: torch.Generator | None = None) -> Generator[str, None, None]:
    """:func:`stream_text` after token ids rather than text (a conversation keeps its tokens)."""
    stop = check_stop(stop)
    unk = getattr(tokenizer, "unk_id", None)
    tokens = sample_tokens(model, ids, max_new_tokens=max_new_tokens, temperature=temperature, top_k=top_k, seed=seed,
                           top_p=top_p, min_p=min_p, repetition_penalty=repetition_penalty, generator=generator,
                           never=() if unk is None else (unk,))  # the unknown token is not text: never sampled
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
            raise DataError(f"stop string {s!r} is invalid: use non-empty text")
    return stop


def _decoded(tokenizer: Tokenizer, tokens: Generator[int, None, None]) -> Generator[str, None, None]:
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


def _until_stop(pieces: Generator[str, None, None], stop: tuple[str, ...]) -> Generator[str, None, None]:
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
                  repetition_penalty: float = 1.0, generator: torch.Generator | None = None,
                  never: tuple[int, ...] = ()) -> Generator[int, None, None]:
    """The token ids :meth:`QELM.generate` samples after ``ids`` (one sequence) with a generator seeded by
    ``seed`` (or ``generator``), yielded one by one as they are drawn, with the model in eval mode
    meanwhile: :meth:`QELM.stream`, the one sampling loop. Every argument is checked here."""
    model = getattr(model, "module", model)
    device = next(model.parameters()).device
    if generator is None:
        generator = torch.Generator(device=device).manual_seed(check_seed(seed))
    idx = torch.tensor([ids], dtype=torch.long, device=device)  # (1, T0)
    steps = model.stream(idx, max_new_tokens, temperature=temperature, top_k=top_k, top_p=top_p, min_p=min_p,
                         repetition_penalty=repetition_penalty, generator=generator, never=never)  # checks every argument
    return _in_eval_mode(model, steps)


def _in_eval_mode(model: QELM, steps: Generator[torch.Tensor, None, None]) -> Generator[int, None, None]:
    was_training = model.training
    model.eval()
    try:
        for nxt in steps:  # (1, 1)
            yield int(nxt)
    finally:
        steps.close()
        model.train(was_training)



# --- metrics users compare models by ----------------------------------------------------------------------
# Bits per character (per byte for BPE) put models of different tokenizers on one scale; top-k accuracy
# says how often the next token is the model's first (or among its first k) guesses; on text the model
# samples, distinct-n and the repetition rate say whether it varies its words or loops. ``qelm eval`` and
# ``qelm sweep`` report all of them.
__all__ += ["bits_per_unit", "next_token_accuracy", "distinct_n", "repetition_rate", "text_diversity",
            "sample_diversity", "REPETITION_N", "MAX_SAMPLE_TOKENS"]

REPETITION_N = 4  # the repetition rate counts repeated word 4-grams
#: the longest sample the diversity metrics take: far more than they need, and minutes of sampling already
#: (an unbounded count ran forever, silently, holding every token in memory)
MAX_SAMPLE_TOKENS = 100_000


def bits_per_unit(loss: float, token_ids, tokenizer: Tokenizer) -> tuple[float, str]:
    """``(bits, unit)``: the cross-entropy ``loss`` (nats per scored token, as :func:`evaluate` gives it over
    ``token_ids[1:]``) as bits per character of the text those tokens decode to (char tokenizer), or per
    UTF-8 byte (BPE, whose tokens are byte sequences). Lower is better; comparable across tokenizers."""
    ids = torch.as_tensor(token_ids).reshape(-1).tolist()
    if len(ids) < 2:
        raise DataError(f"bits per unit need at least 2 tokens, got {len(ids)}")
    text = tokenizer.decode(ids[1:])  # the scored tokens (the first one only conditions)
    unit = "byte" if tokenizer.kind == "bpe" else "character"
    units = len(text.encode("utf-8")) if unit == "byte" else len(text)
    return loss * (len(ids) - 1) / (math.log(2) * units), unit


def _windows(ids: torch.Tensor, context_len: int, batch_size: int) -> list[torch.Tensor]:
    """Batches of non-overlapping ``(b, t + 1)`` windows covering ``ids`` as :func:`evaluate` reads them."""
    n_full = (ids.numel() - 1) // context_len
    chunks = list(ids[: n_full * context_len + 1].unfold(0, context_len + 1, context_len).split(batch_size)) if n_full else []
    rest = (ids.numel() - 1) - n_full * context_len
    if rest:
        chunks.append(ids[-(rest + 1):].unsqueeze(0))  # (1, rest+1)
    return chunks


@torch.no_grad()
def next_token_accuracy(model: torch.nn.Module, token_ids: torch.Tensor, *, batch_size: int, context_len: int,
                        k: int = 5) -> dict[str, float]:
    """Top-1 and top-``k`` next-token accuracy over every token of ``token_ids`` but the first, read in the
    windows :func:`evaluate` reads: the share of tokens that are the model's most likely next token
    (``top1_accuracy``), or among its ``k`` most likely (``top5_accuracy`` for the default k = 5)."""
    model = getattr(model, "module", model)
    ids = torch.as_tensor(token_ids, dtype=torch.long).reshape(-1)
    if ids.numel() < 2:
        raise DataError(f"accuracy needs at least 2 tokens, got {ids.numel()}")
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    top1 = topk = 0
    try:
        for chunk in _windows(ids, context_len, batch_size):
            chunk = chunk.to(device)
            logits, _ = model(chunk[:, :-1])  # (b, t, V)
            targets = chunk[:, 1:].unsqueeze(-1)  # (b, t, 1)
            best = logits.topk(min(k, logits.shape[-1]), dim=-1).indices  # (b, t, k)
            top1 += int((best[..., :1] == targets).sum())
            topk += int((best == targets).any(dim=-1).sum())
    finally:
        model.train(was_training)
    count = ids.numel() - 1
    return {"top1_accuracy": top1 / count, f"top{k}_accuracy": topk / count}


def distinct_n(words: list[str], n: int) -> float | None:
    """Distinct-n: distinct word n-grams over all word n-grams of ``words`` (1.0: no n-gram repeats);
    ``None`` when there are fewer than ``n`` words."""
    grams = [tuple(words[i:i + n]) for i in range(len(words) - n + 1)]
    return len(set(grams)) / len(grams) if grams else None


def repetition_rate(words: list[str], n: int = REPETITION_N) -> float | None:
    """The share of word ``n``-grams of ``words`` that already occurred earlier in them (0: none repeats;
    a sampler stuck in a loop approaches 1); ``None`` when there are fewer than ``n`` words."""
    d = distinct_n(words, n)
    return None if d is None else 1.0 - d


def text_diversity(text: str) -> dict[str, float | int | None]:
    """Distinct-1, distinct-2 and the repetition rate of ``text``'s whitespace-separated words, and how
    many words there were. Words, not tokens, so models of any tokenizer compare on the same footing."""
    words = text.split()
    return {"distinct_1": distinct_n(words, 1), "distinct_2": distinct_n(words, 2),
            "repetition_rate": repetition_rate(words), "words": len(words)}


@torch.no_grad()
def sample_diversity(model: QELM, tokenizer: Tokenizer, prompt_ids, *, max_new_tokens: int,
                     seed: int = 0) -> dict[str, float | int | str | None]:
    """Sample ``max_new_tokens`` tokens after ``prompt_ids`` (temperature 1, seeded) and measure the new
    text with :func:`text_diversity`; the text is returned under ``"text"``. At most
    :data:`MAX_SAMPLE_TOKENS` tokens (``ConfigError`` beyond)."""
    if not isinstance(max_new_tokens, int) or max_new_tokens > MAX_SAMPLE_TOKENS:
        raise ConfigError(f"max_new_tokens={max_new_tokens!r} is too many to sample for the diversity metrics: use "
                          f"at most {MAX_SAMPLE_TOKENS:,}")
    model = getattr(model, "module", model)
    device = next(model.parameters()).device
    idx = torch.as_tensor(prompt_ids, dtype=torch.long).reshape(1, -1).to(device)  # (1, T0)
    generator = torch.Generator(device=device).manual_seed(seed)
    was_training = model.training
    model.eval()
    try:
        out = model.generate(idx, max_new_tokens, generator=generator)
    finally:
        model.train(was_training)
    text = tokenizer.decode(out[0, idx.shape[1]:].tolist())
    return {**text_diversity(text), "text": text}

