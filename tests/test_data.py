"""Corpora and tokenizers: file checks, the split, tokenizer round trips, batches that resume exactly."""

import json

import pytest
import torch

from qelm.data import BatchSampler, TextDataset, bundled_corpus, read_corpus, split_text
from qelm.tokenizer import UNKNOWN, BPETokenizer, CharTokenizer, build_tokenizer, load_tokenizer

TEXT = "the cat sat on the mat.\nthe dog sat on the log.\n" * 20


# --- reading a corpus -------------------------------------------------------------------------------------------
def test_read_corpus_accepts_utf8_and_drops_a_byte_order_mark(tmp_path):
    p = tmp_path / "c.txt"
    p.write_bytes("\ufeffcafé au lait\n".encode("utf-8"))
    assert read_corpus(p) == "café au lait\n"


@pytest.mark.parametrize("content, message", [
    (b"", "is empty"),
    (b"  \n\n ", "is empty"),
    (b"abc\x00\x01\x02", "looks binary"),
    ("caf\u00e9".encode("latin-1"), "is not UTF-8 text (byte 0xe9 at offset 3"),
])
def test_read_corpus_rejects_bad_files_naming_them(tmp_path, content, message):
    p = tmp_path / "bad.txt"
    p.write_bytes(content)
    with pytest.raises(ValueError, match="bad.txt") as e:
        read_corpus(p)
    assert message in str(e.value)


