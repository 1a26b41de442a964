"""Training end to end (qelm.train): a QELM learns, its classical twin and parameter-matched classical
model train beside it, a killed run resumes to the same losses, settings resolve by precedence, and the
CLI turns every user error into one line."""

import errno
import itertools
import json
import math
import os
import socket
import tempfile
from pathlib import Path

import pytest
import torch

import qelm.cli
import qelm.cli.progress
import qelm.memory
import qelm.train.run
import qelm.train.steps
from qelm import ClassicalLM, QELMConfig, TrainOverrides
from qelm.checkpoint import load_checkpoint
from qelm.data import TextDataset
from qelm.evaluate import evaluate, unigram_baseline
from qelm.files import FolderInUse, FolderLock
from qelm.metrics import read_metrics
from qelm.model_files import BEST, CONFIG, MANIFEST, TOKENIZER, WEIGHTS
from qelm.train import LOSS_CURVE, METRICS, SUMMARY, TRAIN_DEFAULTS, train
from qelm.train.settings import resolve_settings
from qelm.train.run import LOCK

pytestmark = pytest.mark.usefixtures("_one_thread")


def tiny(vocab_size: int, **changes) -> QELMConfig:
    cfg = dict(vocab_size=vocab_size, d_model=8, n_heads=2, d_hidden=16, n_layers=1, context_len=8, n_qubits=2,
               circuit_layers=1)
    return QELMConfig(**{**cfg, **changes})



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


def test_existing_run_is_not_overwritten_by_accident(tmp_path, periodic):
    train(tiny(periodic.vocab_size), periodic, steps=1, batch_size=2, out=tmp_path, twin=False)
    with pytest.raises(ValueError, match="already holds a training run: resume it"):
        train(tiny(periodic.vocab_size), periodic, steps=1, batch_size=2, out=tmp_path, twin=False)
    train(tiny(periodic.vocab_size), periodic, steps=1, batch_size=2, out=tmp_path, twin=False, overwrite=True)


def test_settings_come_as_a_dataclass_or_as_keywords(tmp_path, periodic):
    cfg = tiny(periodic.vocab_size)
    settings = TrainOverrides(steps=3, batch_size=4, lr=0.02, twin=False, matched=False)
    by_dataclass = train(cfg, periodic, settings, out=tmp_path / "a")
    by_keywords = train(cfg, periodic, out=tmp_path / "b", steps=3, batch_size=4, lr=0.02, twin=False, matched=False)
    assert by_dataclass.qelm.losses == by_keywords.qelm.losses and len(by_dataclass.qelm.losses) == 3
    assert by_dataclass.summary["run"] == by_keywords.summary["run"]
    # a keyword overrides the dataclass's field; None leaves it alone
    mixed = train(cfg, periodic, settings, out=tmp_path / "c", steps=2, lr=None)
    assert mixed.summary["run"]["steps"] == 2 and mixed.summary["run"]["lr"] == 0.02
    with pytest.raises(TypeError, match="unexpected keyword argument 'step'"):
        train(cfg, periodic, settings, out=tmp_path / "d", step=2)
    with pytest.raises(ValueError, match="steps=0 is invalid"):
        train(cfg, periodic, settings.replace(steps=0), out=tmp_path / "e")


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
        assert resumed.summary["models"][name]["best"] == whole.summary["models"][name]["best"], name
        a, b = load_checkpoint(tmp_path / "whole" / name / BEST), load_checkpoint(tmp_path / "cut" / name / BEST)
        assert a.info == b.info and all(torch.equal(p, q) for p, q in zip(a.model.state_dict().values(),
                                                                          b.model.state_dict().values())), name
    assert resumed.summary["verdict"] == whole.summary["verdict"]


