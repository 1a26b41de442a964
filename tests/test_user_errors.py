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
    rc, _out, err = cli("train", "--data", corpus, "--config", config_file, "--steps", "1", "--no-twin", "--no-matched",
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
    _out, err = capfd.readouterr()
    assert rc == 130 and err.strip() == "qelm sweep: interrupted", err


# --- T6: memory limits of the process, and corpora that are not regular files ------------------------------
def test_the_memory_check_respects_the_address_space_limit(tmp_path):
    import subprocess

    code = ("import resource; resource.setrlimit(resource.RLIMIT_AS, (3 << 30, resource.RLIM_INFINITY)); "
            "from qelm.memory import available_memory_bytes; print(available_memory_bytes())")
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    assert int(run.stdout) < 3 << 30


@pytest.mark.parametrize("version", ["v1", "v2"])
def test_the_memory_check_respects_a_cgroup_limit(tmp_path, version, monkeypatch):
    import qelm.memlimit
    from qelm import QELMConfig
    from qelm.memlimit import cgroup_limit_bytes

    root, proc = tmp_path / "cgroup", tmp_path / "proc-cgroup"
    if version == "v2":
        proc.write_text("0::/user.slice/job\n")
        (root / "user.slice" / "job").mkdir(parents=True)
        (root / "user.slice" / "job" / "memory.max").write_text("max\n")
        (root / "user.slice" / "memory.max").write_text(f"{3 << 30}\n")  # a parent's limit binds its children
    else:
        proc.write_text("5:devices:/\n4:memory:/docker/abc\n")
        (root / "memory").mkdir(parents=True)  # inside the container the mount is the cgroup itself
        (root / "memory" / "memory.limit_in_bytes").write_text(f"{3 << 30}\n")
    assert cgroup_limit_bytes(root, proc) == 3 << 30
    monkeypatch.setattr(qelm.memlimit, "cgroup_limit_bytes", lambda: cgroup_limit_bytes(root, proc))
    with pytest.raises(ValueError, match=r"need about 4.5 GiB of state vectors, more than this machine's 3.0 GiB"):
        QELMConfig(n_qubits=16)
    assert cgroup_limit_bytes(tmp_path / "none", tmp_path / "no-such") is None


@pytest.mark.parametrize("special", ["/dev/zero", "fifo", "loop", "folder"])
def test_only_a_regular_file_is_a_corpus(cli, config_file, tmp_path, special):
    if special == "fifo":
        if not hasattr(os, "mkfifo"):
            pytest.skip("no FIFOs here")
        os.mkfifo(tmp_path / "fifo")
    elif special == "loop":
        (tmp_path / "loop").symlink_to(tmp_path / "loop")
    elif special == "folder":
        (tmp_path / "folder").mkdir()
    elif not os.path.exists(special):
        pytest.skip(f"no {special} here")
    path = special if special.startswith("/") else tmp_path / special
    line = cli.error("train", "--data", path, "--config", config_file, "--out", tmp_path / "run")
    words = {"/dev/zero": "is a character device, not a regular file", "fifo": "is a FIFO (named pipe), not a regular",
             "loop": "is a link loop", "folder": "is a folder"}[special]
    assert words in line and str(path) in line
    assert not (tmp_path / "run").exists()


# --- M1, M2: files that are the wrong kind, or not text, are named with what they are ---------------------------
@pytest.fixture
def checkpoint(tmp_path, tiny_config):
    from qelm import save_checkpoint
    from qelm.model import ClassicalLM
    from qelm.tokenizer import CharTokenizer

    tokenizer = CharTokenizer.from_text("abcdefghij")
    return save_checkpoint(tmp_path / "ck", ClassicalLM(tiny_config.replace(vocab_size=tokenizer.vocab_size)),
                           tokenizer)


@pytest.fixture
def binary(tmp_path):
    path = tmp_path / "bin.bin"
    path.write_bytes(bytes([0x96, 0xff, 0x80, 0x41]) * 8)
    return path


def test_a_tokenizer_that_is_not_text_or_was_edited_names_its_file(cli, checkpoint, corpus, binary):
    from qelm.model_files import MANIFEST, TOKENIZER

    (checkpoint / MANIFEST).unlink()  # an older layout: the files are read unchecked
    good = (checkpoint / TOKENIZER).read_text()
    (checkpoint / TOKENIZER).write_bytes(binary.read_bytes())
    line = cli.error("eval", "--checkpoint", checkpoint, "--data", corpus)
    assert f"tokenizer file '{checkpoint / TOKENIZER}' is corrupt: not UTF-8 text" in line
    (checkpoint / TOKENIZER).write_text(good.replace('"b"', '"bc"', 1))  # an entry of two characters
    line = cli.error("eval", "--checkpoint", checkpoint, "--data", corpus)
    assert f"tokenizer file '{checkpoint / TOKENIZER}' is corrupt: CharTokenizer vocabulary entry 'bc' is not" in line
    (checkpoint / TOKENIZER).write_text('{"type": "qelm.char", "version": 1, "chars": ["a", "b", "a"]}')  # earlier format
    line = cli.error("eval", "--checkpoint", checkpoint, "--data", corpus)
    assert f"tokenizer file '{checkpoint / TOKENIZER}' is corrupt: CharTokenizer vocabulary has repeated" in line


@pytest.mark.parametrize("argv", [["draw", "angle"], ["compare", "--batch-size", "1"], ["bench", "--n-qubits", "2"]])
def test_a_binary_config_is_named(cli, binary, argv):
    assert f"config file '{binary}' is not UTF-8 text" in cli.error(*argv, "--config", binary)


def test_compare_data_that_is_not_text_is_named(cli, checkpoint, binary):
    assert f"'{binary}' is not UTF-8 text" in cli.error("compare", "--checkpoint", checkpoint, "--data", binary)


@pytest.mark.parametrize("kind", ["folder", "/dev/null", "fifo", "loop"])
@pytest.mark.parametrize("argv", [["train", "--data", "CORPUS"], ["draw", "angle"], ["compare"], ["bench"]])
def test_a_config_of_the_wrong_kind_says_what_it_is(cli, corpus, tmp_path, kind, argv):
    if kind == "fifo":
        if not hasattr(os, "mkfifo"):
            pytest.skip("no FIFOs here")
        os.mkfifo(tmp_path / "fifo")
    elif kind == "loop":
        (tmp_path / "loop").symlink_to(tmp_path / "loop")
    elif kind == "folder":
        (tmp_path / "folder").mkdir()
    elif not os.path.exists(kind):
        pytest.skip(f"no {kind} here")
    path = kind if kind.startswith("/") else tmp_path / kind
    line = cli.error(*[str(corpus) if a == "CORPUS" else a for a in argv], "--config", path)
    words = {"folder": "is a folder, not a file", "/dev/null": "is a character device, not a regular file",
             "fifo": "is a FIFO (named pipe)", "loop": "is a link loop"}[kind]
    assert f"config file '{path}' {words}" in line and "does not exist" not in line


@pytest.mark.parametrize("command", ["eval", "generate", "chat"])
def test_a_checkpoint_that_is_a_file_says_so(cli, corpus, command):
    argv = {"eval": ["--data", corpus], "generate": ["--prompt", "a"], "chat": []}[command]
    line = cli.error(command, "--checkpoint", corpus, *argv)
    assert f"checkpoint folder '{corpus}' is a file, not a folder" in line


# --- W1: sampling at any accepted temperature ------------------------------------------------------------------
@pytest.mark.parametrize("temperature", [1e-300, 1e-40, 5e-324])
def test_a_tiny_temperature_samples_greedily_not_noise(tiny_config, temperature):
    from qelm.evaluate import stream_text
    from qelm.model import ClassicalLM
    from qelm.tokenizer import CharTokenizer

    import torch

    tokenizer = CharTokenizer.from_text("abcdefghij")
    model = ClassicalLM(tiny_config.replace(vocab_size=tokenizer.vocab_size)).eval()
    ids = tokenizer.encode("abc")
    with torch.no_grad():  # the limit of a temperature going to 0: the most likely token that is text each time
        for _ in range(30):
            logits = model(torch.tensor([ids[-tiny_config.context_len:]]))[0][0, -1]
            logits[tokenizer.unk_id] = float("-inf")
            ids.append(int(logits.argmax()))
    greedy = tokenizer.decode(ids[3:])
    for seed in range(3):
        assert "".join(stream_text(model, tokenizer, "abc", max_new_tokens=30, temperature=temperature,
                                   seed=seed)) == greedy


# --- W2: a parameter given twice -----------------------------------------------------------------------------
@pytest.mark.parametrize("spec, match", [("depolarizing:p1=1e-3,p1=0.5", "depolarizing p1 is given twice"),
                                         ("readout:p=0.1,p0to1=0.2", "readout p sets p0to1 and p1to0 both")])
def test_a_noise_parameter_given_twice_is_refused(cli, tmp_path, spec, match):
    line = cli.error("eval", "--checkpoint", tmp_path / "none", "--data", tmp_path / "none.txt", "--noise", spec,
                     "--shots", "10")
    assert match in line


def test_a_mitigation_parameter_given_twice_is_refused():
    from qelm.backends.mitigation import parse_mitigation

    with pytest.raises(ValueError, match="zne fit is given twice"):
        parse_mitigation("zne:fit=linear,fit=richardson")


# --- W3: flags that cannot apply are said so ----------------------------------------------------------------
@pytest.mark.parametrize("flags", [["--shots", "100"], ["--noise", "depolarizing", "--shots", "100"]])
def test_noise_and_shots_on_a_classical_checkpoint_are_refused(cli, checkpoint, corpus, flags):
    line = cli.error("eval", "--checkpoint", checkpoint, "--data", corpus, *flags)
    assert f"do not apply to {checkpoint}: it is a classical model" in line and flags[0] in line


# --- M4: check first, then announce ------------------------------------------------------------------------
def test_demo_announces_nothing_before_its_error(cli, tmp_path):
    rc, out, err = cli("demo", "--backend", "no-such-backend", "--steps", "1", "--out", tmp_path / "demo")
    assert rc == 2 and out == "" and "backend='no-such-backend' is invalid" in err


def test_a_refused_sweep_leaves_no_out_folder(cli, tmp_path, corpus):
    pytest.importorskip("optuna")
    bad = tmp_path / "bad.toml"
    bad.write_text("[search.model]\nd_model = [8, 12]\nn_heads = [8]\n")
    rc, out, _err = cli("sweep", "--space", bad, "--data", corpus, "--out", tmp_path / "s")
    assert rc == 2 and out == "" and not (tmp_path / "s").exists()


# --- M6: a sample too long to take ---------------------------------------------------------------------------
def test_eval_refuses_a_sample_it_could_never_finish(cli, tmp_path, corpus):
    line = cli.error("eval", "--checkpoint", tmp_path / "none", "--data", corpus, "--sample-tokens", str(10**20))
    assert "--sample-tokens 100000000000000000000 is too many: use at most 100000" in line


# --- a slow backend says what it is doing ---------------------------------------------------------------------
def test_slow_steps_are_noted_where_no_bar_is_shown(monkeypatch):
    import io
    import time

    import qelm.cli.slow_steps as slow

    monkeypatch.setattr(slow, "NOTE_AFTER", 0.2)
    out = io.StringIO()
    notes = slow.SlowStepNotes(str.upper, out)
    notes.seen("start", "qelm", {"step": 0, "steps": 2})
    time.sleep(0.5)
    notes.seen("step", "qelm", {"step": 1, "step_seconds": 61.5})
    time.sleep(0.5)
    notes.seen("end", "qelm", {})
    notes.stop()
    lines = out.getvalue().splitlines()
    assert lines[0].startswith("qelm train: training the QELM model, step 1 of 2: ") and "first step is still" in lines[0]
    assert any("step 2 of 2" in line and "its last step took 61.5 s" in line for line in lines)
    count = len(lines)
    time.sleep(0.4)
    assert len(out.getvalue().splitlines()) == count, "nothing after the model ended"


# --- M3: the message names the thing that is wrong -------------------------------------------------------------
def test_shots_with_another_backend_are_checked_against_that_backend(cli, corpus, config_file, tmp_path):
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "notes.txt").write_text("mine")  # refused after the config is built: nothing trains
    line = cli.error("train", "--data", corpus, "--config", config_file, "--out", tmp_path / "run", "--set", "shots=10",
                     "--backend", "default.qubit")
    assert "qelm.fused" not in line and "holds files that are not a qelm run" in line


