"""Corpora: read a UTF-8 text file, split it, tokenize it, and draw batches of context windows.

* :func:`read_corpus` checks the file (exists, not empty, UTF-8 text rather than binary) with one clear
  error for each way it can be wrong.
* :class:`TextDataset` holds the token ids of the training part (the first 90% of the text) and the
  validation part (the last 10%), and the tokenizer. The split is on the text, so both parts are
  tokenized separately and no token straddles the boundary.
* :class:`BatchSampler` draws random context windows (with replacement, nanoGPT style) from a torch
  ``Generator``: the same seed gives the same batches, and its state is saved in checkpoints so a resumed
  run draws exactly the batches an uninterrupted one would. In a data-parallel run every rank draws the
  same *global* batch and keeps its own slice, so the union over ranks equals the one-process batch.

The bundled corpus (``qelm/data/corpus.txt``, short stories in plain English made by a small seeded
grammar) lets the demo run without a download.
"""

from __future__ import annotations

import hashlib
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from .errors import ConfigError, DataError
from .paths import wrong_kind
from .tokenizer import Tokenizer, build_tokenizer

__all__ = ["VAL_FRACTION", "MAX_SEED", "check_seed", "bundled_corpus", "bundled_config", "read_corpus", "split_text",
           "TextDataset", "BatchSampler"]

VAL_FRACTION = 0.1  # the last 10% of the text is the validation split
MAX_SEED = 2**63 - 1  # the largest seed that torch, a TOML file and JSON all hold


def check_seed(seed: int, name: str = "seed") -> int:
    """``seed`` if it is an integer from 0 to :data:`MAX_SEED`; else ``ValueError`` naming ``name``."""
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed <= MAX_SEED:
        raise ConfigError(f"{name}={seed!r} is invalid: use an integer from 0 to {MAX_SEED} (2**63 - 1)")
    return seed
_DATA_DIR = Path(__file__).resolve().parent / "data"


def bundled_corpus() -> Path:
    """Path of the bundled demo corpus (about 40 KB of plain English)."""
    return _DATA_DIR / "corpus.txt"


def bundled_config() -> Path:
    """Path of the tiny demo config (model and training settings)."""
    return _DATA_DIR / "tiny.toml"


def read_corpus(path: str | os.PathLike) -> str:
    """The text of a UTF-8 corpus file. Raises ``FileNotFoundError`` for a missing file and ``ValueError``
    for a folder, an empty file or one that is binary or not UTF-8, each naming the file and the fix."""
    p = Path(path)
    kind = wrong_kind(p)  # a device or FIFO would be read forever, or block: only a regular file is a corpus
    if kind and not p.is_dir():
        raise DataError(f"corpus {str(p)!r} {kind}: pass --data with a UTF-8 text file (a regular file)")
    if not p.exists():
        raise FileNotFoundError(f"corpus file {str(p)!r} does not exist: pass --data with a UTF-8 text file")
    if p.is_dir():
        raise DataError(f"corpus {str(p)!r} is a folder: pass --data with a UTF-8 text file inside it")
    raw = p.read_bytes()
    if not raw.strip():
        raise DataError(f"corpus file {str(p)!r} is empty: it needs text to learn from")
    if b"\x00" in raw:
        raise DataError(f"corpus file {str(p)!r} looks binary (it holds NUL bytes, first at byte {raw.index(0)}): "
                         f"use a UTF-8 text file")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise DataError(f"corpus file {str(p)!r} is not UTF-8 text (byte 0x{raw[e.start]:02x} at offset {e.start} "
                         f"is invalid): convert it to UTF-8, e.g. iconv -f LATIN1 -t UTF-8") from None
    return text.removeprefix("\ufeff")  # a byte-order mark is not text


def split_text(text: str, val_fraction: float = VAL_FRACTION) -> tuple[str, str]:
    """``(train, validation)``: validation is the last ``val_fraction`` of the characters."""
    if not 0.0 < val_fraction < 1.0:
        raise ConfigError(f"val_fraction={val_fraction!r} is invalid: use a fraction between 0 and 1, e.g. 0.1")
    cut = len(text) - max(1, round(len(text) * val_fraction))
    return text[:cut], text[cut:]


def _ids(values: list[int]) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.long)  # (N,)