def test_learning_rate_warms_up_then_decays_on_a_cosine(tmp_path, periodic):
    result = train(tiny(periodic.vocab_size), periodic, steps=20, batch_size=2, lr=0.02, warmup_steps=4, out=tmp_path,
                   twin=False, matched=False)
    lrs = [r["lr"] for r in result.qelm.history]
    assert lrs[:4] == pytest.approx([0.005, 0.01, 0.015, 0.02]), "linear warm-up to lr"
    assert all(a > b for a, b in itertools.pairwise(lrs[3:])) and lrs[-1] == pytest.approx(0.002), "cosine down to lr / 10"
    assert lrs[4 + 8] == pytest.approx(0.002 + 0.018 * 0.5 * (1 + math.cos(math.pi * 9 / 16)))
    assert result.summary["run"]["lr_schedule"] == "cosine" and result.summary["run"]["warmup_steps"] == 4
    flat = train(tiny(periodic.vocab_size), periodic, steps=5, batch_size=2, lr=0.02, lr_schedule="constant",
                 out=tmp_path / "flat", twin=False, matched=False)
    assert [r["lr"] for r in flat.qelm.history] == [0.02] * 5
    defaults = resolve_settings(TrainOverrides(steps=200, lr=0.01, lr_schedule="cosine"), {}, None)
    assert (defaults.warmup_steps, defaults.min_lr) == (10, 0.001), "5% of the steps; lr / 10"
    for bad, message in ((dict(lr_schedule="linear"), "lr_schedule='linear' is invalid: choose one of cosine, constant"),
                         (dict(warmup_steps=-1), "warmup_steps=-1 is invalid"),
                         (dict(min_lr=0.5), "min_lr=0.5 is invalid: use a finite number from 0 to lr=0.02")):
        with pytest.raises(ValueError, match=message):
            train(tiny(periodic.vocab_size), periodic, steps=2, lr=0.02, out=tmp_path / "bad", **bad)


def test_a_run_of_an_older_qelm_resumes_at_its_constant_rate():
    stored = {**TRAIN_DEFAULTS, "steps": 10}
    del stored["lr_schedule"], stored["warmup_steps"], stored["min_lr"]  # what an older run recorded
    assert resolve_settings(TrainOverrides(), {}, stored).lr_schedule == "constant"
    assert resolve_settings(TrainOverrides(), {}, None).lr_schedule == "cosine"


def test_the_best_checkpoint_by_validation_is_kept_beside_the_last(tmp_path, periodic):
    result = train(tiny(periodic.vocab_size), periodic, steps=12, batch_size=4, lr=0.05, out=tmp_path, eval_every=3,
                   twin=False, matched=False)
    evals = [(r["step"], r["val_loss"]) for r in result.qelm.history if "val_loss" in r]
    step, loss = min(evals, key=lambda e: e[1])  # the first of equal ones
    best = load_checkpoint(tmp_path / "qelm" / BEST)
    assert best.info["role"] == "best" and (best.info["step"], best.info["val_loss"]) == (step, loss)
    assert best.training_state is None, "the best checkpoint is for use; the last one resumes"
    assert evaluate(best.model, periodic.val_ids, batch_size=8, context_len=8)["loss"] == pytest.approx(loss, abs=1e-6)
    assert result.summary["models"]["qelm"]["best"]["step"] == step
    last = load_checkpoint(tmp_path / "qelm")
    assert last.step == 12 and "step 12, the last of its run" in last.describe()
    assert f"best by validation: step {step}, val loss {loss:.4f}" in best.describe()
    train(tiny(periodic.vocab_size), periodic, steps=1, batch_size=4, out=tmp_path, overwrite=True, eval_every=5,
          twin=False, matched=False)
    assert load_checkpoint(tmp_path / "qelm" / BEST).info["step"] == 1, "a new run never keeps an earlier run's best"