def test_resuming_with_a_changed_model_flag_names_the_flag(cli, corpus, config_file, tmp_path):
    run = tmp_path / "run"
    assert cli("train", "--data", corpus, "--config", config_file, "--steps", "1", "--no-twin", "--no-matched",
               "--out", run)[0] == 0
    line = cli.error("train", "--resume", run, "--steps", "2", "--n-qubits", "3")
    assert "n_qubits: 2 vs 3" in line and "drop what changes it (--n-qubits, or the --config or --set" in line


def test_resuming_a_run_whose_circuit_is_not_registered_is_not_called_corrupt(tmp_path, periodic):
    from dataclasses import dataclass

    import pennylane as qml

    from qelm import QELMConfig
    from qelm.circuits import CIRCUITS, Circuit, register_circuit
    from qelm.train import train

    @dataclass(frozen=True)
    class Mine(Circuit):
        name = "mine_for_resume"
        kind = "embedding"

        @property
        def n_inputs(self):
            return self.n_qubits

        def apply(self, a):
            qml.AngleEmbedding(a[..., :self.n_qubits], wires=self.wires, rotation="Y")
            qml.StronglyEntanglingLayers(a[..., self.n_qubits:].reshape(a.shape[:-1] + self.weight_shape),
                                         wires=self.wires)

    register_circuit(Mine)
    try:
        cfg = QELMConfig(vocab_size=periodic.vocab_size, d_model=8, n_heads=2, d_hidden=16, context_len=6, n_qubits=2,
                         circuit_layers=1, embedding_circuit=Mine.name, backend="default.qubit")
        train(cfg, periodic, out=tmp_path / "run", steps=1, batch_size=2, twin=False, matched=False)
    finally:
        CIRCUITS.pop(Mine.name, None)
    with pytest.raises(ValueError) as error:
        train(None, periodic, out=tmp_path / "run", resume=True, steps=2)
    assert "corrupt" not in str(error.value) and "not valid in this process" in str(error.value)
    assert "register a circuit of your own" in str(error.value)