def test_read_corpus_missing_file_and_folder(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.txt.*does not exist"):
        read_corpus(tmp_path / "nope.txt")
    with pytest.raises(ValueError, match="is a folder"):
        read_corpus(tmp_path)


def test_bundled_corpus_is_plain_english_of_demo_size():
    text = read_corpus(bundled_corpus())
    assert 20_000 <= len(text.encode("utf-8")) <= 60_000
    assert text.isascii()
    words = text.split()
    assert len(set(words)) < len(words) / 10, "a tiny model needs repeated structure to learn from"


def test_split_keeps_the_last_tenth_for_validation():
    text = "".join(chr(ord("a") + i % 26) for i in range(1000))
    train, val = split_text(text)
    assert train + val == text
    assert len(val) == 100
    with pytest.raises(ValueError, match="val_fraction=1.5"):
        split_text(text, 1.5)


# --- tokenizers -------------------------------------------------------------------------------------------------
def test_char_tokenizer_round_trip_and_save_load(tmp_path):
    tok = CharTokenizer.from_text(TEXT)
    assert tok.vocab_size == len(set(TEXT)) + 1 and tok.chars[-1] == UNKNOWN, "every character and the unknown token"
    ids = tok.encode(TEXT)
    assert tok.decode(ids) == TEXT
    assert ids[:3] == [tok.chars.index("t"), tok.chars.index("h"), tok.chars.index("e")]
    tok.save(tmp_path / "tok.json")
    again = load_tokenizer(tmp_path / "tok.json")
    assert isinstance(again, CharTokenizer) and again.encode(TEXT) == ids


def test_char_tokenizer_falls_back_to_the_unknown_token_and_counts_it(tmp_path):
    tok = CharTokenizer.from_text(TEXT)
    ids = tok.encode("the Zoo é")
    assert ids.count(tok.unk_id) == 2 and tok.count_unknown("the Zoo é") == 2
    assert tok.unknown_characters("the Zoo é") == {"Z", "é"}
    assert tok.decode(ids) == "the \ufffdoo \ufffd", "the unknown token decodes to U+FFFD"
    tok.save(tmp_path / "t.json")
    assert load_tokenizer(tmp_path / "t.json").encode("the Zoo é") == ids


def test_a_tokenizer_without_unknown_token_names_characters_outside_the_vocabulary(tmp_path):
    """A vocabulary saved by an older qelm (version 1, no unknown token) still loads, and refuses text it
    cannot encode, naming the characters."""
    (tmp_path / "t.json").write_text(json.dumps({"type": "qelm.char", "version": 1, "chars": sorted(set(TEXT))}))
    tok = load_tokenizer(tmp_path / "t.json")
    assert tok.unk_id is None and tok.vocab_size == len(set(TEXT))
    with pytest.raises(ValueError, match=r"'Z' \(U\+005A LATIN CAPITAL LETTER Z\)") as e:
        tok.encode("the Zoo é")
    assert "'é' (U+00E9" in str(e.value)
    assert "2 character(s) outside" in str(e.value)
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    older = Tokenizer(models.BPE())  # a BPE tokenizer as older qelm trained it: no unknown token
    older.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    older.decoder = decoders.ByteLevel()
    older.train_from_iterator([TEXT], trainer=trainers.BpeTrainer(vocab_size=40, show_progress=False))
    (tmp_path / "bpe.json").write_text(older.to_str())
    bpe = load_tokenizer(tmp_path / "bpe.json")
    assert bpe.unk_id is None and bpe.encode("the cat") and bpe.decode(bpe.encode("the cat")) == "the cat"
    with pytest.raises(ValueError, match=r"'Q' \(U\+0051"):
        bpe.encode("the Quick cat")


def test_bpe_tokenizer_round_trip_merges_and_save_load(tmp_path):
    text = read_corpus(bundled_corpus())[:8000]
    tok = BPETokenizer.train(text, vocab_size=100)
    assert tok.vocab_size == 100
    ids = tok.encode(text)
    assert tok.decode(ids) == text
    assert len(ids) < 0.8 * len(text), "merges must shorten the text"
    tok.save(tmp_path / "bpe.json")
    again = load_tokenizer(tmp_path / "bpe.json")
    assert isinstance(again, BPETokenizer) and again.encode(text) == ids


def test_bpe_tokenizer_falls_back_to_the_unknown_token_and_checks_vocab_size(tmp_path):
    tok = BPETokenizer.train(TEXT, vocab_size=40)
    ids = tok.encode("the Zoo cat é")
    assert tok.count_unknown("the Zoo cat é") == 3, "Z, and each of the two bytes of é"
    assert ids.count(tok.unk_id) == 3 and tok.unknown_characters("the Zoo cat é") == {"Z", "é"}
    assert tok.decode(ids) == "the \ufffdoo cat \ufffd\ufffd"
    tok.save_pretrained(tmp_path)  # tokenizer.json in the folder, as Hugging Face names it
    assert load_tokenizer(tmp_path).encode("the Zoo cat é") == ids
    distinct = len(set(TEXT.encode()))
    with pytest.raises(ValueError, match=f"vocab_size=5 is too small: the corpus has {distinct} distinct bytes"):
        BPETokenizer.train(TEXT, vocab_size=5)


def test_build_tokenizer_options_and_corrupt_file(tmp_path):
    with pytest.raises(ValueError, match="needs a vocab_size"):
        build_tokenizer("bpe", TEXT)
    with pytest.raises(ValueError, match="only applies to the bpe tokenizer"):
        build_tokenizer("char", TEXT, vocab_size=50)
    with pytest.raises(ValueError, match="unknown tokenizer 'word'"):
        build_tokenizer("word", TEXT)
    (tmp_path / "t.json").write_text("{not json")
    with pytest.raises(ValueError, match="is corrupt"):
        load_tokenizer(tmp_path / "t.json")


# --- datasets and batches ---------------------------------------------------------------------------------------
def test_dataset_tokenizes_both_splits_with_one_vocabulary():
    ds = TextDataset.from_text(TEXT)
    train, val = split_text(TEXT)
    assert ds.tokenizer.decode(ds.train_ids.tolist()) == train
    assert ds.tokenizer.decode(ds.val_ids.tolist()) == val
    bpe = TextDataset.from_text(TEXT, tokenizer="bpe", vocab_size=30)
    assert bpe.vocab_size == 30 and bpe.tokenizer.decode(bpe.val_ids.tolist()) == val


def test_dataset_too_short_for_one_window_says_how_long_it_must_be():
    ds = TextDataset.from_text("abcdefghijklmnopqrst", source="short.txt")  # 18 training characters
    ds.check_context(17)
    with pytest.raises(ValueError, match=r"short.txt is too short: .* has 18 tokens, but one context window needs "
                                         r"context_len \+ 1 = 33"):
        ds.check_context(32)


def test_batches_are_shifted_windows_reproducible_by_seed():
    ids = torch.arange(100)
    x, y = BatchSampler(ids, context_len=8, batch_size=4, seed=3).next()
    assert x.shape == y.shape == (4, 8)
    assert torch.equal(y, x + 1)  # ids are their own positions, so the targets are the next ids
    assert torch.equal(x[:, 1:], x[:, :-1] + 1), "each row is one contiguous window"
    x2, _ = BatchSampler(ids, context_len=8, batch_size=4, seed=3).next()
    x3, _ = BatchSampler(ids, context_len=8, batch_size=4, seed=4).next()
    assert torch.equal(x, x2) and not torch.equal(x, x3)


def test_sampler_state_resumes_the_same_batches():
    ids = torch.arange(500)
    a = BatchSampler(ids, 16, 8, seed=0)
    a.next()
    state = a.state_dict()
    expected = [a.next()[0] for _ in range(3)]
    b = BatchSampler(ids, 16, 8, seed=123)
    b.load_state_dict(state)
    assert all(torch.equal(b.next()[0], e) for e in expected)


def test_rank_slices_of_the_global_batch_add_up_to_the_one_process_batch():
    ids = torch.arange(300)
    whole = BatchSampler(ids, 10, 6, seed=1).next()[0]
    parts = [BatchSampler(ids, 10, 6, seed=1, rank=r, world_size=3).next()[0] for r in range(3)]
    assert torch.equal(torch.cat(parts), whole)
    with pytest.raises(ValueError, match="batch_size=6 does not split over 4 processes"):
        BatchSampler(ids, 10, 6, seed=1, rank=0, world_size=4)


def test_saved_char_vocabulary_is_readable_json(tmp_path):
    CharTokenizer.from_text("ab").save(tmp_path / "t.json")
    assert json.loads((tmp_path / "t.json").read_text(encoding="utf-8"))["model"]["vocab"] == {"a": 0, "b": 1, UNKNOWN: 2}
    assert [p.name for p in tmp_path.iterdir()] == ["t.json"], "the atomic write leaves no temporary file"
