"""qelm sweep: the search space is checked before any trial, each trial trains a configuration at every
seed beside its classical baselines and records every metric, a failed trial is recorded with its reason
while the sweep goes on, a killed sweep resumes losing only the trials in flight, and the report's
frontier and verdict follow from the figures."""

import dataclasses
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time

import pytest

from qelm import QELMConfig
from qelm.sweep import load_space, parse_space, pareto_frontier, verdict
from qelm.sweep.space import model_key
from qelm.train import TrainOverrides

optuna = pytest.importorskip("optuna")

pytestmark = pytest.mark.usefixtures("_one_thread")

EXAMPLE = os.path.join(os.path.dirname(__file__), "..", "examples", "sweep.toml")

TINY = """
[sweep]
trials = {trials}
seeds = {seeds}
sampler = "{sampler}"
sample_tokens = 20

[model]
d_model = 8
n_heads = 2
d_hidden = 16
context_len = 8
n_qubits = 2
circuit_layers = 1

[train]
steps = {steps}
batch_size = 4
eval_every = {steps}
save_every = {steps}

[search.model]
{search}
"""
GRID = 'feed_forward = ["quantum", "classical"]\nembedding_circuit = ["angle", "polar"]'


def tiny_space(tmp_path, *, trials=4, sampler="grid", steps=4, search=GRID, seeds=(0, 1, 2), name="space.toml"):
    path = tmp_path / name
    path.write_text(TINY.format(trials=trials, sampler=sampler, steps=steps, search=search, seeds=list(seeds)),
                    encoding="utf-8")
    return path



# --- the search space -------------------------------------------------------------------------------------------
def test_the_example_space_loads_and_searches_the_slots_circuits_sizes_readout_and_lr():
    space = load_space(EXAMPLE)
    searched = {d.param for d in space.dims}
    assert {"model.embedding", "model.attention", "model.feed_forward", "model.embedding_circuit", "model.n_qubits",
            "model.circuit_layers", "model.d_model", "model.n_heads", "model.readout", "train.lr"} <= searched
    assert space.seeds == [0, 1, 2] and space.train["steps"] == 400


def test_every_config_field_can_be_searched_by_its_dataclass_name():
    """Names come from dataclasses.fields(QELMConfig): a field added there is searchable at once."""
    default = QELMConfig()
    for f in dataclasses.fields(QELMConfig):
        if f.name in ("vocab_size", "backend_options", "shots"):
            continue
        value = getattr(default, f.name)
        space = parse_space(f"[search.model]\n{f.name} = [{json.dumps(value)}]\n")
        config, _ = space.build({f"model.{f.name}": value}, vocab_size=30)
        assert getattr(config, f.name) == value


@pytest.mark.parametrize("text, names", [
    ("[search.model]\nd_modl = [8, 16]\n", ["'d_modl' is not a QELMConfig field", "d_model"]),
    ("[model]\nqubits = 4\n", ["[model] 'qubits' is not a QELMConfig field"]),
    ("[search.train]\nseed = [0, 1]\n", ["'seed' is not a searchable training setting", "lr"]),
    ("[search.train]\ntokenizer = ['char', 'bpe']\n", ["'tokenizer' is not a searchable"]),
    ("[search.model]\nvocab_size = [10, 20]\n", ["vocab_size cannot be searched: the tokenizer sets it"]),
    ("[sweep]\ntrails = 3\n", ["[sweep] 'trails' is not a sweep option"]),
    ("[train]\nseed = 3\n", ["[train] seed cannot be set: the sweep trains every model at each of [sweep] seeds"]),
    ("[searches.model]\nd_model = [8]\n", ["unknown table(s) [searches]"]),
    ("[search.model]\nd_model = [8, 12]\nn_heads = [1, 8]\n", ["d_model=12, n_heads=8 is impossible",
                                                               "config field d_model=12 is invalid"]),
    ("[search.model]\nn_qubits = [4, 40]\n", ["n_qubits=40 is impossible", "GiB"]),
    ("[search.model]\nembedding = ['quantum', 'quantumm']\n", ["embedding='quantumm' is impossible"]),
    ("[search.model]\nd_model = 16\n", ["[search.model] d_model = 16 is invalid: give a list of choices"]),
    ("[model]\nd_model = [8, 16]\n", ["searched values go in [search.model]"]),
    ("[search.train]\nlr = { low = 0.1, high = 0.01 }\n", ["[search.train] lr: low = 0.1 is above high = 0.01"]),
    ("[search.train]\nlr = [0.01, -1.0]\n", ["lr=-1.0", "positive learning rate"]),
    ("[sweep]\nsampler = 'grid'\n[search.train]\nlr = { low = 0.001, high = 0.1 }\n", ["sampler 'grid' needs", "lr"]),
    ("[train]\ntokens = 1000\n[search.train]\nsteps = [2, 4]\n", ["steps or tokens"]),
    ("[train]\ntokens = 100\n", ["tokens = 100 buys no step"]),
    ("[sweep]\nseeds = [0, 0]\n", ["seeds = [0, 0] is invalid"]),
])
def test_a_bad_space_is_refused_naming_the_field(text, names):
    with pytest.raises(ValueError) as e:
        parse_space(text, source="s.toml")
    for name in names:
        assert name in str(e.value), str(e.value)
    assert str(e.value).startswith("search space 's.toml': ")