def test_resume_refuses_what_would_change_the_numbers(tmp_path, periodic, corpus):
    cfg = tiny(periodic.vocab_size)
    run = tmp_path / "run"  # tmp_path holds the corpus file
    train(cfg, periodic, steps=4, batch_size=4, lr=0.02, out=run, save_every=2, twin=False)
    with pytest.raises(ValueError, match="cannot resume with lr=0.05: the run was trained with lr=0.02"):
        train(None, periodic, out=run, resume=True, steps=6, lr=0.05)
    with pytest.raises(ValueError, match=r"different model config \(d_hidden: 16 vs 32"):
        train(cfg.replace(d_hidden=32), periodic, out=run, resume=True, steps=6)
    with pytest.raises(ValueError, match="cannot resume on a different corpus"):
        train(None, TextDataset.from_text("hello world. " * 60 + "hello"), out=run, resume=True, steps=6)
    with pytest.raises(ValueError, match="already took 4 steps, more than steps=3"):
        train(None, periodic, out=run, resume=True, steps=3)
    with pytest.raises(FileNotFoundError, match="nothing to resume"):
        train(None, periodic, out=tmp_path / "empty", resume=True, steps=6)


def test_resume_refuses_a_matched_checkpoint_of_another_shape(tmp_path, periodic, monkeypatch):
    """If the matched config a run derives changed (another qelm version), resuming must not mix models."""
    cfg = tiny(periodic.vocab_size)
    with pytest.raises(Killed):
        train(cfg, periodic, steps=4, batch_size=4, out=tmp_path, save_every=2, twin=False,
              callback=_kill_at(3, "matched"))
    derived = qelm.train.run.matched_config(cfg)
    monkeypatch.setattr(qelm.train.run, "matched_config", lambda config: derived.replace(d_hidden=derived.d_hidden + 1))
    with pytest.raises(ValueError, match=rf"cannot resume the matched classical .*d_hidden: {derived.d_hidden} vs "
                                         rf"{derived.d_hidden + 1}; saved vs expected"):
        train(None, periodic, out=tmp_path, resume=True)


# --- the run folder: one writer, nothing of the user's overwritten, every file checked -----------------------------
def test_a_run_folder_is_locked_while_a_run_writes_it(tmp_path, periodic, cli, corpus, config_file):
    run = tmp_path / "run"
    run.mkdir()
    with FolderLock(run, LOCK, what="run folder"):  # another qelm train holds it
        with pytest.raises(FolderInUse, match=rf"run folder .* is in use by process {os.getpid()} on host "
                                              rf"{socket.gethostname()} \(since .*\): wait for it"):
            train(tiny(periodic.vocab_size), periodic, steps=1, batch_size=2, out=run)
        line = cli.error("train", "--data", corpus, "--config", config_file, "--out", run)
        assert f"in use by process {os.getpid()} on host {socket.gethostname()}" in line
        assert sorted(p.name for p in run.iterdir()) == [LOCK], "nothing written"
    train(tiny(periodic.vocab_size), periodic, steps=2, batch_size=2, out=run, twin=False, matched=False)
    # a resume too: it would read files the other process is writing
    with FolderLock(run, LOCK), pytest.raises(FolderInUse, match="is in use by process"):
        train(None, periodic, out=run, resume=True, steps=3)
    assert train(None, periodic, out=run, resume=True, steps=3).qelm.steps_run == 1, "released when a run ends"


@pytest.mark.parametrize("overwrite", [False, True])
def test_a_folder_of_the_users_files_is_refused(tmp_path, periodic, overwrite):
    out = tmp_path / "mine"
    (out / "qelm").mkdir(parents=True)
    (out / "notes.txt").write_text("my notes")
    (out / "data").mkdir()
    with pytest.raises(FileExistsError, match=r"holds files that are not a qelm run \(data/, notes.txt\): choose an "
                                              r"empty or new folder"):
        train(tiny(periodic.vocab_size), periodic, steps=1, batch_size=2, out=out, overwrite=overwrite)
    assert (out / "notes.txt").read_text() == "my notes" and not list((out / "qelm").iterdir())


