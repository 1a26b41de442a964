"""Sampling the next token, as Hugging Face's ``generate`` does: the repetition penalty, temperature, top-k,
top-p and min-p (:func:`sample_next`), and the check of those settings (:func:`check_sampling`). The one
sampling loop that uses them is :func:`qelm.decode.steps` (``QELM.stream`` and ``generate`` run it). Its parts (:func:`penalized`,
:func:`next_probs`, :func:`greedy`, :func:`draw`) are device operations only, so the recorded decode step of
:mod:`qelm.decode` samples on the GPU with them and draws the same tokens as :func:`sample_next`.
"""

from __future__ import annotations

import math

import torch

from .errors import ConfigError

__all__ = ["sample_next", "check_sampling", "penalized", "greedy", "next_probs", "draw"]


def sample_next(logits: torch.Tensor, seen: torch.Tensor, *, temperature: float = 1.0, top_k: int | None = None,
                top_p: float | None = None, min_p: float | None = None, repetition_penalty: float = 1.0,
                generator: torch.Generator | None = None, never: tuple[int, ...] = ()) -> torch.Tensor:
    """Draw the next token (B, 1) from ``logits`` (B, V), in Hugging Face's order: the repetition penalty
    on every token of ``seen`` (B, T) (a positive logit divided by it, a negative one multiplied), then
    temperature, top-k (the k most likely), top-p (the smallest set whose probability reaches p; the most
    likely token always stays), min-p (tokens at least ``min_p`` times as likely as the most likely).
    ``temperature=0`` is greedy: the most likely token after the repetition penalty (``do_sample=False``)."""
    logits = logits.float()
    if repetition_penalty != 1.0:
        score = logits.gather(1, seen)  # (B, T)
        score = torch.where(score > 0, score / repetition_penalty, score * repetition_penalty)
        logits = logits.scatter(1, seen, score)
    banned = torch.tensor(never, device=logits.device) if never else None
    probs = next_probs(logits, temperature, top_k, top_p, min_p, banned)
    if probs is None:  # greedy
        return greedy(logits, banned)
    return torch.multinomial(probs, 1, generator=generator)


def penalized(logits: torch.Tensor, present: torch.Tensor, repetition_penalty: float) -> torch.Tensor:
    """The repetition penalty of :func:`sample_next` from a mask ``present`` (B, V) of the tokens seen
    instead of their ids: the same values, element by element, with shapes that never change (a recorded
    decode step keeps the mask; a sequence of ids grows every step)."""
    logits = logits.float()
    if repetition_penalty == 1.0:
        return logits
    return torch.where(present, torch.where(logits > 0, logits / repetition_penalty, logits * repetition_penalty),
                       logits)


def greedy(logits: torch.Tensor, banned: torch.Tensor | None = None) -> torch.Tensor:
    """The most likely token (B, 1) that is not ``banned``; top-k, top-p and min-p all keep it."""
    if banned is not None:
        logits = logits.index_fill(-1, banned, float("-inf"))
    return logits.argmax(dim=-1, keepdim=True)  # (B, 1)


