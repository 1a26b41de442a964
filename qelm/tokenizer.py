"""Tokenizers: text <-> token ids. Any UTF-8 text can train one.

* :class:`CharTokenizer` (the default): one token per distinct character of the corpus, in sorted order.
* :class:`BPETokenizer`: byte-level BPE trained by the Hugging Face ``tokenizers`` library. Its alphabet is
  the byte symbols that occur in the corpus (not all 256), so vocabularies as small as ~100 tokens work.

Both share one small interface: ``encode(str) -> list[int]``, ``decode(list[int]) -> str``, ``vocab_size``
and ``save(path)`` (one JSON file, written atomically); :func:`load_tokenizer` reads either kind back.
Encoding text that holds characters outside the vocabulary is an error that names those characters,
never a silent drop.
"""

from __future__ import annotations

import json
import os
import unicodedata
from pathlib import Path
from typing import Iterable

__all__ = ["CharTokenizer", "BPETokenizer", "Tokenizer", "load_tokenizer", "build_tokenizer", "TOKENIZER_KINDS"]

TOKENIZER_KINDS = ("char", "bpe")
MAX_VOCAB_SIZE = 2**31 - 1  # the most tokens a BPE vocabulary may ask for (the tokenizers library counts in 32 bits)
_CHAR_FORMAT = "qelm.char"  # the "type" key of a saved CharTokenizer


def describe_chars(chars: Iterable[str], limit: int = 8) -> str:
    """``'é' (U+00E9), '\\t' (U+0009)``: characters named so a user can find them in a file."""
    chars = sorted(set(chars))
    named = []
    for c in chars[:limit]:
        name = unicodedata.name(c, "")
        named.append(f"{c!r} (U+{ord(c):04X}{' ' + name if name else ''})")
    more = f" and {len(chars) - limit} more" if len(chars) > limit else ""
    return ", ".join(named) + more


def _outside_vocabulary(bad: Iterable[str], vocab_size: int) -> ValueError:
    bad = set(bad)
    return ValueError(
        f"text has {len(bad)} character(s) outside the tokenizer's vocabulary: {describe_chars(bad)}; "
        f"the {vocab_size}-token vocabulary was built from the training corpus: remove those characters, "
        f"or train on a corpus that contains them"
    )


class CharTokenizer:
    """One token per character; ids follow the order of ``chars`` (sorted when built from text)."""

    kind = "char"

    def __init__(self, chars: Iterable[str]) -> None:
        chars = list(chars)
        for c in chars:
            if not isinstance(c, str) or len(c) != 1:
                raise ValueError(f"CharTokenizer vocabulary entry {c!r} is not a single character")
        if len(set(chars)) != len(chars):
            raise ValueError("CharTokenizer vocabulary has repeated characters: each character must appear once")
        if len(chars) < 2:
            raise ValueError(f"a vocabulary of {len(chars)} character(s) is too small for a language model: "
                             f"the corpus needs at least 2 distinct characters")
        self.chars = chars
        self._index = {c: i for i, c in enumerate(chars)}

    @classmethod
    def from_text(cls, text: str) -> "CharTokenizer":
        """The vocabulary of ``text``: its distinct characters, sorted."""
        return cls(sorted(set(text)))

    @property
    def vocab_size(self) -> int:
        return len(self.chars)

    def encode(self, text: str) -> list[int]:
        try:
            return [self._index[c] for c in text]
        except KeyError:
            raise _outside_vocabulary(set(text) - self._index.keys(), self.vocab_size) from None

    def decode(self, ids: Iterable[int]) -> str:
        ids = [int(i) for i in ids]
        bad = [i for i in ids if not 0 <= i < self.vocab_size]
        if bad:
            raise ValueError(f"token id {bad[0]} is out of range for this {self.vocab_size}-token vocabulary")
        return "".join(self.chars[i] for i in ids)

    def to_json(self) -> str:
        return json.dumps({"type": _CHAR_FORMAT, "version": 1, "chars": self.chars}, ensure_ascii=False, indent=1)

    def save(self, path: str | os.PathLike) -> Path:
        from .files import atomic_write

        return atomic_write(path, self.to_json())

    def __repr__(self) -> str:
        return f"CharTokenizer(vocab_size={self.vocab_size})"


