"""Training end to end: a QELM learns, a killed run resumes to the same losses, two data-parallel processes
equal one, evaluation and generation are exact and reproducible, and the CLI turns every user error into
one line."""

import json
import math
import os

import pytest
import torch
import torch.multiprocessing as mp

from qelm import QELMConfig
from qelm.checkpoint import CONFIG, WEIGHTS, load_checkpoint
from qelm.cli import main
from qelm.data import TextDataset
from qelm.train import LOSS_CURVE, METRICS, SUMMARY, evaluate, generate_text, read_metrics, train, unigram_baseline

PERIODIC = "hello world. " * 60  # 9 characters; which one follows 'l' or 'o' depends on context


def tiny(vocab_size: int, **changes) -> QELMConfig:
    cfg = dict(vocab_size=vocab_size, d_model=8, n_heads=2, d_hidden=16, n_layers=1, context_len=8, n_qubits=2,
               circuit_layers=1)
    return QELMConfig(**{**cfg, **changes})


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    """These models' tensors are tiny: one torch thread is fastest, and far faster on a busy machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def periodic():
    return TextDataset.from_text(PERIODIC)


@pytest.fixture
def corpus(tmp_path):
    path = tmp_path / "corpus.txt"
    path.write_text("the cat sat on the mat. the dog ran to the log. a hen and a fox.\n" * 8, encoding="utf-8")
    return path


@pytest.fixture
def config_file(tmp_path):
    path = tmp_path / "tiny.toml"
    path.write_text('[model]\nd_model = 8\nn_heads = 2\nd_hidden = 16\ncontext_len = 8\nn_qubits = 2\n'
                    'circuit_layers = 1\n\n[train]\nsteps = 4\nbatch_size = 4\neval_every = 2\nsave_every = 2\n')
    return path


# --- learning ---------------------------------------------------------------------------------------------------
def test_qelm_learns_a_periodic_text_far_below_the_unigram_entropy(tmp_path, periodic):
    result = train(tiny(periodic.vocab_size), periodic, steps=120, batch_size=8, lr=0.03, seed=0, out=tmp_path,
                   twin=False, eval_every=60)
    unigram = unigram_baseline(periodic.train_ids, periodic.val_ids, periodic.vocab_size)["loss"]
    assert unigram > 1.9  # ~ln 8: the character frequencies alone say little
    assert result.qelm.val["loss"] < 0.5 * unigram, (result.qelm.val, unigram)
    assert result.qelm.history[0]["loss"] > unigram, "it must have started from ignorance"


def test_run_folder_layout_metrics_and_summary(tmp_path, periodic):
    result = train(tiny(periodic.vocab_size), periodic, steps=4, batch_size=4, out=tmp_path, eval_every=2, save_every=2)
    for name in ("qelm", "twin"):
        records = read_metrics(tmp_path / name / METRICS)
        assert [r["step"] for r in records] == [1, 2, 3, 4]
        assert all({"step", "loss", "tokens_per_s", "peak_memory_bytes"} <= set(r) for r in records)
        assert [("val_loss" in r, "val_perplexity" in r) for r in records] == [(False, False), (True, True)] * 2
        assert records[-1]["val_perplexity"] == pytest.approx(math.exp(records[-1]["val_loss"]))
    assert load_checkpoint(tmp_path / "twin").kind == "classical"
    summary = json.loads((tmp_path / SUMMARY).read_text())
    assert summary == json.loads(json.dumps(result.summary))
    q, t = summary["models"]["qelm"], summary["models"]["twin"]
    assert q["circuit_parameters"] > 0 and t["circuit_parameters"] == 0
    assert summary["winner"] in ("qelm", "twin", "tie")
    better = min((q["val_perplexity"], "qelm"), (t["val_perplexity"], "twin"))[1]
    assert summary["winner"] == better
    assert (tmp_path / LOSS_CURVE).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_existing_run_is_not_overwritten_by_accident(tmp_path, periodic):
    train(tiny(periodic.vocab_size), periodic, steps=1, batch_size=2, out=tmp_path, twin=False)
    with pytest.raises(ValueError, match="already holds a training run: resume it"):
        train(tiny(periodic.vocab_size), periodic, steps=1, batch_size=2, out=tmp_path, twin=False)
    train(tiny(periodic.vocab_size), periodic, steps=1, batch_size=2, out=tmp_path, twin=False, overwrite=True)


# --- exact resume -----------------------------------------------------------------------------------------------
class Killed(Exception):
    pass


def _kill_at(step_to_die, model="qelm"):
    def callback(event, name, info):
        if event == "step" and name == model and info["step"] == step_to_die:
            raise Killed
    return callback


def test_resume_after_a_kill_gives_the_same_losses_as_an_uninterrupted_run(tmp_path, periodic):
    cfg = tiny(periodic.vocab_size)
    args = dict(steps=10, batch_size=4, lr=0.02, seed=5, save_every=4, eval_every=5)
    whole = train(cfg, periodic, out=tmp_path / "whole", **args)
    with pytest.raises(Killed):  # dies at step 7 of the QELM: its last checkpoint is step 4; the twin finished
        train(cfg, periodic, out=tmp_path / "cut", callback=_kill_at(7), **args)
    assert [r["step"] for r in read_metrics(tmp_path / "cut" / "qelm" / METRICS)] == list(range(1, 8))
    resumed = train(None, periodic, out=tmp_path / "cut", resume=True)  # no steps: the planned total
    assert resumed.qelm.steps_run == 6 and resumed.twin.steps_run == 0
    for name in ("qelm", "twin"):
        a = read_metrics(tmp_path / "whole" / name / METRICS)
        b = read_metrics(tmp_path / "cut" / name / METRICS)
        assert [r["step"] for r in b] == list(range(1, 11))
        assert [r["loss"] for r in a] == [r["loss"] for r in b], name  # exact, not approximate
        assert [r.get("val_loss") for r in a] == [r.get("val_loss") for r in b], name
    for p, q in zip(whole.qelm.model.state_dict().values(), resumed.qelm.model.state_dict().values()):
        assert torch.equal(p, q)


def test_resume_refuses_what_would_change_the_numbers(tmp_path, periodic, corpus):
    cfg = tiny(periodic.vocab_size)
    train(cfg, periodic, steps=4, batch_size=4, lr=0.02, out=tmp_path, save_every=2, twin=False)
    with pytest.raises(ValueError, match="cannot resume with lr=0.05: the run was trained with lr=0.02"):
        train(None, periodic, out=tmp_path, resume=True, steps=6, lr=0.05)
    with pytest.raises(ValueError, match=r"different model config \(d_hidden: 16 vs 32"):
        train(cfg.replace(d_hidden=32), periodic, out=tmp_path, resume=True, steps=6)
    with pytest.raises(ValueError, match="cannot resume on a different corpus"):
        train(None, TextDataset.from_text(PERIODIC + "hello"), out=tmp_path, resume=True, steps=6)
    with pytest.raises(ValueError, match="already took 4 steps, more than steps=3"):
        train(None, periodic, out=tmp_path, resume=True, steps=3)
    with pytest.raises(FileNotFoundError, match="nothing to resume"):
        train(None, periodic, out=tmp_path / "empty", resume=True, steps=6)


# --- data parallel ----------------------------------------------------------------------------------------------
def _ddp_worker(rank, world, rendezvous, out, steps):
    import torch.distributed as dist

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{rendezvous}", rank=rank, world_size=world)
    try:
        ds = TextDataset.from_text(PERIODIC)
        train(tiny(ds.vocab_size), ds, steps=steps, batch_size=4, lr=0.02, seed=3, out=out, twin=False, eval_every=steps)
    finally:
        dist.destroy_process_group()


def test_two_processes_equal_one_with_the_same_global_batch(tmp_path, periodic):
    steps = 4
    one = train(tiny(periodic.vocab_size), periodic, steps=steps, batch_size=4, lr=0.02, seed=3, out=tmp_path / "one",
                twin=False, eval_every=steps)
    mp.spawn(_ddp_worker, args=(2, str(tmp_path / "rendezvous"), str(tmp_path / "two"), steps), nprocs=2, join=True)
    two = read_metrics(tmp_path / "two" / "qelm" / METRICS)
    assert [r["step"] for r in two] == list(range(1, steps + 1))
    assert [r["loss"] for r in two] == pytest.approx(one.qelm.losses, rel=1e-5, abs=1e-6)
    assert two[-1]["val_loss"] == pytest.approx(one.qelm.val["loss"], rel=1e-5)
    assert not (tmp_path / "two" / "twin").exists()
    weights = load_checkpoint(tmp_path / "two" / "qelm").model.state_dict()
    for name, p in one.qelm.model.state_dict().items():
        assert torch.allclose(p, weights[name], rtol=1e-4, atol=1e-6), name


# --- evaluation and generation ----------------------------------------------------------------------------------
def test_evaluate_scores_every_token_once_whatever_the_batch(periodic):
    torch.manual_seed(0)
    from qelm import ClassicalLM

    model = ClassicalLM(tiny(periodic.vocab_size)).eval()
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


def test_generation_is_reproducible_by_seed_and_names_unknown_characters(periodic):
    from qelm import QELM

    model = QELM(tiny(periodic.vocab_size))
    a = generate_text(model, periodic.tokenizer, "hel", max_new_tokens=12, seed=1)
    b = generate_text(model, periodic.tokenizer, "hel", max_new_tokens=12, seed=1)
    others = {generate_text(model, periodic.tokenizer, "hel", max_new_tokens=12, seed=s) for s in range(2, 6)}
    assert a == b and len(periodic.tokenizer.encode(a)) == 12
    assert others - {a}, "different seeds must be able to give different text"
    long_prompt = "hello world. " * 2  # longer than the context: the window slides
    assert len(generate_text(model, periodic.tokenizer, long_prompt, max_new_tokens=3, seed=0)) == 3
    with pytest.raises(ValueError, match=r"'X' \(U\+0058"):
        generate_text(model, periodic.tokenizer, "hello X", seed=0)
    with pytest.raises(ValueError, match="temperature=0"):
        generate_text(model, periodic.tokenizer, "hel", temperature=0)


# --- command line -----------------------------------------------------------------------------------------------
def _cli(capsys, *argv):
    rc = main(list(argv))
    out, err = capsys.readouterr()
    return rc, out, err


def _user_error(capsys, *argv):
    rc, out, err = _cli(capsys, *argv)
    lines = [line for line in err.splitlines() if line.strip()]
    assert rc == 2, (rc, out, err)
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


def test_cli_train_eval_generate(tmp_path, capsys, corpus, config_file):
    out = tmp_path / "run"
    rc, stdout, _ = _cli(capsys, "train", "--data", str(corpus), "--config", str(config_file), "--out", str(out))
    assert rc == 0
    assert "Result: the " in stdout and "won" in stdout or "tie" in stdout
    summary = json.loads((out / SUMMARY).read_text())
    assert summary["run"]["steps"] == 4 and summary["run"]["batch_size"] == 4  # from the config's [train] table
    rc, stdout, _ = _cli(capsys, "eval", "--checkpoint", str(out / "qelm"), "--data", str(corpus), "--json")
    assert rc == 0
    res = json.loads(stdout)
    assert res["perplexity"] == pytest.approx(summary["models"]["qelm"]["val_perplexity"], rel=1e-9)
    gen = ["generate", "--checkpoint", str(out / "twin"), "--prompt", "the ", "--max-new-tokens", "20", "--seed", "4"]
    first, second = _cli(capsys, *gen)[1], _cli(capsys, *gen)[1]
    assert first == second and first.startswith("the ") and len(first.rstrip("\n")) == 24
    # --steps is the total: resuming to 6 runs two more steps of each model
    rc, _, _ = _cli(capsys, "train", "--resume", str(out), "--steps", "6")
    assert rc == 0 and [r["step"] for r in read_metrics(out / "qelm" / METRICS)][-1] == 6


def test_cli_bpe_tokenizer(tmp_path, capsys, corpus, config_file):
    rc, _, _ = _cli(capsys, "train", "--data", str(corpus), "--config", str(config_file), "--out", str(tmp_path / "r"),
                    "--tokenizer", "bpe", "--vocab-size", "40", "--steps", "1", "--no-twin")
    assert rc == 0
    ck = load_checkpoint(tmp_path / "r" / "qelm")
    assert ck.tokenizer.kind == "bpe" and ck.config.vocab_size == 40


@pytest.mark.parametrize("content, message", [
    (None, "does not exist"),
    (b"", "is empty"),
    (b"\x89PNG\r\n\x1a\n\x00\x00", "looks binary"),
    (b"\xff\xfe caf\xe9", "is not UTF-8 text"),
    (b"too short", "is too short: its training part"),
])
def test_cli_corpus_errors(tmp_path, capsys, config_file, content, message):
    path = tmp_path / "corpus.txt"
    if content is not None:
        path.write_bytes(content)
    line = _user_error(capsys, "train", "--data", str(path), "--config", str(config_file), "--out", str(tmp_path / "o"))
    assert line.startswith("qelm train: error:") and message in line and "corpus.txt" in line


def test_cli_prompt_outside_vocabulary_says_which_characters(tmp_path, capsys, corpus, config_file):
    assert _cli(capsys, "train", "--data", str(corpus), "--config", str(config_file), "--out", str(tmp_path / "r"),
                "--steps", "1", "--no-twin")[0] == 0
    line = _user_error(capsys, "generate", "--checkpoint", str(tmp_path / "r" / "qelm"), "--prompt", "the Cat!")
    assert "'C' (U+0043" in line and "'!' (U+0021" in line


def test_cli_checkpoint_errors(tmp_path, capsys, corpus, config_file):
    run = tmp_path / "r"
    assert _cli(capsys, "train", "--data", str(corpus), "--config", str(config_file), "--out", str(run),
                "--steps", "1", "--no-twin")[0] == 0
    ck = run / "qelm"
    config = (ck / CONFIG).read_text()
    (ck / CONFIG).write_text(config.replace("n_qubits = 2", "n_qubits = 3"))
    line = _user_error(capsys, "eval", "--checkpoint", str(ck), "--data", str(corpus))
    assert "does not match config.toml" in line and "n_qubits=3" in line
    (ck / CONFIG).write_text(config)
    (ck / WEIGHTS).write_bytes(b"\x00" * 40)
    line = _user_error(capsys, "generate", "--checkpoint", str(ck), "--prompt", "the")
    assert "is corrupt: model.safetensors cannot be read" in line
    line = _user_error(capsys, "eval", "--checkpoint", str(run), "--data", str(corpus))
    assert "training run folder" in line


def test_cli_resume_with_another_config_names_the_field(tmp_path, capsys, corpus, config_file):
    run = tmp_path / "r"
    assert _cli(capsys, "train", "--data", str(corpus), "--config", str(config_file), "--out", str(run),
                "--steps", "2", "--no-twin")[0] == 0
    other = tmp_path / "other.toml"
    other.write_text(config_file.read_text().replace("d_hidden = 16", "d_hidden = 24"))
    line = _user_error(capsys, "train", "--resume", str(run), "--config", str(other), "--steps", "3")
    assert "different model config (d_hidden: 16 vs 24; saved vs given)" in line


def test_cli_output_folder_not_writable(tmp_path, capsys, corpus, config_file):
    (tmp_path / "file").write_text("x")
    line = _user_error(capsys, "train", "--data", str(corpus), "--config", str(config_file),
                       "--out", str(tmp_path / "file" / "run"))
    assert "is not writable" in line and "--out" in line


def test_cli_backend_unavailable(tmp_path, capsys, corpus, config_file):
    try:
        import pennylane_lightning_gpu  # noqa: F401
        pytest.skip("lightning.gpu is installed here")
    except ImportError:
        pass
    line = _user_error(capsys, "train", "--data", str(corpus), "--config", str(config_file), "--out",
                       str(tmp_path / "r"), "--backend", "lightning.gpu")
    assert "lightning.gpu" in line and "pip install" in line
    line = _user_error(capsys, "train", "--data", str(corpus), "--config", str(config_file), "--out",
                       str(tmp_path / "r"), "--backend", "no.such")
    assert "unknown backend 'no.such'" in line or "backend='no.such'" in line


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() == 0, reason="root can write into read-only folders")
def test_cli_read_only_output_folder(tmp_path, capsys, corpus, config_file):
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    line = _user_error(capsys, "train", "--data", str(corpus), "--config", str(config_file), "--out", str(locked / "r"))
    assert "is not writable" in line