def next_probs(logits: torch.Tensor, temperature: float, top_k: int | None, top_p: float | None,
               min_p: float | None, banned: torch.Tensor | None) -> torch.Tensor | None:
    """The distribution (B, V) :func:`sample_next` draws from, after temperature, top-k, top-p, min-p and
    the ``banned`` ids (a tensor of token ids, or None); None for greedy decoding (``temperature=0``). Only
    device operations, no host synchronisation, so a recorded CUDA graph can hold it."""
    if temperature == 0:
        return None
    scaled = logits / temperature
    # a temperature so small the logits overflow (or it is 0 in float32): shifted so the largest drawable one
    # is 0, in float64: the same distribution (near greedy). Chosen on the device (no host sync)
    base = logits.double()
    if banned is not None:
        base = base.index_fill(-1, banned, float("-inf"))
    shifted = ((base - base.max(dim=-1, keepdim=True).values) / temperature).float()
    logits = torch.where(torch.isfinite(scaled).all(), scaled, shifted)
    if top_k is not None:
        kth = torch.topk(logits, min(top_k, logits.shape[-1])).values[:, -1:]  # (B, 1); a slice, no index tensor
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p is not None and top_p < 1.0:
        ordered, order = logits.sort(dim=-1, descending=True)  # (B, V)
        probs = ordered.softmax(dim=-1)
        beyond = probs.cumsum(dim=-1) - probs > top_p  # the mass before this token already reaches p
        logits = logits.masked_fill(beyond.scatter(1, order, beyond), float("-inf"))
    if min_p is not None and min_p > 0.0:
        probs = logits.softmax(dim=-1)
        logits = logits.masked_fill(probs < min_p * probs.max(dim=-1, keepdim=True).values, float("-inf"))
    probs = logits.softmax(dim=-1)
    if banned is not None:  # tokens that are not text (the unknown token) are never drawn
        probs = probs.index_fill(-1, banned, 0.0)
        # all the mass on banned tokens (a near-greedy temperature): the rest, renormalised; else uniform
        rest = logits.index_fill(-1, banned, float("-inf")).softmax(dim=-1)
        usable = torch.isfinite(rest).all(-1, keepdim=True) & (rest.sum(-1, keepdim=True) > 0)
        rest = torch.where(usable, rest, torch.ones_like(probs).index_fill(-1, banned, 0.0))
        probs = torch.where(probs.sum(-1, keepdim=True) > 0, probs, rest)
    return probs


def draw(probs: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
    """``torch.multinomial(probs, 1, generator=g)`` (B, 1) given ``noise``, drawn beforehand as
    ``torch.empty_like(probs).exponential_(1, generator=g)``: the same token, as multinomial draws one sample
    this way itself (argmax of ``probs / noise``), with the same use of the generator; but no host sync (its
    checks of ``probs`` read them on the host), so it can be recorded in a CUDA graph."""
    return (probs / noise).argmax(dim=-1, keepdim=True)


def check_sampling(max_new_tokens: int, temperature: float = 1.0, top_k: int | None = None, *,
                   top_p: float | None = None, min_p: float | None = None, repetition_penalty: float = 1.0) -> None:
    """Raise ``ValueError`` naming a sampling setting that cannot be meant: a negative or non-integer
    token count, a temperature that is not a finite number >= 0 (0 is greedy, infinity would be uniform
    noise), a ``top_k`` below 1, a ``top_p`` outside (0, 1], a ``min_p`` outside [0, 1], a
    ``repetition_penalty`` that is not a finite number > 0 (1 is none)."""
    def number(value) -> bool:
        return not isinstance(value, bool) and isinstance(value, (int, float)) and math.isfinite(value)

    if isinstance(max_new_tokens, bool) or not isinstance(max_new_tokens, int) or max_new_tokens < 0:
        raise ConfigError(f"max_new_tokens={max_new_tokens!r} is invalid: use an integer >= 0")
    if not number(temperature) or temperature < 0:
        raise ConfigError(f"temperature={temperature!r} is invalid: use a finite number >= 0 (1.0 samples the model as "
                         f"trained; smaller is greedier; 0 is greedy)")
    if top_k is not None and (isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1):
        raise ConfigError(f"top_k={top_k!r} is invalid: use an integer >= 1, or leave it out")
    if top_p is not None and (not number(top_p) or not 0 < top_p <= 1):
        raise ConfigError(f"top_p={top_p!r} is invalid: use a number in (0, 1] (the probability mass sampled from; "
                         f"1 keeps every token), or leave it out")
    if min_p is not None and (not number(min_p) or not 0 <= min_p <= 1):
        raise ConfigError(f"min_p={min_p!r} is invalid: use a number in [0, 1] (tokens less likely than min_p times "
                         f"the most likely one are dropped), or leave it out")
    if not number(repetition_penalty) or repetition_penalty <= 0:
        raise ConfigError(f"repetition_penalty={repetition_penalty!r} is invalid: use a finite number > 0 (1.0 is "
                         f"none; above 1 discourages tokens already in the text)")
