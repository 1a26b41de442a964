"""Penn Treebank in qelm: the word tokenizer against counts derived by hand, the files' checks and download
(from a folder and from a local HTTP server, never the network), the windowed protocol, resume, and the
command line's one-line errors. A small PTB-like fixture stands in for the real files."""

from __future__ import annotations

import functools
import hashlib
import http.server
import json
import math
import threading
from pathlib import Path

import pytest
import torch

from qelm.cli import main
from qelm.ptb import PTBError, check_ptb, fetch_ptb, read_ptb
from qelm.windows import WindowSettings, evaluate_windows, stream_source, train_windows, window_batch
from qelm.words import WordTokenizer, basic_english

TRAIN = [" the cat 's hat , said \"  n. y. \" ( yes ) ; the <unk> : end ", " a dog ! the cat ? ", ""]


def test_basic_english_matches_torchtext_rules():
    assert basic_english(TRAIN[0]) == ["the", "cat", "'", "s", "hat", ",", "said", "n", ".", "y", ".", "(", "yes",
                                       ")", "the", "<unk>", "end"]
    assert basic_english("A<br />B") == ["a", "b"]


def test_vocabulary_counts_derived_by_hand():
    tok = WordTokenizer.build(TRAIN)
    # counts: the 3, cat 2, . 2, then every other word once, alphabetically; <unk> is a special, not counted
    assert tok.vocab[:3] == ["<pad>", "<unk>", "<eos>"]
    assert tok.vocab[3:6] == ["the", ".", "cat"]
    assert tok.vocab[6:] == sorted(["'", "s", "hat", ",", "said", "n", "y", "(", "yes", ")", "end", "a", "dog", "!", "?"])
    assert tok.vocab_size == 3 + 3 + 15


@pytest.mark.parametrize("eos,end", [("eos", "<eos>"), ("quirk", "<unk>")])
def test_sentence_ends(eos, end):
    tok = WordTokenizer.build(TRAIN, eos=eos)
    ids = tok.encode_lines(["the cat", "", "zebra"])  # the empty line gives nothing; zebra is unknown
    assert tok.decode(ids) == f"the cat {end} <unk> {end}"


def test_vocabulary_round_trip_and_bad_file(tmp_path):
    tok = WordTokenizer.build(TRAIN, eos="quirk")
    tok.save(tmp_path / "vocab.json")
    back = WordTokenizer.load(tmp_path / "vocab.json")
    assert back.vocab == tok.vocab and back.eos == "quirk"
    (tmp_path / "bad.json").write_bytes(b"\xff\xfe")
    with pytest.raises(ValueError, match="not a qelm word vocabulary"):
        WordTokenizer.load(tmp_path / "bad.json")


@pytest.mark.skipif(not Path("data/ptb/ptb.train.txt").is_file(), reason="the real PTB files are not in data/ptb "
                    "(qelm data ptb data/ptb fetches them)")
def test_real_ptb_vocabulary_is_the_published_9924():
    splits = read_ptb("data/ptb")
    assert WordTokenizer.build(splits["train"]).vocab_size == 9924


# --- the files ----------------------------------------------------------------------------------------
def _fixture_files(folder: Path) -> dict:
    texts = {"ptb.train.txt": " ".join(TRAIN[:2]) * 40 + "\n", "ptb.valid.txt": " the dog 's hat \n" * 30,
             "ptb.test.txt": " a cat said yes \n" * 30}
    folder.mkdir(parents=True, exist_ok=True)
    files = {}
    for name, text in texts.items():
        (folder / name).write_text(text)
        data = text.encode()
        files[name] = (len(data), hashlib.sha256(data).hexdigest())
    return files