def test_a_token_budget_buys_steps_at_each_batch_and_context():
    space = parse_space("[train]\ntokens = 10240\n[search.train]\nbatch_size = [4, 8]\n")
    assert space.build({"train.batch_size": 4}, 30)[1].steps == 80  # 10240 / (4 x 32)
    assert space.build({"train.batch_size": 8}, 30)[1].steps == 40


def test_model_key_names_the_model_and_its_training_not_fields_that_change_nothing():
    s = TrainOverrides(steps=10, batch_size=4, lr=0.01)
    classical = QELMConfig(embedding="classical", attention="classical", feed_forward="classical")
    assert model_key(classical, s) == model_key(classical.replace(n_qubits=6, readout="probs"), s)
    q = QELMConfig(embedding="classical")
    assert model_key(q, s) == model_key(q.replace(embedding_circuit="polar"), s)  # no embedding circuit
    assert model_key(q, s) != model_key(q.replace(readout="zz"), s)
    assert model_key(q, s) != model_key(q, s.replace(lr=0.02))


# --- the frontier and the verdict -------------------------------------------------------------------------------
def test_pareto_frontier_keeps_points_no_other_beats_on_both_axes():
    pts = [{"key": k, "parameters": p, "ppl": y} for k, p, y in
           [("a", 100, 9.0), ("b", 200, 9.5), ("c", 300, 7.0), ("d", 300, 8.0), ("e", 50, 20.0), ("f", 400, 7.0)]]
    assert [p["key"] for p in pareto_frontier(pts)] == ["e", "a", "c"]


def _model(key, kind, params, ppl, ratios=None, matched=None, classical=None, to_classical=None):
    m = {"key": key, "kind": kind, "label": key, "parameters": params,
         "val_perplexity": {"mean": ppl, "sd": 0.1, "min": ppl - 0.1, "max": ppl + 0.1, "n": 3}}

    def stats(r):
        return {"mean": sum(r) / 3, "sd": 0.01, "min": min(r), "max": max(r), "n": 3}

    if ratios:
        m.update(matched_key=matched, ratio_to_matched=stats(ratios), classical_key=classical or matched,
                 ratio_to_classical=stats(to_classical or ratios), classical_models=2 if classical else 1)
    return m


@pytest.mark.parametrize("ratios, start, words", [
    ([1.2, 1.3, 1.25], "No: ", "25.0% higher"),
    ([0.9, 0.95, 0.92], "Yes: ", "7.7% lower on every seed"),
    ([0.9, 1.02, 0.94], "Not reliably: ", "but not on every seed"),
])
def test_the_verdict_says_whether_by_how_much_and_with_what_spread(ratios, start, words):
    models = {"m": _model("m", "matched", 1000, 6.0),
              "q": _model("q", "quantum", 1010, 7.5, ratios, "m"),
              "w": _model("w", "quantum", 1010, 9.0, [1.5, 1.5, 1.5], "m")}
    sentence, best = verdict(models)
    assert sentence.startswith(start) and words in sentence and best["key"] == "q"
    assert "of 2 quantum configurations the closest, q (1,010 parameters)" in sentence and "over 3 seeds" in sentence
    assert "the only classical model the sweep trained with no more parameters (m, 1,000 parameters)" in sentence


def test_the_verdict_sets_a_quantum_model_against_the_best_classical_one_not_only_its_matched_model():
    """A quantum model can beat its own matched model at a poor learning rate that both share while a
    classical model of fewer parameters, at another learning rate, beats both: the answer is then no."""
    models = {"m": _model("m", "matched", 1000, 8.0), "t": _model("t", "twin", 900, 6.5),
              "q": _model("q", "quantum", 1010, 7.5, [0.93, 0.94, 0.95], "m", "t", [1.14, 1.15, 1.16])}
    sentence, _ = verdict(models)
    assert sentence.startswith("No: ") and "the best of the 2 classical models the sweep trained" in sentence
    assert "(t, 900 parameters), 15.0% higher" in sentence
    assert "against its own matched model at the same settings it is 6.0% lower" in sentence