def test_resume_refuses_a_metrics_file_edited_before_the_checkpoint(tmp_path, periodic):
    cfg = tiny(periodic.vocab_size)
    train(cfg, periodic, steps=4, batch_size=4, out=tmp_path / "run", save_every=2, twin=False, matched=False)
    path = tmp_path / "run" / "qelm" / METRICS
    good = path.read_text()
    path.write_text(good + '{"step": 5, "loss": 1.0}\n{"step": 6, "lo')  # after the checkpoint, then torn: cut
    assert train(None, periodic, out=tmp_path / "run", resume=True, steps=5).qelm.steps_run == 1
    assert [r["step"] for r in read_metrics(path)] == [1, 2, 3, 4, 5]
    lines = path.read_text().splitlines(keepends=True)
    lines[1] = lines[1].replace('"loss": ', '"loss": 1')  # an edited number before the checkpoint
    path.write_text("".join(lines))
    with pytest.raises(ValueError, match=r"metrics.jsonl is not what the run wrote up to its checkpoint at step 5: its "
                                         r"first \d+ bytes differ"):
        train(None, periodic, out=tmp_path / "run", resume=True, steps=6)
    path.write_text("".join(lines[:2]))  # lines lost
    with pytest.raises(ValueError, match=r"metrics.jsonl is not what the run wrote .* are missing"):
        train(None, periodic, out=tmp_path / "run", resume=True, steps=6)


@pytest.mark.parametrize("name", [TOKENIZER, CONFIG])
def test_resume_names_a_checkpoint_file_edited_by_hand(tmp_path, periodic, name):
    train(tiny(periodic.vocab_size), periodic, steps=2, batch_size=4, out=tmp_path / "run", twin=False, matched=False)
    path = tmp_path / "run" / "qelm" / name
    path.write_text(path.read_text().replace("e", "E", 1))
    with pytest.raises(ValueError, match=rf"run/qelm' is corrupt: {name} is not the file that was saved"):
        train(None, periodic, out=tmp_path / "run", resume=True, steps=3)


# --- numbers refused before any work ----------------------------------------------------------------------------
@pytest.mark.parametrize("setting, value, message", [
    ("lr", math.inf, "lr=inf is invalid: use a finite, positive learning rate"),
    ("lr", math.nan, "lr=nan is invalid"),
    ("grad_clip", math.nan, "grad_clip=nan is invalid: use a finite number >= 0"),
    ("weight_decay", math.inf, "weight_decay=inf is invalid: use a finite number >= 0"),
    ("seed", 2**63, r"seed=9223372036854775808 is invalid: use an integer from 0 to 9223372036854775807"),
    ("seed", -1, "seed=-1 is invalid"),
])
def test_non_finite_or_out_of_range_settings_are_refused_before_any_work(tmp_path, periodic, setting, value, message):
    with pytest.raises(ValueError, match=message):
        train(tiny(periodic.vocab_size), periodic, steps=2, batch_size=2, out=tmp_path / "run", **{setting: value})
    assert not (tmp_path / "run").exists()


def test_a_diverging_run_stops_at_the_step_and_keeps_the_last_good_checkpoint(tmp_path, periodic, monkeypatch):
    clip, calls = torch.nn.utils.clip_grad_norm_, [0]

    def nan_gradient_at_step_3(parameters, max_norm):  # as a batch that overflows the backward pass would
        calls[0] += 1
        parameters = list(parameters)
        if calls[0] == 3:
            parameters[0].grad.fill_(math.nan)
        return clip(parameters, max_norm)

    monkeypatch.setattr(torch.nn.utils, "clip_grad_norm_", nan_gradient_at_step_3)
    with pytest.raises(FloatingPointError, match=r"the QELM's gradient norm became nan at step 3; training stopped "
                                                 r"there and the last good checkpoint, of step 2, is kept in .*run/qelm"):
        train(tiny(periodic.vocab_size), periodic, steps=4, batch_size=4, save_every=1, out=tmp_path / "run",
              twin=False, matched=False)
    monkeypatch.undo()
    ck = load_checkpoint(tmp_path / "run" / "qelm")
    assert ck.training_state["step"] == 2
    assert [r["step"] for r in read_metrics(tmp_path / "run" / "qelm" / METRICS)] == [1, 2]
    assert train(None, periodic, out=tmp_path / "run", resume=True).qelm.steps_run == 2, "it resumes from there"


