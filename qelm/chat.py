"""A conversation with a trained model: :class:`Chat` keeps what has been said, up to the model's context
length, and streams each reply as it is sampled (``qelm chat`` is its command line).

The models qelm trains read plain text, so a conversation is plain text: each message followed by a
newline, then the model's reply, which ends at a stop string (by default the end of its line) or after
``max_new_tokens``. The model reads the last ``context_len`` tokens of the conversation; older ones are
dropped as new ones come.
"""

from __future__ import annotations

from collections.abc import Generator, Sequence
from typing import Any

import torch

from .data import check_seed
from .evaluate import check_stop, stream_ids
from .model import QELM
from .sampling import check_sampling
from .tokenizer import Tokenizer

__all__ = ["Chat"]


class Chat:
    """A conversation with ``model``. ``reply(message)`` streams the reply; sampling settings are
    :meth:`QELM.generate`'s, checked here. One random stream, seeded by ``seed``, runs through the whole
    conversation: the same messages give the same replies."""

    def __init__(self, model: QELM, tokenizer: Tokenizer, *, max_new_tokens: int = 200, temperature: float = 1.0,
                 top_k: int | None = None, top_p: float | None = None, min_p: float | None = None,
                 repetition_penalty: float = 1.0, stop: Sequence[str] = ("\n",), seed: int = 0) -> None:
        check_sampling(max_new_tokens, temperature, top_k, top_p=top_p, min_p=min_p,
                       repetition_penalty=repetition_penalty)
        self.model = getattr(model, "module", model)
        self.tokenizer = tokenizer
        self.sampling: dict[str, Any] = {"max_new_tokens": max_new_tokens, "temperature": temperature, "top_k": top_k, "top_p": top_p,
                         "min_p": min_p, "repetition_penalty": repetition_penalty, "stop": check_stop(stop)}
        device = next(self.model.parameters()).device
        self.generator = torch.Generator(device=device).manual_seed(check_seed(seed))
        self.ids: list[int] = []  # the conversation's tokens, at most context_len of them

    @property
    def context_len(self) -> int:
        return self.model.config.context_len

    def reset(self) -> None:
        """Forget the conversation (the random stream goes on)."""
        self.ids = []

    def _keep(self, ids: list[int]) -> None:
        self.ids = (self.ids + ids)[-self.context_len:]

    def reply(self, message: str) -> Generator[str, None, None]:
        """Add ``message`` (and a newline) to the conversation and stream the model's reply, piece by piece.
        The reply joins the conversation as it was sampled, also when the caller stops early."""
        self._keep(self.tokenizer.encode(message + "\n"))
        pieces = stream_ids(self.model, self.tokenizer, self.ids, **self.sampling, generator=self.generator)
        said: list[str] = []
        try:
            for piece in pieces:
                said.append(piece)
                yield piece
        finally:
            pieces.close()
            self._keep(self.tokenizer.encode("".join(said) + "\n"))
