"""Habits users bring from PyTorch and Hugging Face: greedy decoding (``do_sample=False``, ``temperature=0``),
``input_ids=`` and a ``streamer``; ``torch.load`` of what ``torch.save`` wrote; model cards; a char tokenizer file
``tokenizers`` reads; ``qelm --import``; ``--report-to`` a tracker."""

import io
import math
import re
import sys
from typing import ClassVar

import pytest
import torch

from qelm import QELM


class Recorder:
    """A streamer with Hugging Face's protocol: ``put(token_ids)`` and ``end()``."""

    def __init__(self) -> None:
        self.calls: list = []

    def put(self, value: torch.Tensor) -> None:
        self.calls.append(value.clone())

    def end(self) -> None:
        self.calls.append("end")


@pytest.fixture
def model(tiny_config):
    torch.manual_seed(0)
    return QELM(tiny_config).eval()


def test_greedy_decoding_takes_the_most_likely_token_each_step(model):
    idx = torch.tensor([[1, 2, 3], [4, 5, 6]])
    greedy = model.generate(input_ids=idx, max_new_tokens=5, do_sample=False)
    assert torch.equal(greedy, model.generate(idx, 5, temperature=0))
    assert torch.equal(greedy, model.generate(idx, 5, temperature=0, generator=torch.Generator().manual_seed(9)))
    expected = idx
    for _ in range(5):  # the definition, one step at a time and without the cache
        logits, _ = model(expected[:, -model.config.context_len:])
        expected = torch.cat([expected, logits[:, -1].argmax(-1, keepdim=True)], dim=1)
    assert torch.equal(greedy, expected)


def test_a_streamer_gets_the_prompt_then_each_new_token_then_end(model):
    idx = torch.tensor([[1, 2, 3]])
    streamer = Recorder()
    out = model.generate(idx, 4, do_sample=False, streamer=streamer)
    assert torch.equal(streamer.calls[0], idx) and streamer.calls[-1] == "end" and len(streamer.calls) == 6
    assert torch.equal(torch.stack(streamer.calls[1:-1], dim=1), out[:, 3:])  # each put is (B,)


@pytest.mark.parametrize("kwargs, message", [
    (dict(idx=torch.tensor([[1]]), input_ids=torch.tensor([[1]]), max_new_tokens=1), "not both"),
    (dict(input_ids=torch.tensor([[1]])), "max_new_tokens"),
    (dict(idx=torch.tensor([[1]]), max_new_tokens=1, do_sample="no"), "do_sample='no' is invalid"),
    (dict(idx=torch.tensor([[1]]), max_new_tokens=1, streamer=print), "streamer=.* is invalid"),
])
def test_generate_refuses_what_cannot_be_meant(model, kwargs, message):
    with pytest.raises(ValueError, match=message):
        model.generate(**kwargs)


def test_torch_load_reads_a_saved_state_dict_under_its_default_and_a_whole_model_when_trusted(model):
    """``torch.save(model.state_dict())`` loads under torch's default ``weights_only=True``; a pickled whole
    model runs code of the classes it names, so torch refuses it unless told ``weights_only=False``."""
    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    buffer.seek(0)
    state = torch.load(buffer)
    assert all(torch.equal(state[k], v) for k, v in model.state_dict().items())
    buffer = io.BytesIO()
    torch.save(model, buffer)
    buffer.seek(0)
    with pytest.raises(Exception, match="weights_only"):
        torch.load(buffer)
    buffer.seek(0)
    whole = torch.load(buffer, weights_only=False)
    idx = torch.tensor([[1, 2, 3]])
    assert torch.equal(whole(idx)[0], model(idx)[0])


def test_the_model_card_names_the_project_and_its_usage_snippet_runs(model, tmp_path):
    from qelm.version import URL

    model.save_pretrained(tmp_path / "m")
    card = (tmp_path / "m" / "README.md").read_text(encoding="utf-8")
    assert f"Code: {URL}" in card and "More Information Needed" not in card and "pip install qelm-lab" in card
    snippet = re.search(r"```python\n(.*?)```", card, re.DOTALL).group(1).replace("user/repo", str(tmp_path / "m"))
    namespace: dict = {}
    exec(snippet, namespace)
    assert namespace["out"].shape == (1, 21)
    model.save_pretrained(tmp_path / "n", repo_id="someone/tiny-qelm")
    assert 'QELM.from_pretrained("someone/tiny-qelm")' in (tmp_path / "n" / "README.md").read_text(encoding="utf-8")


@pytest.mark.parametrize("unknown", [True, False], ids=["with-unknown", "older-without"])
def test_the_char_tokenizer_file_is_a_tokenizers_file(tmp_path, unknown):
    from tokenizers import Tokenizer

    from qelm.tokenizer import CharTokenizer, load_tokenizer

    text = "héllo\twörld\n\r 😀 e\u0301 \u2028\x00 \"quoted\" \\"
    ours = CharTokenizer.from_text(text) if unknown else CharTokenizer(sorted(set(text)))
    path = ours.save_pretrained(tmp_path)
    theirs = Tokenizer.from_file(str(path))
    probe = text + ("Zq" if unknown else "")
    assert theirs.encode(probe).ids == ours.encode(probe)
    assert theirs.decode(ours.encode(text)) == ours.decode(ours.encode(text)) == text
    back = load_tokenizer(tmp_path)
    assert isinstance(back, CharTokenizer) and back.chars == ours.chars and back.unk == ours.unk