def test_fetch_from_a_folder_and_checks(tmp_path):
    files = _fixture_files(tmp_path / "src")
    fetch_ptb(tmp_path / "dst", str(tmp_path / "src"), files=files)
    check_ptb(tmp_path / "dst", files)
    assert set(read_ptb(tmp_path / "dst", files)) == {"train", "valid", "test"}
    with open(tmp_path / "dst" / "ptb.valid.txt", "a") as f:
        f.write("x")
    with pytest.raises(PTBError, match="ptb.valid.txt.*bytes, not"):
        check_ptb(tmp_path / "dst", files)
    fetch_ptb(tmp_path / "dst", str(tmp_path / "src"), files=files)  # the changed file is fetched again
    check_ptb(tmp_path / "dst", files)
    (tmp_path / "dst" / "ptb.test.txt").unlink()
    with pytest.raises(PTBError, match="ptb.test.txt.*is missing"):
        check_ptb(tmp_path / "dst", files)


def test_fetch_over_http_keeps_nothing_of_a_wrong_file(tmp_path):
    files = _fixture_files(tmp_path / "www")
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(tmp_path / "www"))
    handler.log_message = lambda *a: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/"
        fetch_ptb(tmp_path / "a", url, files=files)
        check_ptb(tmp_path / "a", files)
        wrong = dict(files, **{"ptb.test.txt": (files["ptb.test.txt"][0], "0" * 64)})
        with pytest.raises(PTBError, match="not the Penn Treebank file"):
            fetch_ptb(tmp_path / "b", url, files=wrong)
        assert not (tmp_path / "b" / "ptb.test.txt").exists()
        assert not [p for p in (tmp_path / "b").iterdir() if p.name.startswith(".")]  # no temporary left behind
    finally:
        server.shutdown()