class BPETokenizer:
    """Byte-level BPE (``tokenizers`` library): ByteLevel pre-tokenizer and decoder, a BPE model."""

    kind = "bpe"

    def __init__(self, tokenizer) -> None:  # tokenizer: tokenizers.Tokenizer
        self.tokenizer = tokenizer

    @classmethod
    def train(cls, text: str, vocab_size: int, alphabet_text: str | None = None) -> "BPETokenizer":
        """Learn merges on ``text`` up to ``vocab_size`` tokens. The alphabet is every byte symbol of
        ``alphabet_text`` (default ``text``): pass the whole corpus there when ``text`` is its training part,
        so validation text never holds an unknown byte while merges still come from training text only."""
        from tokenizers import Tokenizer as HFTokenizer
        from tokenizers import decoders, models, pre_tokenizers, trainers

        tok = HFTokenizer(models.BPE())
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tok.decoder = decoders.ByteLevel()
        source = text if alphabet_text is None else alphabet_text
        alphabet = sorted({c for word, _ in tok.pre_tokenizer.pre_tokenize_str(source) for c in word})
        if isinstance(vocab_size, int) and vocab_size > MAX_VOCAB_SIZE:
            raise ValueError(f"BPE vocab_size={vocab_size} is too large: use at most {MAX_VOCAB_SIZE} (2**31 - 1) "
                             f"tokens; training stops early anyway once no pair of tokens is left to merge")
        if isinstance(vocab_size, bool) or not isinstance(vocab_size, int) or vocab_size < len(alphabet):
            raise ValueError(f"BPE vocab_size={vocab_size!r} is too small: the corpus has {len(alphabet)} distinct bytes, "
                             f"each needs a token; use a vocab_size of at least {max(len(alphabet), 2)}")
        if len(alphabet) < 2:
            raise ValueError("the corpus needs at least 2 distinct bytes to train a BPE tokenizer")
        trainer = trainers.BpeTrainer(vocab_size=vocab_size, initial_alphabet=alphabet, special_tokens=[],
                                      show_progress=False)
        tok.train_from_iterator([text], trainer=trainer)
        return cls(tok)

    @property
    def vocab_size(self) -> int:
        return self.tokenizer.get_vocab_size()

    def encode(self, text: str) -> list[int]:
        ids = self.tokenizer.encode(text).ids
        # the BPE model drops bytes it has no token for; a round trip finds them
        if self.tokenizer.decode(ids) != text:
            unknown = {c for c in set(text) if self.tokenizer.decode(self.tokenizer.encode(c).ids) != c}
            if unknown:
                raise _outside_vocabulary(unknown, self.vocab_size)
        return ids

    def decode(self, ids: Iterable[int]) -> str:
        ids = [int(i) for i in ids]
        bad = [i for i in ids if not 0 <= i < self.vocab_size]
        if bad:
            raise ValueError(f"token id {bad[0]} is out of range for this {self.vocab_size}-token vocabulary")
        return self.tokenizer.decode(ids)

    def to_json(self) -> str:
        return self.tokenizer.to_str()

    def save(self, path: str | os.PathLike) -> Path:
        from .files import atomic_write

        return atomic_write(path, self.to_json())

    def __repr__(self) -> str:
        return f"BPETokenizer(vocab_size={self.vocab_size})"


Tokenizer = CharTokenizer | BPETokenizer


def build_tokenizer(kind: str, text: str, vocab_size: int | None = None, alphabet_text: str | None = None) -> Tokenizer:
    """A new tokenizer of ``kind`` ("char" or "bpe") for ``text``. ``vocab_size`` is required for bpe and
    must be absent for char (whose size is the corpus's character count)."""
    if kind == "char":
        if vocab_size is not None:
            raise ValueError(f"vocab_size={vocab_size} only applies to the bpe tokenizer: a char tokenizer has one "
                             f"token per distinct character; drop --vocab-size or use --tokenizer bpe")
        return CharTokenizer.from_text(text if alphabet_text is None else alphabet_text)
    if kind == "bpe":
        if vocab_size is None:
            raise ValueError("the bpe tokenizer needs a vocab_size (e.g. --vocab-size 100)")
        return BPETokenizer.train(text, vocab_size, alphabet_text=alphabet_text)
    raise ValueError(f"unknown tokenizer {kind!r}: choose one of {', '.join(TOKENIZER_KINDS)}")


def load_tokenizer(path: str | os.PathLike) -> Tokenizer:
    """Read a tokenizer saved by ``save``: a qelm char vocabulary or a ``tokenizers`` JSON file."""
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"tokenizer file {str(p)!r} does not exist")
    text = p.read_text(encoding="utf-8")
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise ValueError(f"tokenizer file {str(p)!r} is corrupt (not JSON: {e})") from None
    if isinstance(data, dict) and data.get("type") == _CHAR_FORMAT:
        chars = data.get("chars")
        if not isinstance(chars, list):
            raise ValueError(f"tokenizer file {str(p)!r} is corrupt: its 'chars' entry is not a list")
        return CharTokenizer(chars)
    if isinstance(data, dict) and "model" in data:
        from tokenizers import Tokenizer as HFTokenizer

        try:
            return BPETokenizer(HFTokenizer.from_str(text))
        except Exception as e:  # tokenizers raises a plain Exception on a bad file
            raise ValueError(f"tokenizer file {str(p)!r} is corrupt ({e})") from None
    raise ValueError(f"tokenizer file {str(p)!r} is neither a qelm char vocabulary nor a tokenizers JSON file")