@dataclass
class TextDataset:
    """A tokenized corpus: training and validation token ids, the tokenizer, and where the text came from.

    Build one with :meth:`from_text` or :meth:`from_file`.

    Examples:
        >>> from qelm import TextDataset
        >>> data = TextDataset.from_text("the cat sat on the mat. " * 20)
        >>> data.vocab_size, len(data.train_ids), len(data.val_ids)  # 10% held out for validation
        (12, 432, 48)
    """

    train_ids: torch.Tensor
    """Training token ids ``(N_train,)``, int64."""
    val_ids: torch.Tensor
    """Validation token ids ``(N_val,)``, int64: the end of the text."""
    tokenizer: Tokenizer
    """The tokenizer (character or BPE) both parts were encoded with."""
    source: str
    """The file's path, or ``"<text>"``."""
    sha256: str
    """Of the whole text: a resumed run checks it trains on the same corpus."""
    chars: int
    """Characters in the whole text."""
    val_fraction: float = VAL_FRACTION
    """The fraction of the text held out for validation."""

    @classmethod
    def from_text(cls, text: str, *, tokenizer: str | Tokenizer = "char", vocab_size: int | None = None,
                  val_fraction: float = VAL_FRACTION, source: str = "<text>") -> TextDataset:
        """Split ``text``, build (or reuse) a tokenizer and tokenize both parts.

        A new char tokenizer takes its vocabulary from the whole text (so validation characters have
        tokens); a new BPE learns its merges from the training part only, over the whole text's bytes.

        Args:
            text: the corpus.
            tokenizer: ``"char"``, ``"bpe"``, or a tokenizer to reuse.
            vocab_size: the BPE vocabulary size (None: the tokenizer's default).
            val_fraction: the fraction at the end of the text held out for validation.
            source: where the text came from, for messages and the run folder.

        Returns:
            The dataset.

        Raises:
            DataError: the text is empty, or ``vocab_size`` differs from a given tokenizer's.
        """
        if not text.strip():
            raise DataError(f"corpus {source} is empty: it needs text to learn from")
        train_text, val_text = split_text(text, val_fraction)
        if isinstance(tokenizer, str):
            tokenizer = build_tokenizer(tokenizer, train_text, vocab_size, alphabet_text=text)
        elif vocab_size is not None and vocab_size != tokenizer.vocab_size:
            raise DataError(f"vocab_size={vocab_size} differs from the given tokenizer's {tokenizer.vocab_size}")
        return cls(
            train_ids=_ids(tokenizer.encode(train_text)),
            val_ids=_ids(tokenizer.encode(val_text)),
            tokenizer=tokenizer,
            source=source,
            sha256=hashlib.sha256(text.encode("utf-8")).hexdigest(),
            chars=len(text),
            val_fraction=val_fraction,
        )

    @classmethod
    def from_file(cls, path: str | os.PathLike, **kwargs: Any) -> TextDataset:
        """:meth:`from_text` on the checked contents of a UTF-8 file.

        Args:
            path: a UTF-8 text file.
            **kwargs: as for :meth:`from_text` (``tokenizer``, ``vocab_size``, ``val_fraction``).

        Returns:
            The dataset, its ``source`` the path.
        """
        return cls.from_text(read_corpus(path), source=str(path), **kwargs)

    @property
    def vocab_size(self) -> int:
        """Tokens of the tokenizer (a model's ``vocab_size``)."""
        return self.tokenizer.vocab_size

    def check_context(self, context_len: int) -> None:
        """Raise if the corpus is too short to train a model reading ``context_len`` tokens."""
        need = context_len + 1  # one window: context_len inputs and their next-token targets
        n = len(self.train_ids)
        if n < need:
            train_share = 1 - self.val_fraction
            hint = (f"at least {math.ceil(need / train_share) + 1} characters" if self.tokenizer.kind == "char"
                    else "more text")
            raise DataError(
                f"corpus {self.source} is too short: its training part (the first {train_share:.0%}) has {n} tokens, "
                f"but one context window needs context_len + 1 = {need}; use a longer text ({hint}) or a smaller "
                f"context_len")
        if len(self.val_ids) < 2:
            raise DataError(f"corpus {self.source} is too short: its validation part (the last {self.val_fraction:.0%}) "
                             f"has {len(self.val_ids)} token(s), and scoring needs at least 2; use a longer text")


class BatchSampler:
    """Random context windows ``(x, y)`` of ``context_len`` tokens from ``ids``; ``y`` is ``x`` shifted by one.

    ``batch_size`` is the global batch. With ``world_size > 1`` every rank draws the same global offsets
    (same seed) and returns rows ``rank * b .. (rank + 1) * b`` of it, ``b = batch_size / world_size``.
    """

    def __init__(self, ids: torch.Tensor, context_len: int, batch_size: int, seed: int, rank: int = 0,
                 world_size: int = 1) -> None:
        if len(ids) < context_len + 1:
            raise DataError(f"{len(ids)} tokens are too few for one window of context_len + 1 = {context_len + 1}")
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ConfigError(f"batch_size={batch_size!r} is invalid: use an integer >= 1")
        if batch_size % world_size:
            raise ConfigError(f"batch_size={batch_size} does not split over {world_size} processes: use a multiple of "
                             f"{world_size} (each process takes batch_size / {world_size} rows of the global batch)")
        self.ids = ids
        self.context_len = context_len
        self.batch_size = batch_size
        self.rank, self.world_size = rank, world_size
        self.generator = torch.Generator().manual_seed(seed)
        self._window = torch.arange(context_len + 1)  # (T+1,)

    def next(self) -> tuple[torch.Tensor, torch.Tensor]:
        """This rank's slice of the next global batch: ``x, y`` each ``(batch_size / world_size, T)``."""
        high = len(self.ids) - self.context_len  # offsets 0 .. N-T-1 keep offset + T inside the stream
        offsets = torch.randint(0, high, (self.batch_size,), generator=self.generator)  # (B,)
        per_rank = self.batch_size // self.world_size
        offsets = offsets[self.rank * per_rank:(self.rank + 1) * per_rank]  # (b,)
        windows = self.ids[offsets.unsqueeze(1) + self._window]  # (b, T+1)
        return windows[:, :-1], windows[:, 1:]

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {"generator": self.generator.get_state()}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        self.generator.set_state(state["generator"])
