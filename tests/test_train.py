"""Training end to end: a QELM learns, its classical twin and parameter-matched classical model train
beside it, a killed run resumes to the same losses, two data-parallel processes equal one, evaluation and
generation are exact and reproducible, and the CLI turns every user error into one line."""

import importlib
import json
import math
import os

import pytest
import torch
import torch.multiprocessing as mp

from qelm import ClassicalLM, QELMConfig
from qelm.checkpoint import CONFIG, WEIGHTS, load_checkpoint
from qelm.cli import main
from qelm.data import TextDataset
from qelm.train import (LOSS_CURVE, METRICS, SUMMARY, _verdict, evaluate, generate_text, read_metrics, train,
                        unigram_baseline)

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
                   twin=False, matched=False, eval_every=60)
    unigram = unigram_baseline(periodic.train_ids, periodic.val_ids, periodic.vocab_size)["loss"]
    assert unigram > 1.9  # ~ln 8: the character frequencies alone say little
    assert result.qelm.val["loss"] < 0.5 * unigram, (result.qelm.val, unigram)
    assert result.qelm.history[0]["loss"] > unigram, "it must have started from ignorance"


def test_run_folder_layout_metrics_and_summary(tmp_path, periodic):
    result = train(tiny(periodic.vocab_size), periodic, steps=4, batch_size=4, out=tmp_path, eval_every=2, save_every=2)
    for name in ("qelm", "twin", "matched"):
        records = read_metrics(tmp_path / name / METRICS)
        assert [r["step"] for r in records] == [1, 2, 3, 4]
        assert all({"step", "loss", "tokens_per_s", "peak_memory_bytes"} <= set(r) for r in records)
        assert [("val_loss" in r, "val_perplexity" in r) for r in records] == [(False, False), (True, True)] * 2
        assert records[-1]["val_perplexity"] == pytest.approx(math.exp(records[-1]["val_loss"]))
    assert load_checkpoint(tmp_path / "twin").kind == "classical"
    summary = json.loads((tmp_path / SUMMARY).read_text())
    assert summary == json.loads(json.dumps(result.summary))
    q, t, m = (summary["models"][n] for n in ("qelm", "twin", "matched"))
    assert q["circuit_parameters"] > 0 and t["circuit_parameters"] == m["circuit_parameters"] == 0
    assert summary["winner"] in ("qelm", "twin", "matched", "tie")
    ppl = {n: summary["models"][n]["val_perplexity"] for n in ("qelm", "twin", "matched")}
    assert summary["winner"] == min(ppl, key=ppl.get)  # these three are far from tied
    # the verdict states the QELM's result against each classical model, as the measured numbers say
    for name, who in (("twin", "its classical twin"), ("matched", "the equally-sized classical model")):
        verb = "beat" if ppl["qelm"] < ppl[name] else "lost to"
        assert f"the QELM {verb} {who}" in summary["verdict"]
        assert f"{ppl['qelm']:.3f} vs {ppl[name]:.3f}" in summary["verdict"]
    assert f"d_model {m['d_model']} and d_hidden {m['d_hidden']}" in summary["method"]
    assert (tmp_path / LOSS_CURVE).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_matched_model_has_the_qelms_parameter_count_and_loads_back_exactly(tmp_path, periodic):
    result = train(tiny(periodic.vocab_size), periodic, steps=3, batch_size=4, out=tmp_path, twin=False)
    qelm, matched = result.qelm.model, result.matched.model
    assert type(matched) is ClassicalLM and matched.circuit_parameters() == 0
    assert abs(matched.num_parameters() - qelm.num_parameters()) <= 0.02 * qelm.num_parameters()
    assert matched.config.d_model < qelm.config.d_model, "shrunk, not the twin"
    assert not (tmp_path / "twin").exists() and result.twin is None
    assert [r["step"] for r in read_metrics(tmp_path / "matched" / METRICS)] == [1, 2, 3]
    ck = load_checkpoint(tmp_path / "matched")
    assert type(ck.model) is ClassicalLM and ck.kind == "classical"
    assert ck.config.d_model == matched.config.d_model and ck.config.d_hidden == matched.config.d_hidden
    idx = periodic.val_ids[:16].view(2, 8)
    matched.eval()
    assert torch.equal(ck.model(idx)[0], matched(idx)[0])
    assert result.summary["models"]["matched"]["val_loss"] == evaluate(ck.model, periodic.val_ids, batch_size=64,
                                                                       context_len=8)["loss"]