@pytest.mark.parametrize("settings, message", [
    (dict(lr=1e30, grad_clip=0.0), r"weights after step 1 give a loss of nan; they are not saved"),  # huge, finite
    (dict(lr=0.1, weight_decay=1e300), r"weights \(.*\) became NaN or infinite at step 1; they are not saved"),
])
def test_weights_that_diverged_are_never_saved(tmp_path, periodic, settings, message):
    with pytest.raises(FloatingPointError, match=message + r", and no checkpoint had been saved yet: .*weight decay"):
        train(tiny(periodic.vocab_size), periodic, steps=3, batch_size=4, save_every=1, out=tmp_path / "run",
              twin=False, matched=False, **settings)
    assert not (tmp_path / "run" / "qelm" / MANIFEST).exists()


def test_memory_is_checked_with_the_real_batch_before_any_work(tmp_path, periodic, monkeypatch):
    cfg = tiny(periodic.vocab_size, n_qubits=14)  # the config's own check (batch_hint=8) passes
    monkeypatch.setattr(qelm.memory, "available_memory_bytes", lambda: 2**30)
    per_sequence = cfg.circuit_memory(1)[2]  # 48 circuits of 14 qubits: 36 MiB
    with pytest.raises(ValueError, match=rf"batch_size=20000 does not fit: 960000 circuits of 14 qubits need about "
                                         rf"703.1 GiB .* 1.0 GiB of CPU memory here; use batch_size={2**30 // per_sequence} "
                                         rf"or less"):
        train(cfg, periodic, steps=1, batch_size=20000, out=tmp_path / "run")
    assert not (tmp_path / "run").exists()


def test_a_config_file_with_train_but_no_model_table_says_what_it_should_hold(tmp_path, cli, corpus):
    path = tmp_path / "c.toml"
    path.write_text("d_model = 8\n[train]\nsteps = 2\n")
    line = cli.error("train", "--data", corpus, "--config", path, "--out", tmp_path / "run")
    assert "has a [train] table but no [model] table: a config file holds the model's fields under [model]" in line
    with pytest.raises(ValueError, match=r"has a \[train\] table but no \[model\] table"):
        QELMConfig.from_toml(path)


# --- command line -----------------------------------------------------------------------------------------------
def test_cli_train_eval_generate(tmp_path, cli, corpus, config_file):
    out = tmp_path / "run"
    rc, stdout, _ = cli("train", "--data", str(corpus), "--config", str(config_file), "--out", str(out))
    assert rc == 0
    summary = json.loads((out / SUMMARY).read_text())
    # the printed result is the run's verdict, which names the winner (or the tie) first
    assert "".join(f"Result: {summary['verdict']}.".split()) in "".join(stdout.split())  # however it wrapped
    names = {"qelm": "the QELM", "twin": "the classical twin", "matched": "the parameter-matched classical model"}
    winner = summary["winner"]
    assert summary["verdict"].startswith("a tie for best" if winner == "tie" else f"{names[winner]} won")
    assert summary["run"]["steps"] == 4 and summary["run"]["batch_size"] == 4  # from the config's [train] table
    table = {line.split("  ")[1]: line for line in stdout.splitlines() if line.startswith("  ") and "  " in line[2:]}
    for name, label in (("qelm", "QELM"), ("twin", "classical twin"), ("matched", "matched classical")):
        m = summary["models"][name]
        assert f"{m['parameters']}" in table[label] and f"{m['val_perplexity']:.3f}" in table[label], label
        rc, stdout, _ = cli("eval", "--checkpoint", str(out / name), "--data", str(corpus), "--json")
        assert rc == 0
        res = json.loads(stdout)
        assert res["perplexity"] == pytest.approx(m["val_perplexity"], rel=1e-9), name
    gen = ["generate", "--checkpoint", str(out / "twin"), "--prompt", "the ", "--max-new-tokens", "20", "--seed", "4"]
    first, second = cli(*gen)[1], cli(*gen)[1]
    assert first == second and first.startswith("the ") and len(first.rstrip("\n")) == 24
    # --steps is the total: resuming to 6 runs two more steps of each model
    rc, _, _ = cli("train", "--resume", str(out), "--steps", "6")
    assert rc == 0
    assert [[r["step"] for r in read_metrics(out / n / METRICS)][-1] for n in ("qelm", "twin", "matched")] == [6, 6, 6]


