"""qelm.evaluate: evaluation scores every token exactly once, the unigram baseline is the smoothed
frequency cross-entropy, and generation is reproducible by seed, streams the tokens QELM.generate samples,
and refuses settings that cannot be meant."""

import json
import math

import pytest
import torch

from qelm import QELM, ClassicalLM
from qelm.data import TextDataset
from qelm.tokenizer import CharTokenizer
from qelm.evaluate import (bits_per_unit, distinct_n, evaluate, generate_text, next_token_accuracy, repetition_rate,
                           sample_diversity, sample_tokens, stream_text, text_diversity, unigram_baseline)


@pytest.fixture
def config(tiny_config, periodic):
    return tiny_config.replace(vocab_size=periodic.vocab_size, context_len=8)


def test_evaluate_scores_every_token_once_whatever_the_batch(periodic, config):
    torch.manual_seed(0)
    model = ClassicalLM(config).eval()
    ids = periodic.val_ids[:30]  # 29 targets: 3 full windows of 8 and a window of 5
    total, count = 0.0, 0
    for start in range(0, 29, 8):  # the loop lives only here, in the test
        window = ids[start:start + 9]
        logits, _ = model(window[None, :-1])
        total += torch.nn.functional.cross_entropy(logits[0], window[1:], reduction="sum").item()
        count += len(window) - 1
    for batch_size in (1, 2, 64):
        res = evaluate(model, ids, batch_size=batch_size, context_len=8)
        assert res["tokens"] == count == 29
        assert res["loss"] == pytest.approx(total / count, rel=1e-6)
        assert res["perplexity"] == pytest.approx(math.exp(total / count))


def test_unigram_baseline_is_smoothed_frequency_cross_entropy():
    res = unigram_baseline(torch.tensor([0, 0, 0, 1]), torch.tensor([2, 0, 1]), vocab_size=3)
    p = torch.tensor([4.0, 2.0, 1.0]) / 7  # add-one counts
    assert res["loss"] == pytest.approx(-(p[0].log() + p[1].log()).item() / 2)
    assert res["tokens"] == 2


def test_generation_is_reproducible_by_seed_and_names_unknown_characters(periodic, config):
    model = QELM(config)
    a = generate_text(model, periodic.tokenizer, "hel", max_new_tokens=12, seed=1)
    b = generate_text(model, periodic.tokenizer, "hel", max_new_tokens=12, seed=1)
    others = {generate_text(model, periodic.tokenizer, "hel", max_new_tokens=12, seed=s) for s in range(2, 6)}
    assert a == b and len(periodic.tokenizer.encode(a)) == 12
    assert others - {a}, "different seeds must be able to give different text"
    long_prompt = "hello world. " * 2  # longer than the context: the window slides
    assert len(generate_text(model, periodic.tokenizer, long_prompt, max_new_tokens=3, seed=0)) == 3
    assert len(generate_text(model, periodic.tokenizer, "hello X", max_new_tokens=3, seed=0)) == 3, \
        "a character outside the vocabulary is read as the unknown token"
    older = CharTokenizer(periodic.tokenizer.chars)  # the same vocabulary without an unknown token (older qelm)
    with pytest.raises(ValueError, match=r"'X' \(U\+0058"):
        generate_text(model, older, "hello X", seed=0)
    with pytest.raises(ValueError, match="temperature=-1"):
        generate_text(model, periodic.tokenizer, "hel", temperature=-1)


@pytest.mark.parametrize("settings", [dict(), dict(temperature=0.5, top_k=3), dict(temperature=1e-9),
                                      dict(top_p=0.7, min_p=0.1, repetition_penalty=1.4)])
def test_streamed_tokens_are_the_ones_generate_samples(periodic, config, settings):
    model = QELM(config).eval()
    prompt = periodic.tokenizer.encode("hello w")  # 7 of 8 context tokens: the window slides at once
    streamed = list(sample_tokens(model, prompt, max_new_tokens=20, seed=4, **settings))
    whole = model.generate(torch.tensor([prompt]), 20, generator=torch.Generator().manual_seed(4), **settings)
    assert streamed == whole[0, len(prompt):].tolist()


def test_streamed_text_joins_to_the_generated_text_and_holds_back_split_characters(tiny_config):
    ds = TextDataset.from_text("caf\u00e9 \u00fcber na\u00efve \U0001f600 " * 40, tokenizer="bpe", vocab_size=40)
    model = ClassicalLM(tiny_config.replace(vocab_size=ds.vocab_size)).eval()
    for seed in range(3):
        pieces = list(stream_text(model, ds.tokenizer, "caf", max_new_tokens=40, seed=seed))
        assert "".join(pieces) == generate_text(model, ds.tokenizer, "caf", max_new_tokens=40, seed=seed)
        assert len(pieces) > 10, "text comes piece by piece"
        whole = "".join(pieces)
        assert sum(p.count("\ufffd") for p in pieces) == whole.count("\ufffd")


@pytest.mark.parametrize("setting, message", [
    (dict(temperature=math.inf), "temperature=inf is invalid"),
    (dict(temperature=-0.5), "temperature=-0.5 is invalid"),
    (dict(max_new_tokens=-3), "max_new_tokens=-3 is invalid"),
    (dict(seed=2**63), "seed=9223372036854775808 is invalid: use an integer from 0 to"),
    (dict(seed=-1), "seed=-1 is invalid"),
])
def test_generation_refuses_settings_before_sampling(periodic, config, setting, message):
    with pytest.raises(ValueError, match=message):
        stream_text(QELM(config), periodic.tokenizer, "hel", **setting)  # before the first token, not on iteration