def test_a_model_no_classical_model_can_match_fails_before_training(tmp_path):
    wide = TextDataset.from_text("".join(chr(33 + i) for i in range(90)) * 12)  # 90 tokens: the LM head dominates
    cfg = tiny(wide.vocab_size, n_heads=8)  # a classical model needs d_model >= 8 = the QELM's
    with pytest.raises(ValueError, match=r"no classical model .* within 2%.*--no-matched"):
        train(cfg, wide, steps=1, batch_size=2, out=tmp_path)
    assert not (tmp_path / "twin").exists(), "nothing trained before the error"
    assert train(cfg, wide, steps=1, batch_size=2, out=tmp_path, matched=False).matched is None


def test_verdict_says_how_the_qelm_compares_with_each_classical_model():
    def figures(q, t, m):
        return {"qelm": {"val_perplexity": q, "parameters": 400, "circuit_parameters": 48},
                "twin": {"val_perplexity": t, "parameters": 800, "circuit_parameters": 0},
                "matched": {"val_perplexity": m, "parameters": 402, "circuit_parameters": 0}}

    unigram = {"perplexity": 9.0}
    winner, text = _verdict(figures(5.0, 4.0, 6.0), unigram)
    assert winner == "twin"
    assert ("the QELM lost to its classical twin, which has 2.00x its parameters: validation perplexity 5.000 vs "
            "4.000") in text
    assert "the QELM beat the equally-sized classical model (402 parameters vs the QELM's 400, +0.5%)" in text
    assert "better than a classical model of its own size, but not than the larger twin" in text
    winner, text = _verdict(figures(5.0, 4.0, 4.5), unigram)
    assert winner == "twin" and "the QELM lost to the equally-sized" in text
    assert "at equal parameter count the classical model did better" in text
    winner, text = _verdict(figures(3.0, 4.0, 6.0), unigram)
    assert winner == "qelm" and "classical models of its own size and larger" in text
    winner, text = _verdict(figures(5.0, 5.0001, 9.5), unigram)
    assert winner == "tie" and "the QELM tied with its classical twin" in text
    assert "not better than the unigram baseline (9.000): the parameter-matched classical model (9.500)" in text
    only_twin = {n: f for n, f in figures(5.0, 4.0, 6.0).items() if n != "matched"}
    winner, text = _verdict(only_twin, unigram)
    assert winner == "twin" and "does not tell size from circuits" in text and "equally-sized" not in text


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


@pytest.mark.parametrize("killed", ["qelm", "matched"])
def test_resume_after_a_kill_gives_the_same_losses_as_an_uninterrupted_run(tmp_path, periodic, killed):
    cfg = tiny(periodic.vocab_size)
    args = dict(steps=10, batch_size=4, lr=0.02, seed=5, save_every=4, eval_every=5)
    whole = train(cfg, periodic, out=tmp_path / "whole", **args)
    # dies at step 7 of one model: its last checkpoint is step 4; the models before it (twin, then matched) finished
    with pytest.raises(Killed):
        train(cfg, periodic, out=tmp_path / "cut", callback=_kill_at(7, killed), **args)
    assert [r["step"] for r in read_metrics(tmp_path / "cut" / killed / METRICS)] == list(range(1, 8))
    assert (killed == "matched") == (not (tmp_path / "cut" / "qelm" / WEIGHTS).exists())
    resumed = train(None, periodic, out=tmp_path / "cut", resume=True)  # no steps: the planned total
    expected = {"twin": 0, "matched": 6, "qelm": 10} if killed == "matched" else {"twin": 0, "matched": 0, "qelm": 6}
    assert {n: getattr(resumed, n).steps_run for n in expected} == expected
    for name in ("qelm", "twin", "matched"):
        a = read_metrics(tmp_path / "whole" / name / METRICS)
        b = read_metrics(tmp_path / "cut" / name / METRICS)
        assert [r["step"] for r in b] == list(range(1, 11))
        assert [r["loss"] for r in a] == [r["loss"] for r in b], name  # exact, not approximate
        assert [r.get("val_loss") for r in a] == [r.get("val_loss") for r in b], name
    for name in ("qelm", "matched"):
        for p, q in zip(getattr(whole, name).model.state_dict().values(),
                        getattr(resumed, name).model.state_dict().values()):
            assert torch.equal(p, q), name
    for name in ("qelm", "twin", "matched"):
        assert resumed.summary["models"][name]["val_loss"] == whole.summary["models"][name]["val_loss"], name
    assert resumed.summary["verdict"] == whole.summary["verdict"]


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