CIRCUIT_MODULE = '''
from dataclasses import dataclass

import pennylane as qml

from qelm.circuits import Circuit, register_circuit


@register_circuit
@dataclass(frozen=True)
class RXOnly(Circuit):
    name = "rx_cli_test"
    kind = "embedding"

    @property
    def n_inputs(self):
        return self.n_qubits

    def apply(self, a):
        n = self.n_qubits
        qml.AngleEmbedding(a[..., :n], wires=self.wires, rotation="X")
        qml.StronglyEntanglingLayers(a[..., n:].reshape(a.shape[:-1] + self.weight_shape), wires=self.wires)
'''


def test_the_command_line_imports_a_module_of_circuits(cli, tmp_path, monkeypatch, corpus, config_file):
    import sys

    from qelm.checkpoint import load_checkpoint
    from qelm.circuits import CIRCUITS

    (tmp_path / "cli_circuits.py").write_text(CIRCUIT_MODULE, encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", list(sys.path))
    try:
        rc, _, err = cli("train", "--import", "cli_circuits", "--data", corpus, "--config", config_file, "--out",
                         tmp_path / "run", "--steps", "1", "--no-twin", "--no-matched",
                         "--embedding-circuit", "rx_cli_test")
        assert rc == 0, err
        assert load_checkpoint(tmp_path / "run" / "qelm").model.config.embedding_circuit == "rx_cli_test"
    finally:
        CIRCUITS.pop("rx_cli_test", None)
        sys.modules.pop("cli_circuits", None)


@pytest.mark.parametrize("argv", [["--import", "no_such_module_here", "eval"], ["eval", "--import=no_such_module_here"]])
def test_importing_a_module_that_does_not_exist_is_one_line(cli, argv):
    rc, out, err = cli(*argv)
    assert rc == 2 and out == ""
    assert err == ("qelm: error: --import no_such_module_here: No module named 'no_such_module_here' (a module in "
                   "the current folder, or an installed package)\n")


class _FakeWriter:
    written: ClassVar[list] = []

    def __init__(self, log_dir):
        self.log_dir = log_dir

    def add_scalar(self, key, value, step):
        self.written.append((self.log_dir, key, value, step))

    def close(self):
        self.written.append((self.log_dir, "closed"))


class _FakeRun:
    def __init__(self, logged, **kwargs):
        self.logged, self.kwargs = logged, kwargs

    def log(self, numbers, step):
        self.logged.append((self.kwargs["name"], step, numbers))

    def finish(self):
        self.logged.append((self.kwargs["name"], "finished"))


def test_training_reports_to_tensorboard_and_wandb(cli, tmp_path, monkeypatch, corpus, config_file):
    import types

    _FakeWriter.written = []
    logged: list = []
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", types.SimpleNamespace(SummaryWriter=_FakeWriter))
    monkeypatch.setitem(sys.modules, "wandb", types.SimpleNamespace(init=lambda **kw: _FakeRun(logged, **kw)))
    rc, _, err = cli("train", "--data", corpus, "--config", config_file, "--out", tmp_path / "run", "--steps", "2",
                     "--log-every", "1", "--no-twin", "--no-matched", "--report-to", "tensorboard", "--report-to", "wandb")
    assert rc == 0, err
    folder = str(tmp_path / "run" / "tensorboard" / "qelm")
    losses = [(step, value) for where, *rest in _FakeWriter.written if where == folder and len(rest) == 3
              for key, value, step in [rest] if key == "loss"]
    assert [step for step, _ in losses] == [1, 2] and all(math.isfinite(v) for _, v in losses)
    assert _FakeWriter.written[-1] == (folder, "closed")
    assert [step for name, step, *_ in logged if step != "finished"] == [1, 2] and logged[-1] == ("run/qelm", "finished")
    assert all("loss" in numbers and "step" not in numbers for *_, numbers in logged[:-1])


@pytest.mark.parametrize("name", ["tensorboard", "wandb"])
def test_a_tracker_that_is_not_installed_names_its_install_command(cli, tmp_path, monkeypatch, corpus, name):
    monkeypatch.setitem(sys.modules, {"tensorboard": "torch.utils.tensorboard", "wandb": "wandb"}[name], None)
    assert cli.error("train", "--data", corpus, "--out", tmp_path / "run", "--report-to", name) == (
        f"qelm train: error: --report-to {name} needs the {name} package, which is not installed: "
        f"pip install 'qelm-lab[{name}]' (or pip install {name})")
    assert not (tmp_path / "run").exists()


@pytest.fixture
def _log_level_restored():
    from qelm.cli import set_verbosity

    yield
    set_verbosity(0)


@pytest.mark.usefixtures("_log_level_restored")
@pytest.mark.parametrize("flags, said", [((), False), (("-v",), True), (("-q",), False)], ids=["default", "-v", "-q"])
def test_verbosity_flags_set_what_the_log_says(cli, tmp_path, corpus, config_file, flags, said):
    import logging

    rc, _, err = cli("train", "--data", corpus, "--config", config_file, "--out", tmp_path / "run", "--steps", "1",
                     "--no-twin", "--no-matched", *flags)
    assert rc == 0, err
    assert ("qelm.train.steps: qelm: steps 1 to 1" in err) == said, err
    level = logging.getLogger("qelm").getEffectiveLevel()
    assert level == {(): logging.WARNING, ("-v",): logging.INFO, ("-q",): logging.ERROR}[flags]
    if flags == ("-q",):
        from qelm.cli.progress import show_progress

        assert not show_progress() and err == ""


@pytest.mark.usefixtures("_log_level_restored")
def test_very_verbose_logs_every_metrics_record(cli, tmp_path, corpus, config_file):
    rc, _, err = cli("-vv", "train", "--data", corpus, "--config", config_file, "--out", tmp_path / "run", "--steps",
                     "2", "--log-every", "1", "--no-twin", "--no-matched")
    assert rc == 0 and err.count('qelm.train.steps: qelm: {"step": ') == 2, err
