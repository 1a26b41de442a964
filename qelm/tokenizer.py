"""Tokenizers: text <-> token ids. Any UTF-8 text can train one.

* :class:`CharTokenizer` (the default): one token per distinct character of the corpus, in sorted order.
* :class:`BPETokenizer`: byte-level BPE trained by the Hugging Face ``tokenizers`` library. Its alphabet is
  the byte symbols that occur in the corpus (not all 256), so vocabularies as small as ~100 tokens work.

Both share one small interface: ``encode(str) -> list[int]``, ``decode(list[int]) -> str``, ``vocab_size``,
``save(path)`` (one JSON file, written atomically) and ``save_pretrained(folder)`` (``tokenizer.json`` in
it, as Hugging Face names it); :func:`load_tokenizer` reads either kind back, from the file or the folder.

The unknown token. A tokenizer built from a corpus has one more token, :data:`UNKNOWN` (U+FFFD, the
replacement character), that a character outside the vocabulary (char) or a byte outside the alphabet
(BPE) becomes: any text can be scored or continued, and :meth:`count_unknown` says how many of its tokens
fell back. A tokenizer saved by an older qelm has no unknown token; encoding such text with it is an
error that names the characters, never a silent drop.
"""

from __future__ import annotations

import json
import os
import unicodedata
from collections.abc import Iterable
from pathlib import Path

from tokenizers import Tokenizer as HFTokenizer
from tokenizers import Regex, decoders, models, pre_tokenizers, trainers

from .errors import CheckpointError, DataError
from .files import atomic_write
from .paths import wrong_kind

__all__ = ["CharTokenizer", "BPETokenizer", "Tokenizer", "load_tokenizer", "build_tokenizer", "TOKENIZER_KINDS",
           "UNKNOWN", "TOKENIZER_FILE"]

TOKENIZER_KINDS = ("char", "bpe")
MAX_VOCAB_SIZE = 2**31 - 1  # the most tokens a BPE vocabulary may ask for (the tokenizers library counts in 32 bits)
_CHAR_FORMAT = "qelm.char"  # the "type" key of a CharTokenizer saved by qelm before it wrote tokenizers' format
_ONE_CHAR = r"[\s\S]"  # the split of a CharTokenizer saved in tokenizers' format: every character on its own
_NO_UNKNOWN = "<unk>"  # the WordLevel unknown token of a CharTokenizer without one (never a vocabulary entry)
UNKNOWN = "\ufffd"  # the unknown token's text: what text outside the vocabulary becomes, and decodes to
TOKENIZER_FILE = "tokenizer.json"  # the file save_pretrained writes in a folder


def describe_chars(chars: Iterable[str], limit: int = 8) -> str:
    """``'é' (U+00E9), '\\t' (U+0009)``: characters named so a user can find them in a file."""
    chars = sorted(set(chars))
    named = []
    for c in chars[:limit]:
        name = unicodedata.name(c, "")
        named.append(f"{c!r} (U+{ord(c):04X}{' ' + name if name else ''})")
    more = f" and {len(chars) - limit} more" if len(chars) > limit else ""
    return ", ".join(named) + more


def _outside_vocabulary(bad: Iterable[str], vocab_size: int) -> DataError:
    bad = set(bad)
    return DataError(
        f"text has {len(bad)} character(s) outside the tokenizer's vocabulary: {describe_chars(bad)}; "
        f"the {vocab_size}-token vocabulary was built from the training corpus and has no unknown token (it "
        f"was saved by an older qelm): remove those characters, or train on a corpus that contains them"
    )


class _Saving:
    """What both tokenizers share: writing their JSON to a file or, as Hugging Face does, into a folder."""

    def to_json(self) -> str:  # pragma: no cover - each tokenizer has its own
        raise NotImplementedError

    def save(self, path: str | os.PathLike) -> Path:
        return atomic_write(path, self.to_json())

    def save_pretrained(self, directory: str | os.PathLike) -> Path:
        """Write ``tokenizer.json`` into ``directory`` (created if needed), beside a model's
        ``save_pretrained`` files: the folder then loads with :func:`qelm.load_checkpoint`. Returns the file."""
        Path(directory).mkdir(parents=True, exist_ok=True)
        return self.save(Path(directory) / TOKENIZER_FILE)


