"""A word-level tokenizer that matches torchtext's ``basic_english``, with the vocabulary the Quixer paper
built from it, so word-level results (Penn Treebank) compare with the published ones.

``basic_english`` lower-cases a line, puts spaces around ``.`` ``,`` ``(`` ``)`` ``!`` ``?`` and after
``'`` (so ``'s`` becomes ``'`` and ``s``), drops ``"``, ``;`` and ``:``, and splits on whitespace. The
vocabulary is every training token, most frequent first (ties alphabetically), after the specials
``<pad>``, ``<unk>``, ``<eos>``; an unknown word maps to ``<unk>``.

End of sentence: the reference code appends ``vocab["eos"]`` (not ``"<eos>"``), a word that is not in the
vocabulary, so every sentence end became ``<unk>``. ``eos="quirk"`` reproduces that for parity with the
published figures; the default ``eos="eos"`` appends the real ``<eos>``. Results say which one they used.
"""

from __future__ import annotations

import json
import os
import re
from collections import Counter
from collections.abc import Iterable
from pathlib import Path

import torch

from .errors import DataError

__all__ = ["basic_english", "WordTokenizer", "SPECIALS", "EOS_MODES"]

SPECIALS = ("<pad>", "<unk>", "<eos>")
#: "eos": every sentence ends with <eos>; "quirk": with <unk>, as the reference code's vocab["eos"] did
EOS_MODES = ("eos", "quirk")

_PATTERNS = [(re.compile(p), r) for p, r in (
    (r"\'", " '  "), (r"\"", ""), (r"\.", " . "), (r"<br \/>", " "), (r",", " , "), (r"\(", " ( "),
    (r"\)", " ) "), (r"\!", " ! "), (r"\?", " ? "), (r"\;", " "), (r"\:", " "), (r"\s+", " "))]


def basic_english(line: str) -> list[str]:
    """torchtext's ``basic_english`` tokenizer (same patterns, same order)."""
    line = line.lower()
    for pattern, replacement in _PATTERNS:
        line = pattern.sub(replacement, line)
    return line.split()


class WordTokenizer:
    """Words to ids and back; :meth:`build` makes the vocabulary from training sentences."""

    kind = "words"

    def __init__(self, vocab: list[str], eos: str = "eos") -> None:
        if eos not in EOS_MODES:
            raise DataError(f"eos={eos!r} is invalid: use 'eos' (a real <eos> token) or 'quirk' (sentence ends as "
                             "<unk>, as the reference code did)")
        if tuple(vocab[: len(SPECIALS)]) != SPECIALS or len(set(vocab)) != len(vocab):
            raise DataError(f"a word vocabulary must start with {', '.join(SPECIALS)} and hold each word once")
        self.vocab = list(vocab)
        self.eos = eos
        self.index = {w: i for i, w in enumerate(self.vocab)}
        self.unk_id = self.index["<unk>"]
        self.pad_id = self.index["<pad>"]
        self.end_id = self.unk_id if eos == "quirk" else self.index["<eos>"]

    @classmethod
    def build(cls, sentences: Iterable[str], eos: str = "eos") -> WordTokenizer:
        counts: Counter[str] = Counter()
        for s in sentences:
            counts.update(basic_english(s))
        for special in SPECIALS:
            counts.pop(special, None)
        words = sorted(counts, key=lambda w: (-counts[w], w))
        return cls(list(SPECIALS) + words, eos=eos)

    @property
    def vocab_size(self) -> int:
        return len(self.vocab)

    def encode_sentence(self, sentence: str) -> list[int]:
        return [self.index.get(w, self.unk_id) for w in basic_english(sentence)]

    def encode_lines(self, lines: Iterable[str]) -> torch.Tensor:
        """One stream of ids: every non-empty sentence's words, then its end token (as the reference)."""
        ids: list[int] = []
        for line in lines:
            words = self.encode_sentence(line)
            if words:
                ids.extend(words)
                ids.append(self.end_id)
        return torch.tensor(ids, dtype=torch.long)

    def decode(self, ids: Iterable[int]) -> str:
        return " ".join(self.vocab[int(i)] for i in ids)

    def save(self, path: str | os.PathLike) -> None:
        Path(path).write_text(json.dumps({"kind": self.kind, "eos": self.eos, "vocab": self.vocab}), encoding="utf-8")

    @classmethod
    def load(cls, path: str | os.PathLike) -> WordTokenizer:
        try:
            data = json.loads(Path(path).read_text(encoding="utf-8"))
            return cls(data["vocab"], eos=data["eos"])
        except (UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError) as e:
            raise DataError(f"{str(path)!r} is not a qelm word vocabulary ({type(e).__name__}): delete it to rebuild "
                             "it from the training text") from None