def test_resume_refuses_a_matched_checkpoint_of_another_shape(tmp_path, periodic, monkeypatch):
    """If the matched config a run derives changed (another qelm version), resuming must not mix models."""
    qtrain = importlib.import_module("qelm.train")  # the module (qelm.train is also the train function)

    cfg = tiny(periodic.vocab_size)
    with pytest.raises(Killed):
        train(cfg, periodic, steps=4, batch_size=4, out=tmp_path, save_every=2, twin=False,
              callback=_kill_at(3, "matched"))
    derived = qtrain.matched_config(cfg)
    monkeypatch.setattr(qtrain, "matched_config", lambda config: derived.replace(d_hidden=derived.d_hidden + 1))
    with pytest.raises(ValueError, match=rf"cannot resume the matched classical .*d_hidden: {derived.d_hidden} vs "
                                         rf"{derived.d_hidden + 1}; saved vs expected"):
        train(None, periodic, out=tmp_path, resume=True)


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
    assert not (tmp_path / "two" / "twin").exists()
    for model in ("qelm", "matched"):  # the matched model trains data-parallel like the QELM
        two = read_metrics(tmp_path / "two" / model / METRICS)
        run = getattr(one, model)
        assert [r["step"] for r in two] == list(range(1, steps + 1))
        assert [r["loss"] for r in two] == pytest.approx(run.losses, rel=1e-5, abs=1e-6)
        assert two[-1]["val_loss"] == pytest.approx(run.val["loss"], rel=1e-5)
        loaded = load_checkpoint(tmp_path / "two" / model).model
        idx = periodic.val_ids[:32].view(4, 8)
        assert torch.allclose(loaded(idx)[0], run.model.eval()(idx)[0], rtol=1e-4, atol=1e-5), model
    # the QELM's weights too; not the classical model's: its attention key bias has a zero gradient (softmax
    # ignores a shift shared by all keys), and AdamW turns that zero's rounding noise into lr-sized steps
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
    table = {line.split("  ")[1]: line for line in stdout.splitlines() if line.startswith("  ") and "  " in line[2:]}
    for name, label in (("qelm", "QELM"), ("twin", "classical twin"), ("matched", "matched classical")):
        m = summary["models"][name]
        assert f"{m['parameters']}" in table[label] and f"{m['val_perplexity']:.3f}" in table[label], label
        rc, stdout, _ = _cli(capsys, "eval", "--checkpoint", str(out / name), "--data", str(corpus), "--json")
        assert rc == 0
        res = json.loads(stdout)
        assert res["perplexity"] == pytest.approx(m["val_perplexity"], rel=1e-9), name
    gen = ["generate", "--checkpoint", str(out / "twin"), "--prompt", "the ", "--max-new-tokens", "20", "--seed", "4"]
    first, second = _cli(capsys, *gen)[1], _cli(capsys, *gen)[1]
    assert first == second and first.startswith("the ") and len(first.rstrip("\n")) == 24
    # --steps is the total: resuming to 6 runs two more steps of each model
    rc, _, _ = _cli(capsys, "train", "--resume", str(out), "--steps", "6")
    assert rc == 0
    assert [[r["step"] for r in read_metrics(out / n / METRICS)][-1] for n in ("qelm", "twin", "matched")] == [6, 6, 6]


def test_cli_bpe_tokenizer(tmp_path, capsys, corpus, config_file):
    rc, _, _ = _cli(capsys, "train", "--data", str(corpus), "--config", str(config_file), "--out", str(tmp_path / "r"),
                    "--tokenizer", "bpe", "--vocab-size", "40", "--steps", "1", "--no-twin", "--no-matched")
    assert rc == 0
    assert sorted(p.name for p in (tmp_path / "r").iterdir() if p.is_dir()) == ["qelm"]
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