class CharTokenizer(_Saving):
    """One token per character; ids follow the order of ``chars`` (sorted when built from text). ``unk``:
    the character of ``chars`` that characters outside them become (``None``: they are an error)."""

    kind = "char"

    def __init__(self, chars: Iterable[str], unk: str | None = None) -> None:
        chars = list(chars)
        for c in chars:
            if not isinstance(c, str) or len(c) != 1:
                raise DataError(f"CharTokenizer vocabulary entry {c!r} is not a single character")
        if len(set(chars)) != len(chars):
            raise DataError("CharTokenizer vocabulary has repeated characters: each character must appear once")
        if len(chars) < 2:
            raise DataError(f"a vocabulary of {len(chars)} character(s) is too small for a language model: "
                             f"the corpus needs at least 2 distinct characters")
        if unk is not None and unk not in chars:
            raise DataError(f"CharTokenizer unknown token {unk!r} is not in its vocabulary: add it to chars")
        self.chars = chars
        self.unk = unk
        self._index = {c: i for i, c in enumerate(chars)}

    @classmethod
    def from_text(cls, text: str) -> CharTokenizer:
        """The vocabulary of ``text``: its distinct characters and the unknown token, sorted."""
        return cls(sorted(set(text) | {UNKNOWN}), unk=UNKNOWN)

    @property
    def unk_id(self) -> int | None:
        """The id characters outside the vocabulary become (``None``: this tokenizer has no unknown token)."""
        return None if self.unk is None else self._index[self.unk]

    def count_unknown(self, text: str) -> int:
        """How many tokens of ``text`` fall back to the unknown token: its characters outside the vocabulary."""
        return sum(c not in self._index for c in text)

    def unknown_characters(self, text: str) -> set[str]:
        """The characters of ``text`` outside the vocabulary."""
        return set(text) - self._index.keys()

    @property
    def vocab_size(self) -> int:
        return len(self.chars)

    def encode(self, text: str) -> list[int]:
        if self.unk is not None:
            unk = self._index[self.unk]
            return [self._index.get(c, unk) for c in text]
        try:
            return [self._index[c] for c in text]
        except KeyError:
            raise _outside_vocabulary(set(text) - self._index.keys(), self.vocab_size) from None

    def decode(self, ids: Iterable[int]) -> str:
        ids = [int(i) for i in ids]
        bad = [i for i in ids if not 0 <= i < self.vocab_size]
        if bad:
            raise DataError(f"token id {bad[0]} is out of range for this {self.vocab_size}-token vocabulary")
        return "".join(self.chars[i] for i in ids)

    def to_json(self) -> str:
        """The vocabulary as a Hugging Face ``tokenizers`` file (``tokenizers.Tokenizer.from_file`` reads it and
        encodes as this does): a WordLevel model whose words are single characters, split one per character,
        decoded by fusing them. Files of qelm's own earlier format (``"type": "qelm.char"``) still load."""
        tok = HFTokenizer(models.WordLevel(vocab={c: i for i, c in enumerate(self.chars)},
                                           unk_token=_NO_UNKNOWN if self.unk is None else self.unk))
        tok.pre_tokenizer = pre_tokenizers.Split(Regex(_ONE_CHAR), behavior="isolated")
        tok.decoder = decoders.Fuse()
        return json.dumps(json.loads(tok.to_str()), ensure_ascii=False, indent=1)

    def __repr__(self) -> str:
        return f"CharTokenizer(vocab_size={self.vocab_size})"