def test_cli_bpe_tokenizer(tmp_path, cli, corpus, config_file):
    rc, _, _ = cli("train", "--data", str(corpus), "--config", str(config_file), "--out", str(tmp_path / "r"),
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
def test_cli_corpus_errors(tmp_path, cli, config_file, content, message):
    path = tmp_path / "corpus.txt"
    if content is not None:
        path.write_bytes(content)
    line = cli.error("train", "--data", str(path), "--config", str(config_file), "--out", str(tmp_path / "o"))
    assert line.startswith("qelm train: error:") and message in line and "corpus.txt" in line


def test_cli_prompt_outside_vocabulary_is_read_as_the_unknown_token_and_named(tmp_path, cli, corpus, config_file):
    assert cli("train", "--data", str(corpus), "--config", str(config_file), "--out", str(tmp_path / "r"),
                "--steps", "1", "--no-twin")[0] == 0
    rc, out, err = cli("generate", "--checkpoint", str(tmp_path / "r" / "qelm"), "--prompt", "the Cat!",
                       "--max-new-tokens", "5")
    assert rc == 0 and out.startswith("the Cat!")
    assert "2 character(s) outside the vocabulary" in err and "'C' (U+0043" in err and "'!' (U+0021" in err


@pytest.fixture
def trained(tmp_path, cli, corpus, config_file):
    """A checkpoint of a QELM trained for one step by the command line."""
    assert cli("train", "--data", corpus, "--config", config_file, "--out", tmp_path / "r", "--steps", "1",
               "--no-twin", "--no-matched")[0] == 0
    return tmp_path / "r" / "qelm"


@pytest.mark.parametrize("flag, value, message", [
    ("--temperature", "inf", "argument --temperature: inf is invalid: use a finite number >= 0"),
    ("--temperature", "-1", "argument --temperature: -1 is invalid"),
    ("--temperature", "nan", "argument --temperature: nan is invalid"),
    ("--max-new-tokens", "-1", "argument --max-new-tokens: -1 is invalid: use an integer >= 0"),
    ("--top-k", "0", "argument --top-k: 0 is invalid"),
    ("--seed", str(2**64), "argument --seed: 18446744073709551616 is invalid: use an integer from 0 to "
                           "9223372036854775807"),
    ("--seed", "-1", "argument --seed: -1 is invalid"),
])
def test_cli_generate_refuses_sampling_flags_by_name(trained, cli, flag, value, message):
    line = cli.error("generate", "--checkpoint", trained, "--prompt", "the ", flag, value)
    assert message in line


class _Terminal:
    """stdout that records each write; the ``stop_at``-th write is a Ctrl-C."""

    def __init__(self, stop_at):
        self.writes, self.stop_at = [], stop_at

    def write(self, text):
        if len(self.writes) + 1 == self.stop_at:
            self.stop_at = None
            raise KeyboardInterrupt
        self.writes.append(text)

    def flush(self):
        pass


def test_cli_generate_streams_and_keeps_the_text_on_ctrl_c(trained, cli, monkeypatch):
    terminal = _Terminal(stop_at=30)
    monkeypatch.setattr("sys.stdout", terminal)
    rc, _, err = cli("generate", "--checkpoint", trained, "--prompt", "the ", "--max-new-tokens", "100000", "--seed", "2")
    # 100000 tokens would take minutes: the text came token by token, and the interrupt came after 28 of them
    assert rc == 130 and terminal.writes[0] == "the " and len(terminal.writes) == 30 and terminal.writes[-1] == "\n"
    assert err.strip().splitlines()[-1] == ("qelm generate: interrupted; the 28 character(s) generated before it are "
                                            "printed above")
    monkeypatch.undo()
    rc, out, _ = cli("generate", "--checkpoint", trained, "--prompt", "the ", "--max-new-tokens", "28", "--seed", "2")
    assert out == "".join(terminal.writes), "what was kept is what an uninterrupted run prints"


def test_cli_progress_bars_show_on_a_terminal_and_not_in_a_pipe(tmp_path, cli, corpus, config_file, trained, monkeypatch):
    args = ("train", "--data", corpus, "--config", config_file, "--steps", "2", "--no-matched")
    rc, _, err = cli(*args, "--out", tmp_path / "pipe")
    assert rc == 0 and err == "", "a pipe gets no bars"
    rc, _, err = cli("eval", "--checkpoint", trained, "--data", corpus)
    assert rc == 0 and err == ""
    monkeypatch.setattr(qelm.cli.progress, "show_progress", lambda: True)  # stderr is a terminal
    rc, _, err = cli(*args, "--out", tmp_path / "tty")
    assert rc == 0 and "2/2" in err and "tok/s" in err
    rc, _, err = cli("eval", "--checkpoint", trained, "--data", corpus)
    assert rc == 0 and "token" in err


def test_cli_demo_checks_the_prompt_before_training(tmp_path, cli):
    line = cli.error("demo", "--prompt", "", "--out", tmp_path / "demo", "--steps", "1")
    assert line.startswith("qelm demo: error: --prompt is empty")
    assert not (tmp_path / "demo").exists(), "nothing trained"


@pytest.mark.parametrize("flag, value", [("--lr", "inf"), ("--lr", "0"), ("--steps", "0"), ("--batch-size", "-2"),
                                         ("--seed", str(2**63)), ("--eval-every", "0"), ("--threads", "0")])
def test_cli_train_refuses_numbers_by_flag_before_any_work(tmp_path, cli, corpus, config_file, flag, value):
    line = cli.error("train", "--data", corpus, "--config", config_file, "--out", tmp_path / "run", flag, value)
    assert f"argument {flag}: {value} is invalid" in line
    assert not (tmp_path / "run").exists()


def test_cli_a_diverging_run_is_one_line(tmp_path, cli, corpus, config_file):
    line = cli.error("train", "--data", corpus, "--config", config_file, "--out", tmp_path / "run", "--lr", "1e30",
                     "--save-every", "1", "--no-matched")
    assert "classical twin's weights after step 1 give a loss of nan; they are not saved" in line
    assert "(lr=1e+30)" in line and not (tmp_path / "run" / "twin" / MANIFEST).exists()


def test_cli_checkpoint_errors(tmp_path, cli, corpus, config_file):
    run = tmp_path / "r"
    assert cli("train", "--data", str(corpus), "--config", str(config_file), "--out", str(run),
                "--steps", "1", "--no-twin")[0] == 0
    ck = run / "qelm"
    config = (ck / CONFIG).read_text()
    (ck / CONFIG).write_text(config.replace("n_qubits = 2", "n_qubits = 3"))
    line = cli.error("eval", "--checkpoint", str(ck), "--data", str(corpus))
    assert "is corrupt: config.toml is not the file that was saved" in line
    (ck / MANIFEST).unlink()  # loaded unchecked: the weights then say what does not fit
    line = cli.error("eval", "--checkpoint", str(ck), "--data", str(corpus))
    assert "does not match config.toml" in line and "n_qubits=3" in line
    (ck / CONFIG).write_text(config)
    (ck / WEIGHTS).write_bytes(b"\x00" * 40)
    line = cli.error("generate", "--checkpoint", str(ck), "--prompt", "the")
    assert "is corrupt: model.safetensors cannot be read" in line
    line = cli.error("eval", "--checkpoint", str(run), "--data", str(corpus))
    assert "training run folder" in line


def test_cli_resume_with_another_config_names_the_field(tmp_path, cli, corpus, config_file):
    run = tmp_path / "r"
    assert cli("train", "--data", str(corpus), "--config", str(config_file), "--out", str(run),
                "--steps", "2", "--no-twin")[0] == 0
    other = tmp_path / "other.toml"
    other.write_text(config_file.read_text().replace("d_hidden = 16", "d_hidden = 24"))
    line = cli.error("train", "--resume", str(run), "--config", str(other), "--steps", "3")
    assert "different model config (d_hidden: 16 vs 24; saved vs given)" in line


def test_cli_output_folder_not_writable(tmp_path, cli, corpus, config_file):
    (tmp_path / "file").write_text("x")
    line = cli.error("train", "--data", str(corpus), "--config", str(config_file),
                       "--out", str(tmp_path / "file" / "run"))
    assert "is not writable" in line and "--out" in line


def test_cli_backend_unavailable(tmp_path, cli, corpus, config_file):
    from qelm.backends.pennylane import installed

    if installed("pennylane_lightning.lightning_gpu"):
        pytest.skip("lightning.gpu is installed here")
    line = cli.error("train", "--data", str(corpus), "--config", str(config_file), "--out",
                       str(tmp_path / "r"), "--backend", "lightning.gpu")
    assert "lightning.gpu" in line and "pip install" in line
    line = cli.error("train", "--data", str(corpus), "--config", str(config_file), "--out",
                       str(tmp_path / "r"), "--backend", "no.such")
    assert "unknown backend 'no.such'" in line or "backend='no.such'" in line


def test_cli_backend_options_survive_backend_flag(tmp_path, cli, corpus, config_file):
    """--set backend_options=... with --backend: the options given are the run's (they were dropped, so
    qiskit.aer with device='GPU' silently trained on the CPU)."""
    import json

    rc, _, _ = cli("train", "--data", str(corpus), "--config", str(config_file), "--out", str(tmp_path / "r"),
                   "--steps", "1", "--no-twin", "--no-matched", "--backend", "qelm.fused",
                   "--set", 'backend_options={dtype="complex64"}')
    assert rc == 0
    saved = json.loads((tmp_path / "r" / "qelm" / "config.json").read_text())
    assert saved["backend"] == "qelm.fused" and saved["backend_options"] == {"dtype": "complex64"}
    line = cli.error("train", "--data", str(corpus), "--config", str(config_file), "--out", str(tmp_path / "g"),
                     "--backend", "qelm.fused", "--set", 'backend_options={device="GPU"}')
    assert "unknown option(s) device for backend 'qelm.fused'" in line


def test_cli_read_only_output_folder(tmp_path, cli, corpus, config_file, monkeypatch):
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    try:  # root writes whatever the mode bits say: there the folder refuses writes as a read-only mount does
        (locked / "probe").touch()
    except PermissionError:
        pass
    else:
        (locked / "probe").unlink()
        real = tempfile.TemporaryFile

        def read_only_mount(*args, dir=None, **kwargs):
            if dir is not None and Path(dir).is_relative_to(locked):
                raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(dir))
            return real(*args, dir=dir, **kwargs)

        monkeypatch.setattr(tempfile, "TemporaryFile", read_only_mount)
    line = cli.error("train", "--data", str(corpus), "--config", str(config_file), "--out", str(locked / "r"))
    assert "is not writable" in line and str(locked / "r") in line
    assert not [p for p in locked.rglob("*") if p.is_file()], "nothing was written"