# --- sweeps -----------------------------------------------------------------------------------------------------
def _study_created(out) -> bool:
    """Whether the sweep has finished creating its study database, read without writing: opening the study
    before that creates the tables a second time, beside the sweep, and one of the two then fails."""
    try:
        with sqlite3.connect(f"file:{out / 'sweep.db'}?mode=ro", uri=True) as db:
            return db.execute("SELECT count(*) FROM alembic_version").fetchone()[0] > 0
    except sqlite3.Error:
        return False


def _study(out):
    from qelm.sweep import open_study

    return open_study(out)[0]


def test_a_sweep_records_every_trial_its_baselines_and_metrics_and_reports_the_frontier(tmp_path, cli, corpus):
    space = tiny_space(tmp_path, trials=4)
    out = tmp_path / "sweep"
    rc, stdout, _ = cli("sweep", "--space", space, "--data", corpus, "--out", out)
    assert rc == 0
    table = json.loads((out / "sweep.json").read_text())
    assert (out / "pareto.png").read_bytes()[:4] == b"\x89PNG"
    trials = table["trials"]
    assert [t["state"] for t in trials] == ["complete"] * 4
    assert {(t["params"]["model.feed_forward"], t["params"]["model.embedding_circuit"]) for t in trials} == \
        {(f, c) for f in ("quantum", "classical") for c in ("angle", "polar")}
    models = {m["key"]: m for m in table["models"]}
    for t in trials:
        assert t["wall_seconds"] > 0
        for key in t["keys"].values():
            assert sorted(models[key]["seeds"]) == ["0", "1", "2"]
            for figures in models[key]["seeds"].values():
                assert {"val_perplexity", "parameters", "circuit_parameters", "tokens_per_s", "train_seconds",
                        "bits_per_character", "top1_accuracy", "top5_accuracy", "distinct_1", "distinct_2",
                        "repetition_rate"} <= set(figures)
        assert models[t["keys"]["qelm"]]["circuit_parameters"] > 0 == models[t["keys"]["twin"]]["circuit_parameters"]
        assert t["value"] == pytest.approx(sum(t["ratio_to_matched"].values()) / 3, rel=1e-5)  # JSON: 6 digits
        q, m = models[t["keys"]["qelm"]]["seeds"], models[t["keys"]["matched"]]["seeds"]
        assert t["ratio_to_matched"] == pytest.approx({s: q[s]["val_perplexity"] / m[s]["val_perplexity"] for s in q},
                                                      rel=1e-5)
    # one twin serves every trial (the same d_model and width): trained by the first, copied by the others
    assert len({t["keys"]["twin"] for t in trials}) == 1
    assert trials[0]["trained"]["twin"] == [0, 1, 2] and all(t["trained"]["twin"] == [] for t in trials[1:])
    assert {m["kind"] for m in models.values()} == {"quantum", "twin", "matched", "unigram"}
    for key in table["frontier"]:
        assert models[key]["kind"] == "unigram" or models[key]["val_perplexity"]["n"] == 3  # >= 3 seeds
    assert table["verdict"] in " ".join(stdout.split()).replace(" \n", " ") or table["verdict"][:40] in stdout
    assert "Pareto frontier" in stdout and f"Wrote {out / 'sweep.json'}" in stdout
    # --report reads the same study and prints the same verdict
    rc, again, _ = cli("sweep", "--report", "--out", out, "--json", tmp_path / "again.json")
    assert rc == 0 and json.loads((tmp_path / "again.json").read_text())["verdict"] == table["verdict"]
    rc, again, _ = cli("sweep", "--report", "--out", out, "--json")  # alone: the JSON on stdout, nothing else
    assert rc == 0 and json.loads(again)["verdict"] == table["verdict"]


def test_a_failed_trial_is_recorded_with_its_reason_and_the_sweep_goes_on(tmp_path, cli, corpus):
    space = tiny_space(tmp_path, trials=2, search="feed_forward = ['quantum']\n[search.train]\nlr = [0.01, 1e30]")
    out = tmp_path / "sweep"
    rc, stdout, _ = cli("sweep", "--space", space, "--data", corpus, "--out", out)
    assert rc == 0
    table = json.loads((out / "sweep.json").read_text())
    states = {t["params"]["train.lr"]: t for t in table["trials"]}
    assert states[0.01]["state"] == "complete"
    failed = states[1e30]
    assert failed["state"] == "failed" and "FloatingPointError" in failed["error"] and "loss" in failed["error"]
    assert f"#{failed['number']} failed: FloatingPointError" in stdout