class BPETokenizer(_Saving):
    """Byte-level BPE (``tokenizers`` library): ByteLevel pre-tokenizer and decoder, a BPE model whose
    unknown token (special, id 0) is what a byte outside the alphabet becomes."""

    kind = "bpe"

    def __init__(self, tokenizer) -> None:  # tokenizer: tokenizers.Tokenizer
        self.tokenizer = tokenizer

    @classmethod
    def train(cls, text: str, vocab_size: int, alphabet_text: str | None = None) -> BPETokenizer:
        """Learn merges on ``text`` up to ``vocab_size`` tokens. The alphabet is every byte symbol of
        ``alphabet_text`` (default ``text``): pass the whole corpus there when ``text`` is its training part,
        so validation text never holds an unknown byte while merges still come from training text only."""
        tok = HFTokenizer(models.BPE(unk_token=UNKNOWN))
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tok.decoder = decoders.ByteLevel()
        source = text if alphabet_text is None else alphabet_text
        alphabet = sorted({c for word, _ in tok.pre_tokenizer.pre_tokenize_str(source) for c in word})
        if isinstance(vocab_size, int) and vocab_size > MAX_VOCAB_SIZE:
            raise DataError(f"BPE vocab_size={vocab_size} is too large: use at most {MAX_VOCAB_SIZE} (2**31 - 1) "
                             f"tokens; training stops early anyway once no pair of tokens is left to merge")
        if isinstance(vocab_size, bool) or not isinstance(vocab_size, int) or vocab_size < len(alphabet) + 1:
            raise DataError(f"BPE vocab_size={vocab_size!r} is too small: the corpus has {len(alphabet)} distinct bytes, "
                             f"each needs a token, and the unknown token one more; use a vocab_size of at least "
                             f"{max(len(alphabet), 2) + 1}")
        if len(alphabet) < 2:
            raise DataError("the corpus needs at least 2 distinct bytes to train a BPE tokenizer")
        # the library allocates for vocab_size up front (a billion aborted the process); more tokens than the
        # alphabet, the unknown token and one merge per adjacent pair of each distinct word cannot be learned,
        # so asking for that many learns the same merges
        words = {word for word, _ in tok.pre_tokenizer.pre_tokenize_str(text)}
        vocab_size = min(vocab_size, len(alphabet) + 1 + sum(len(word) - 1 for word in words))
        trainer = trainers.BpeTrainer(vocab_size=vocab_size, initial_alphabet=alphabet, special_tokens=[UNKNOWN],
                                      show_progress=False)
        tok.train_from_iterator([text], trainer=trainer)
        return cls(tok)

    @property
    def vocab_size(self) -> int:
        return self.tokenizer.get_vocab_size()

    @property
    def unk_id(self) -> int | None:
        """The id bytes outside the alphabet become (``None``: a tokenizer of an older qelm, which has none)."""
        unk = getattr(self.tokenizer.model, "unk_token", None)
        return None if unk is None else self.tokenizer.token_to_id(unk)

    def count_unknown(self, text: str) -> int:
        """How many tokens of ``text`` fall back to the unknown token (one per byte outside the alphabet)."""
        unk = self.unk_id
        if unk is None:
            self.encode(text)  # raises, naming the characters, where any would fall back
            return 0
        return self.tokenizer.encode(text).ids.count(unk)

    def unknown_characters(self, text: str) -> set[str]:
        """The characters of ``text`` some byte of which is outside the alphabet."""
        unk = self.unk_id
        if unk is None:
            return {c for c in set(text) if self.tokenizer.decode(self.tokenizer.encode(c).ids) != c}
        return {c for c in set(text) if unk in self.tokenizer.encode(c).ids}

    def encode(self, text: str) -> list[int]:
        ids = self.tokenizer.encode(text).ids
        if self.unk_id is not None:
            return ids
        # an older tokenizer's BPE model drops bytes it has no token for; a round trip finds them
        if self.tokenizer.decode(ids) != text:
            unknown = {c for c in set(text) if self.tokenizer.decode(self.tokenizer.encode(c).ids) != c}
            if unknown:
                raise _outside_vocabulary(unknown, self.vocab_size)
        return ids

    def decode(self, ids: Iterable[int]) -> str:
        ids = [int(i) for i in ids]
        bad = [i for i in ids if not 0 <= i < self.vocab_size]
        if bad:
            raise DataError(f"token id {bad[0]} is out of range for this {self.vocab_size}-token vocabulary")
        return self.tokenizer.decode(ids, skip_special_tokens=False)  # the unknown token decodes to U+FFFD

    def to_json(self) -> str:
        return self.tokenizer.to_str()

    def __repr__(self) -> str:
        return f"BPETokenizer(vocab_size={self.vocab_size})"


Tokenizer = CharTokenizer | BPETokenizer