def test_stop_strings_end_the_text_and_are_left_out(periodic, config):
    model = QELM(config).eval()
    full = generate_text(model, periodic.tokenizer, "hel", max_new_tokens=60, seed=3)
    stop = next(full[i:i + 2] for i in range(1, len(full) - 1) if full[i:i + 2].strip())  # a pair sampled in it
    cut = generate_text(model, periodic.tokenizer, "hel", max_new_tokens=60, seed=3, stop=[stop, "not sampled"])
    assert cut == full[:full.index(stop)], "the text up to the first stop string, without it"
    pieces = list(stream_text(model, periodic.tokenizer, "hel", max_new_tokens=60, seed=3, stop=stop))
    assert "".join(pieces) == cut and all(p for p in pieces)
    assert generate_text(model, periodic.tokenizer, "hel", max_new_tokens=60, seed=3, stop="qq") == full, \
        "text held back as a possible start of a stop string comes out once it is not one"
    for bad in ("", ["a", ""], [3]):
        with pytest.raises(ValueError, match="stop string .* is invalid"):
            stream_text(model, periodic.tokenizer, "hel", stop=bad)


# --- the metrics models are compared by ---------------------------------------------------------------------
def test_bits_per_character_is_the_loss_in_bits_per_scored_character(periodic):
    ids = periodic.val_ids[:21]  # 20 scored characters
    bits, unit = bits_per_unit(1.5, ids, periodic.tokenizer)
    assert unit == "character" and bits == pytest.approx(1.5 / math.log(2))
    bpe = TextDataset.from_text("héllo wörld. " * 40, tokenizer="bpe", vocab_size=30)
    ids = bpe.val_ids
    scored = bpe.tokenizer.decode(ids[1:].tolist()).encode("utf-8")
    bits, unit = bits_per_unit(2.0, ids, bpe.tokenizer)
    assert unit == "byte" and len(scored) > len(ids) - 1  # BPE tokens cover several bytes each
    assert bits == pytest.approx(2.0 * (len(ids) - 1) / math.log(2) / len(scored))


def test_next_token_accuracy_counts_top1_and_top5_over_the_evaluated_tokens(periodic, config):
    torch.manual_seed(0)
    model = ClassicalLM(config).eval()
    ids = periodic.val_ids[:30]
    hits1 = hits5 = 0
    for start in range(0, 29, 8):  # evaluate's windows, written out here
        window = ids[start:start + 9]
        logits, _ = model(window[None, :-1])
        order = logits[0].argsort(dim=-1, descending=True)  # (t, V)
        hits1 += int((order[:, 0] == window[1:]).sum())
        hits5 += int((order[:, :5] == window[1:, None]).any(-1).sum())
    for batch_size in (1, 64):
        acc = next_token_accuracy(model, ids, batch_size=batch_size, context_len=8)
        assert acc == {"top1_accuracy": hits1 / 29, "top5_accuracy": hits5 / 29}
    assert 0 <= hits1 <= hits5 <= 29


def test_diversity_of_words_distinct_n_and_repetition():
    assert distinct_n(["a", "b", "a", "b"], 1) == 0.5
    assert distinct_n(["a", "b", "a", "b"], 2) == pytest.approx(2 / 3)  # (a b) (b a) (a b)
    assert distinct_n(["a"], 2) is None
    loop = "the cat sat . " * 10
    fresh = " ".join(f"w{i}" for i in range(40))
    assert repetition_rate(fresh.split()) == 0.0
    assert repetition_rate(loop.split()) == pytest.approx(1 - 4 / 37)  # 4 distinct 4-grams among 37
    d = text_diversity(loop)
    assert d["words"] == 40 and d["distinct_1"] == pytest.approx(4 / 40) and d["repetition_rate"] > 0.85


def test_sample_diversity_is_reproducible_by_seed(periodic, config):
    model = QELM(config)
    a = sample_diversity(model, periodic.tokenizer, periodic.val_ids[:1], max_new_tokens=30, seed=3)
    b = sample_diversity(model, periodic.tokenizer, periodic.val_ids[:1], max_new_tokens=30, seed=3)
    assert a == b and len(a["text"]) == 30 and model.training
    assert a["words"] == len(a["text"].split())


def test_cli_eval_prints_every_metric(tmp_path, cli, periodic, config):
    from qelm.checkpoint import save_checkpoint

    corpus = tmp_path / "corpus.txt"
    tok = periodic.tokenizer
    corpus.write_text(tok.decode(periodic.train_ids.tolist()) + tok.decode(periodic.val_ids.tolist()), encoding="utf-8")
    model = ClassicalLM(config)
    save_checkpoint(tmp_path / "ck", model, periodic.tokenizer)
    rc, out, _ = cli("eval", "--checkpoint", tmp_path / "ck", "--data", corpus, "--json", "--sample-tokens", "50")
    res = json.loads(out)
    assert rc == 0
    ids = periodic.val_ids
    assert res["bits_per_character"] == pytest.approx(res["loss"] / math.log(2))  # char tokens: one per character
    assert res["top1_accuracy"] == next_token_accuracy(model, ids, batch_size=64, context_len=8)["top1_accuracy"]
    assert res["top1_accuracy"] <= res["top5_accuracy"] and res["sample_tokens"] == 50
    sample = sample_diversity(model, periodic.tokenizer, ids[:1], max_new_tokens=50, seed=0)
    assert (res["distinct_1"], res["distinct_2"], res["repetition_rate"]) == \
        (sample["distinct_1"], sample["distinct_2"], sample["repetition_rate"])
    rc, out, _ = cli("eval", "--checkpoint", tmp_path / "ck", "--data", corpus, "--sample-tokens", "0")
    assert rc == 0 and "bits per character" in out and "top-5" in out and "distinct" not in out
    assert "must be" not in cli.error("eval", "--checkpoint", tmp_path / "ck", "--data", corpus, "--sample-tokens", "-1")
