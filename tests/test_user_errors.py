"""The campaign's cases of bad input: each is refused in one line that names what is wrong and how to fix
it (no traceback, exit 2), before any work, and the library raises an error that says the same."""

import os
import sys

import pytest

from qelm import QELM

pytestmark = pytest.mark.usefixtures("_one_thread")


# --- M5: from_pretrained never sends a local path to the Hub ------------------------------------------------
@pytest.fixture
def no_hub(monkeypatch):
    import huggingface_hub
    import huggingface_hub.hub_mixin

    def refuse(*args, **kwargs):
        raise AssertionError("the Hub was asked")

    for module in (huggingface_hub, huggingface_hub.hub_mixin):
        for name in ("snapshot_download", "hf_hub_download"):
            if hasattr(module, name):
                monkeypatch.setattr(module, name, refuse)


@pytest.mark.parametrize("name", ["runs/typo", "./typo", "runs/a/b", "~/no-such-qelm-folder", "../typo"])
def test_from_pretrained_of_a_missing_local_path_fails_here_naming_it(tmp_path, monkeypatch, no_hub, name):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "runs").mkdir()
    with pytest.raises(FileNotFoundError, match=f"folder '{name}' does not exist"):
        QELM.from_pretrained(name)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        QELM.from_pretrained(tmp_path / "runs" / "typo")  # a Path is always local


def test_from_pretrained_of_a_file_says_it_is_a_file(tmp_path, no_hub):
    (tmp_path / "small.txt").write_text("x")
    with pytest.raises(NotADirectoryError, match="is a file, not a folder"):
        QELM.from_pretrained(str(tmp_path / "small.txt"))


def test_a_repo_id_still_goes_to_the_hub(tmp_path, monkeypatch, no_hub):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(AssertionError, match="the Hub was asked"):
        QELM.from_pretrained("someone/qelm-tiny")


# --- T1: shots are bounded where they are parsed and in the config --------------------------------------------
def test_too_many_shots_are_refused_before_any_work(cli, corpus, config_file, tmp_path):
    from qelm import QELMConfig

    huge = "99999999999999999999"
    line = cli.error("train", "--data", corpus, "--config", config_file, "--out", tmp_path / "run", "--shots", huge)
    assert f"--shots {huge} is invalid: use an integer from 1 to 2147483647" in line
    assert not (tmp_path / "run").exists(), "no half-made run folder"
    assert "--shots" in cli.error("eval", "--checkpoint", tmp_path / "none", "--data", corpus, "--shots", huge)
    with pytest.raises(ValueError, match="shots=.* is invalid: use None .* an integer from 1 to 2147483647"):
        QELMConfig(shots=2**70)
    assert "shots" in cli.error("train", "--data", corpus, "--config", config_file, "--out", tmp_path / "run",
                                "--set", f"shots={2**62}")


# --- T2: a BPE vocabulary asked beyond what the corpus yields ---------------------------------------------------
def test_a_huge_bpe_vocabulary_learns_what_the_corpus_yields(cli, corpus, config_file, tmp_path):
    from qelm.tokenizer import BPETokenizer

    text = corpus.read_text()
    assert BPETokenizer.train(text, 10**9).to_json() == BPETokenizer.train(text, 10**6).to_json()
    rc, out, err = cli("train", "--data", corpus, "--config", config_file, "--steps", "1", "--no-twin", "--no-matched",
                       "--out", tmp_path / "run", "--tokenizer", "bpe", "--vocab-size", "1000000000")
    assert rc == 0, err


# --- T3: a full disk is said in one line ---------------------------------------------------------------------
class _Usage:
    total, used, free = 1 << 30, 1 << 30, 0


def test_a_full_disk_during_a_save_is_one_line_and_resume_is_exact(cli, corpus, config_file, tmp_path, monkeypatch):
    import shutil

    import torch

    real_save, calls = torch.save, []

    def save(obj, f, *args, **kwargs):  # torch's own words when the disk fills in the middle of its file
        calls.append(f)
        if len(calls) > 1:
            open(f, "wb").close()
            raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 64 vs 0")
        return real_save(obj, f, *args, **kwargs)

    monkeypatch.setattr(torch, "save", save)
    monkeypatch.setattr(shutil, "disk_usage", lambda path: _Usage())
    run = tmp_path / "run"
    line = cli.error("train", "--data", corpus, "--config", config_file, "--steps", "4", "--save-every", "2",
                     "--no-twin", "--no-matched", "--out", run)
    assert f"no space left on the disk holding '{run / 'qelm'}' (0.0 MiB free)" in line
    monkeypatch.undo()
    rc, _, err = cli("train", "--resume", run, "--steps", "4")
    assert rc == 0, err


def test_a_full_disk_writing_any_file_is_one_line(cli, corpus, config_file, tmp_path, monkeypatch):
    import errno

    import qelm.train.run

    def full(path, *args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    monkeypatch.setattr(qelm.train.run, "atomic_write", full)
    line = cli.error("train", "--data", corpus, "--config", config_file, "--steps", "1", "--no-twin", "--no-matched",
                     "--out", tmp_path / "run")
    assert f"no space left on the disk holding '{tmp_path / 'run'}'" in line


# --- T5: Ctrl-C during a sweep is one line ---------------------------------------------------------------------
def test_ctrl_c_in_a_sweep_trial_prints_interrupted_and_no_traceback(tmp_path, corpus, capfd, monkeypatch):
    pytest.importorskip("optuna")
    import qelm.cli
    import qelm.sweep.study

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(qelm.sweep.study, "run_configuration", interrupted)
    space = tmp_path / "space.toml"
    space.write_text("[sweep]\ntrials = 2\nseeds = [0]\n[train]\nsteps = 1\n[search.model]\nfeed_forward = ['quantum']\n")
    rc = qelm.cli.main(["sweep", "--space", str(space), "--data", str(corpus), "--out", str(tmp_path / "s")])
    out, err = capfd.readouterr()
    assert rc == 130 and err.strip() == "qelm sweep: interrupted", err