def build_tokenizer(kind: str, text: str, vocab_size: int | None = None, alphabet_text: str | None = None) -> Tokenizer:
    """A new tokenizer of ``kind`` ("char" or "bpe") for ``text``. ``vocab_size`` is required for bpe and
    must be absent for char (whose size is the corpus's character count)."""
    if kind == "char":
        if vocab_size is not None:
            raise DataError(f"vocab_size={vocab_size} only applies to the bpe tokenizer: a char tokenizer has one "
                             f"token per distinct character; drop --vocab-size or use --tokenizer bpe")
        return CharTokenizer.from_text(text if alphabet_text is None else alphabet_text)
    if kind == "bpe":
        if vocab_size is None:
            raise DataError("the bpe tokenizer needs a vocab_size (e.g. --vocab-size 100)")
        return BPETokenizer.train(text, vocab_size, alphabet_text=alphabet_text)
    raise DataError(f"unknown tokenizer {kind!r}: choose one of {', '.join(TOKENIZER_KINDS)}")


def load_tokenizer(path: str | os.PathLike) -> Tokenizer:
    """Read a tokenizer saved by ``save`` (a qelm char vocabulary or a ``tokenizers`` JSON file), or by
    ``save_pretrained`` (the folder holding its ``tokenizer.json``)."""
    p = Path(path)
    if p.is_dir():
        p = p / TOKENIZER_FILE
    if wrong_kind(p):
        raise DataError(f"tokenizer file {str(p)!r} {wrong_kind(p)}")
    if not p.is_file():
        raise FileNotFoundError(f"tokenizer file {str(p)!r} does not exist")
    try:
        text = p.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise CheckpointError(f"tokenizer file {str(p)!r} is corrupt: not UTF-8 text (byte 0x{e.object[e.start]:02x} at "
                         f"offset {e.start})") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise CheckpointError(f"tokenizer file {str(p)!r} is corrupt (not JSON: {e})") from None
    if isinstance(data, dict) and data.get("type") == _CHAR_FORMAT:
        chars = data.get("chars")
        if not isinstance(chars, list):
            raise CheckpointError(f"tokenizer file {str(p)!r} is corrupt: its 'chars' entry is not a list")
        unk = data.get("unk")
        if unk is not None and not isinstance(unk, str):
            raise CheckpointError(f"tokenizer file {str(p)!r} is corrupt: its 'unk' entry is not a character")
        try:
            return CharTokenizer(chars, unk=unk)
        except ValueError as e:  # an edited vocabulary: say which file
            raise CheckpointError(f"tokenizer file {str(p)!r} is corrupt: {e}") from None
    if isinstance(data, dict) and _is_char_vocabulary(data):
        vocab = data["model"].get("vocab")
        if not isinstance(vocab, dict) or sorted(vocab.values()) != list(range(len(vocab))):
            raise CheckpointError(f"tokenizer file {str(p)!r} is corrupt: its vocabulary is not a table of characters "
                                  f"to the ids 0 to n - 1")
        unk = data["model"].get("unk_token")
        try:
            return CharTokenizer(sorted(vocab, key=lambda ch: vocab[ch]), unk=unk if unk in vocab else None)
        except ValueError as e:  # an edited vocabulary: say which file
            raise CheckpointError(f"tokenizer file {str(p)!r} is corrupt: {e}") from None
    if isinstance(data, dict) and "model" in data:
        try:
            return BPETokenizer(HFTokenizer.from_str(text))
        except Exception as e:  # tokenizers raises a plain Exception on a bad file
            raise CheckpointError(f"tokenizer file {str(p)!r} is corrupt ({e})") from None
    raise DataError(f"tokenizer file {str(p)!r} is neither a qelm char vocabulary nor a tokenizers JSON file")


def _is_char_vocabulary(data: dict) -> bool:
    """A ``tokenizers`` file that :meth:`CharTokenizer.to_json` wrote: a WordLevel model, split one character at a
    time."""
    model, split = data.get("model"), data.get("pre_tokenizer")
    return (isinstance(model, dict) and model.get("type") == "WordLevel" and isinstance(split, dict)
            and split.get("type") == "Split" and split.get("pattern") == {"Regex": _ONE_CHAR})