def test_cli_refuses_a_changed_ptb_file_in_one_line(tmp_path, capsys):
    (tmp_path / "ptb").mkdir()
    for name in ("ptb.train.txt", "ptb.valid.txt", "ptb.test.txt"):
        (tmp_path / "ptb" / name).write_text("not penn treebank\n")
    assert main(["ptb", "--model", "lstm", "--data", str(tmp_path / "ptb"), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "ptb.train.txt" in err[0] and "qelm data ptb" in err[0]
    assert not (tmp_path / "o").exists()


# --- the protocol --------------------------------------------------------------------------------------
def test_every_token_is_predicted_once_from_its_full_window():
    ids = torch.arange(1, 1 + 4 * 25 + 1)  # 101 tokens, 4 streams of 25
    src = stream_source(ids, streams=4, window=3, pad_id=0)
    text = torch.cat([torch.zeros(3, dtype=ids.dtype), ids])  # pads before the first token
    targets = []
    for i in range(src.shape[0] - 3):
        x, y = window_batch(src, i, 3)
        targets.append(y)
        for window, target in zip(x, y):  # each window is the 3 tokens before its target in the text
            assert torch.equal(window, text[target - 1 : target + 2])
    assert torch.equal(torch.stack(targets).T.reshape(-1), ids[:100])  # stream-major: the text, each once
    x0, y0 = window_batch(src, 0, 3)
    assert x0[0].tolist() == [0, 0, 0] and y0[0] == 1
    assert x0[1].tolist() == [23, 24, 25] and y0[1] == 26


class _Bigram(torch.nn.Module):
    def __init__(self, v: int) -> None:
        super().__init__()
        self.table = torch.nn.Embedding(v, v)

    def forward(self, idx):
        return self.table(idx[:, -1])


def _data():
    g = torch.Generator().manual_seed(0)
    return {k: torch.randint(1, 12, (n,), generator=g) for k, n in (("train", 400), ("valid", 120), ("test", 120))}


def test_interrupted_run_resumes_to_the_same_result(tmp_path):
    settings = WindowSettings(epochs=4, streams=8, window=4, lr=0.05, restart_steps=100)
    torch.manual_seed(1)
    whole = train_windows(_Bigram(12), _data(), settings, tmp_path / "whole", {"m": 1}, 0, log=lambda m: None)
    torch.manual_seed(1)
    cut = WindowSettings(**settings.__dict__)
    model = _Bigram(12)
    part = train_windows(model, _data(), cut, tmp_path / "cut", {"m": 1}, 0, max_seconds=0.0, log=lambda m: None)
    assert not part["complete"] and part["epochs_done"] == 1
    resumed = train_windows(_Bigram(12), _data(), cut, tmp_path / "cut", {"m": 1}, 0, log=lambda m: None)
    assert resumed["complete"]
    assert resumed["test_ppl"] == pytest.approx(whole["test_ppl"], rel=1e-6)
    assert [h["valid_loss"] for h in resumed["history"]] == pytest.approx([h["valid_loss"] for h in whole["history"]])
    saved = json.loads((tmp_path / "cut" / "results.json").read_text())
    assert saved["best_epoch"] == resumed["best_epoch"] and math.isfinite(saved["test_ppl"])


def test_a_folder_of_another_run_is_refused(tmp_path):
    settings = WindowSettings(epochs=1, streams=8, window=4)
    train_windows(_Bigram(12), _data(), settings, tmp_path, {"model": "a"}, 0, log=lambda m: None)
    with pytest.raises(ValueError, match="other model"):
        train_windows(_Bigram(12), _data(), settings, tmp_path, {"model": "b"}, 0, log=lambda m: None)


def test_evaluation_is_mean_cross_entropy():
    data = _data()["valid"]
    src = stream_source(data, 8, 4, 0)
    model = _Bigram(12)
    with torch.no_grad():
        model.table.weight.zero_()
    assert evaluate_windows(model, src, 4) == pytest.approx(math.log(12))


def test_a_quixer_step_that_cannot_fit_is_refused_before_allocation(tmp_path, capsys, monkeypatch):
    files = _fixture_files(tmp_path / "ptb")
    monkeypatch.setattr("qelm.ptb.PTB_FILES", files)
    code = main(["ptb", "--model", "quixer", "--n-qubits", "16", "--data", str(tmp_path / "ptb"),
                 "--out", str(tmp_path / "o"), "--streams", "64", "--dim", "8"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "--streams" in err[0] and "GiB" in err[0], err
    assert not (tmp_path / "o").exists()


def test_a_folder_holding_user_files_is_refused_before_anything_is_written(tmp_path, capsys):
    """The one rule for folders a command writes (qelm.folders) holds for qelm ptb too."""
    out = tmp_path / "o"
    out.mkdir()
    (out / "notes.txt").write_text("mine\n")
    (out / "results.json").symlink_to(tmp_path / "elsewhere.json")
    assert main(["ptb", "--model", "lstm", "--data", str(tmp_path / "ptb"), "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "notes.txt" in err[0] and "results.json" in err[0], err
    assert sorted(p.name for p in out.iterdir()) == ["notes.txt", "results.json"]
    assert (out / "notes.txt").read_text() == "mine\n" and not (tmp_path / "elsewhere.json").exists()


@pytest.mark.parametrize("name", ["quixer", "quixer-twin", "transformer", "lstm", "fnet", "qelm", "qelm-matched"])
def test_every_row_of_the_table_builds_and_predicts_the_next_token(name):
    from qelm.ptb_models import build_window_model

    torch.manual_seed(0)
    model = build_window_model(name, 30, dim=8, window=4, n_qubits=2, ansatz_layers=1)
    x = torch.randint(0, 30, (3, 4))
    logits = model(x)
    assert logits.shape == (3, 30) and torch.isfinite(logits).all()
    torch.nn.functional.cross_entropy(logits, torch.tensor([1, 2, 3])).backward()
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)


def test_cli_refuses_a_run_folder_of_another_protocol_in_one_line(tmp_path, capsys, monkeypatch):
    files = _fixture_files(tmp_path / "ptb")
    monkeypatch.setattr("qelm.ptb.PTB_FILES", files)
    base = ["ptb", "--model", "lstm", "--data", str(tmp_path / "ptb"), "--out", str(tmp_path / "o"), "--streams", "8",
            "--epochs", "1", "--dim", "4"]
    assert main(base) == 0
    before = sorted(p.name for p in (tmp_path / "o").iterdir())
    capsys.readouterr()
    assert main(base + ["--eos", "quirk"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "other eos" in err[0] and "--out" in err[0], err
    assert sorted(p.name for p in (tmp_path / "o").iterdir()) == before