def test_a_training_setting_under_search_model_is_named_as_one():
    from qelm.sweep import parse_space

    with pytest.raises(ValueError, match=r"'lr' is not a QELMConfig field \(lr is a training setting: put it under "
                                         r"\[search.train\]\)"):
        parse_space("[search.model]\nlr = { low = 0.1, high = 0.001 }\n")


def test_an_indivisible_d_model_gets_a_sensible_suggestion():
    from qelm import QELMConfig

    with pytest.raises(ValueError, match=r"divisible by n_heads=4 \(try 16\)"):
        QELMConfig(d_model=17, n_heads=4)
    with pytest.raises(ValueError) as error:
        QELMConfig(d_model=99999999999999999)
    assert "try" not in str(error.value) and "parameters" in str(error.value)


class _Pickled:
    pass


def test_a_pickled_training_state_does_not_quote_torchs_advice(tmp_path, periodic):
    import torch

    from qelm.model_files import MANIFEST, TRAINING_STATE
    from qelm import QELMConfig
    from qelm.train import train

    cfg = QELMConfig(vocab_size=periodic.vocab_size, d_model=8, n_heads=2, d_hidden=16, context_len=6, n_qubits=2,
                     circuit_layers=1)
    train(cfg, periodic, out=tmp_path / "run", steps=1, batch_size=2, twin=False, matched=False)
    path = tmp_path / "run" / "qelm" / TRAINING_STATE
    state = torch.load(path, weights_only=True)
    torch.save({**state, "extra": _Pickled()}, path)  # a class of the user's: torch refuses it as weights
    (tmp_path / "run" / "qelm" / MANIFEST).unlink()  # an older layout: the file is read unchecked
    with pytest.raises(ValueError) as error:
        train(None, periodic, out=tmp_path / "run", resume=True, steps=2)
    assert "weights_only" not in str(error.value) and "or holds Python objects a qelm save never writes" in str(error.value)


def test_a_checked_tokenizer_that_cannot_be_parsed_names_the_checkpoints_file(cli, checkpoint, corpus, binary):
    import hashlib
    import json

    from qelm.model_files import MANIFEST, TOKENIZER

    data = binary.read_bytes()
    (checkpoint / TOKENIZER).write_bytes(data)
    manifest = json.loads((checkpoint / MANIFEST).read_text())  # the manifest agrees: it was saved so
    manifest["files"][TOKENIZER] = {"bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}
    (checkpoint / MANIFEST).write_text(json.dumps(manifest))
    line = cli.error("eval", "--checkpoint", checkpoint, "--data", corpus)
    assert f"tokenizer file '{checkpoint / TOKENIZER}' is corrupt: not UTF-8 text" in line