def test_bad_input_is_refused_before_any_trial(tmp_path, cli, corpus, monkeypatch):
    out = tmp_path / "sweep"
    bad = tmp_path / "bad.toml"
    bad.write_text("[search.model]\nd_model = [8, 12]\nn_heads = [8]\n")
    assert "d_model=12" in cli.error("sweep", "--space", bad, "--data", corpus, "--out", out)
    assert not (out / "sweep.db").exists()
    assert "--space is required" in cli.error("sweep", "--out", out)
    assert "no sweep in" in cli.error("sweep", "--report", "--out", out)
    assert "no sweep in" in cli.error("sweep", "--resume", "--out", out)
    space = tiny_space(tmp_path, trials=1, search="feed_forward = ['quantum']")
    assert "no image suffix" in cli.error("sweep", "--space", space, "--out", out, "--plot", tmp_path / "p.gif")
    short = tmp_path / "short.txt"
    short.write_text("abc abc")
    assert "too short" in cli.error("sweep", "--space", space, "--data", short, "--out", out)
    rc, _, _ = cli("sweep", "--space", space, "--data", corpus, "--out", out)
    assert rc == 0
    assert "already holds sweep 'space'" in cli.error("sweep", "--space", space, "--data", corpus, "--out", out)
    other = tmp_path / "other.txt"
    other.write_text("another text entirely, long enough to train on. " * 10)
    assert "is not the text this sweep trains on" in cli.error("sweep", "--resume", "--out", out, "--data", other)
    monkeypatch.setitem(sys.modules, "optuna", None)  # as if Optuna were not installed
    assert 'pip install "qelm-lab[sweep]"' in cli.error("sweep", "--report", "--out", out)


def test_a_killed_sweep_resumes_losing_only_the_trial_in_flight(tmp_path, corpus, cli):
    """Kill a sweep (SIGKILL) while a trial runs and after another completed; --resume fails the lost trial,
    reruns its parameters (two workers now) and finishes the grid; the completed trial is kept as it was."""
    space = tiny_space(tmp_path, trials=4, steps=40, seeds=[0])
    out = tmp_path / "sweep"
    cmd = [sys.executable, "-m", "qelm", "sweep", "--space", str(space), "--data", str(corpus), "--out", str(out)]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            time.sleep(0.1)
            if proc.poll() is not None:
                pytest.fail(f"the sweep ended before it could be killed: {proc.stderr.read().decode()}")
            if not _study_created(out):
                continue
            try:
                trials = _study(out).get_trials(deepcopy=False)
            except Exception:  # the study is still being created
                continue
            # a trial in flight: created, and its worker recorded (the objective has begun)
            if "COMPLETE" in [t.state.name for t in trials] and trials[-1].state.name == "RUNNING" \
                    and "worker" in trials[-1].user_attrs:
                break
        else:
            pytest.fail("no trial completed in time")
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait()
    before = {t.number: t for t in _study(out).get_trials(deepcopy=False)}
    done = {n: t for n, t in before.items() if t.state.name == "COMPLETE"}
    in_flight = [n for n, t in before.items() if t.state.name == "RUNNING"]
    assert len(in_flight) == 1 and done
    rc, stdout, stderr = cli("sweep", "--resume", "--out", out, "--workers", "2")
    assert rc == 0, stderr
    table = json.loads((out / "sweep.json").read_text())
    rows = {t["number"]: t for t in table["trials"]}
    lost = rows[in_flight[0]]
    assert lost["state"] == "lost" and "was gone when the sweep resumed" in lost["error"]
    retry = [t for t in rows.values() if t["retry_of"] == in_flight[0]]
    assert len(retry) == 1 and retry[0]["state"] == "complete" and retry[0]["params"] == lost["params"]
    complete = [t for t in rows.values() if t["state"] == "complete"]
    # the whole grid (two workers may race to one point: a duplicate, never a gap)
    assert len({json.dumps(t["params"], sort_keys=True) for t in complete}) == 4
    for n, t in done.items():  # kept, not rerun
        assert rows[n]["state"] == "complete" and rows[n]["value"] == pytest.approx(t.value, rel=1e-5)
    workers = {t.user_attrs["worker"] for t in _study(out).get_trials(deepcopy=False) if t.number not in before}
    assert len(workers) == 2, "both workers of the resumed sweep ran trials"
    assert "resuming" in stdout and "Verdict:" in stdout
