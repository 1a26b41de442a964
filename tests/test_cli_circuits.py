"""Circuits of your own on the command line: ``--import`` of a module or a Python file (or ``:NAME`` of it)
registers them for train, eval, generate and draw; ``qelm draw --list`` lists them beside the built-in ones; a
checkpoint that names one is refused in one line, naming it, until it is imported again; and every bad
``--import`` is one line, exit code 2."""

from __future__ import annotations

import json
import sys

import pytest

from qelm.circuits import CIRCUITS

CIRCUITS_FILE = '''
from dataclasses import dataclass

import pennylane as qml

from qelm.circuits import Circuit, register_circuit


@dataclass(frozen=True)
class Heads(Circuit):
    """RX data angles, then the strongly entangling layers of the weights."""

    name = "cli_heads"
    kind = "attention"

    @property
    def n_inputs(self):
        return self.n_qubits

    def apply(self, a):
        n = self.n_qubits
        qml.AngleEmbedding(a[..., :n], wires=self.wires, rotation="X")
        qml.StronglyEntanglingLayers(a[..., n:].reshape(a.shape[:-1] + self.weight_shape), wires=self.wires)


@register_circuit
@dataclass(frozen=True)
class Block(Heads):
    name = "cli_block"
    kind = "feed_forward"
'''
NAMES = ("cli_heads", "cli_block")


@pytest.fixture
def circuits_file(tmp_path, monkeypatch):
    """``my_circuits.py`` in the current folder: ``cli_block`` registered on import, ``cli_heads`` only when named
    (``--import my_circuits.py:Heads``)."""
    path = tmp_path / "my_circuits.py"
    path.write_text(CIRCUITS_FILE, encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", list(sys.path))
    yield path
    for name in NAMES:
        CIRCUITS.pop(name, None)
    sys.modules.pop("my_circuits", None)


def _forget():
    """What a new process knows: the built-in circuits only."""
    for name in NAMES:
        CIRCUITS.pop(name, None)
    sys.modules.pop("my_circuits", None)


def test_custom_circuits_in_every_command_that_builds_or_loads_a_model(cli, circuits_file, corpus, config_file, tmp_path):
    imports = ("--import", "my_circuits.py:Heads")
    rc, _, err = cli(*imports, "train", "--data", corpus, "--config", config_file, "--out", tmp_path / "run", "--steps",
                     "1", "--no-twin", "--no-matched", "--attention-circuit", "cli_heads", "--feed-forward-circuit",
                     "cli_block")
    assert rc == 0, err
    checkpoint = tmp_path / "run" / "qelm"

    _forget()  # a new process: the checkpoint names circuits nobody has registered
    line = cli.error("generate", "--checkpoint", checkpoint, "--prompt", "the", "--max-new-tokens", "3")
    assert "attention_circuit='cli_heads'" in line and "register_circuit" in line and "--import" in line

    rc, out, err = cli(*imports, "generate", "--checkpoint", checkpoint, "--prompt", "the", "--max-new-tokens", "3",
                       "--seed", "0")
    assert rc == 0 and out.startswith("the"), err
    _forget()
    rc, out, err = cli("eval", "--checkpoint", checkpoint, "--data", corpus, "--sample-tokens", "0", "--import",
                       "my_circuits:Heads")  # a module name works as well as the file, anywhere on the line
    assert rc == 0 and "perplexity" in out, err
    _forget()
    rc, out, err = cli(*imports, "draw", "cli_block", "--checkpoint", checkpoint)
    assert rc == 0 and "blocks.0.feed_forward" in out and "RX" in out, err


def test_a_process_of_its_own_imports_what_registered_the_circuits_still_registered(circuits_file):
    from qelm.circuits import import_circuits, imports_for

    assert sorted(import_circuits("my_circuits.py:Heads")) == sorted(NAMES)
    assert imports_for() == ["my_circuits.py:Heads"] and imports_for(["cli_block"]) == ["my_circuits.py:Heads"]
    assert imports_for(["angle"]) == []
    _forget()  # gone from the registry (or registered again by other code): nothing to import for it
    assert imports_for() == [] and imports_for(["cli_heads"]) == []


def test_draw_list_shows_built_in_and_registered_circuits(cli, circuits_file):
    rc, out, _ = cli("draw", "--list")
    assert rc == 0 and "cli_heads" not in out
    rows = {line.split()[0]: line.split()[1:] for line in out.splitlines()[1:]}
    assert rows["angle"] == ["embedding", "embedding_circuit", "built-in"]
    assert rows["fidelity"] == ["attention", "-", "built-in"]  # fidelity attention's own, not a choice
    rc, out, _ = cli("--import", "my_circuits.py:Heads", "draw", "--list")
    rows = {line.split()[0]: line.split()[1:] for line in out.splitlines()[1:]}
    assert rc == 0 and rows["cli_heads"] == ["attention", "attention_circuit", "my_circuits", "(registered)"]
    assert rows["cli_block"] == ["feed_forward", "feed_forward_circuit", "my_circuits", "(registered)"]


@pytest.mark.parametrize("given, words", [
    ("no_such_file.py", "--import no_such_file.py: no such Python file"),
    ("sub/folder/", "--import sub/folder/: no such Python file"),
    ("empty.py", "--import empty.py: it registers no circuit: decorate your Circuit subclasses with "
                 "@qelm.circuits.register_circuit, or name one to register: empty.py:MyCircuit"),
    ("my_circuits.py:Nope", "--import my_circuits.py:Nope: my_circuits.py has no attribute 'Nope'"),
    ("my_circuits.py:dataclass", "--import my_circuits.py:dataclass: dataclass is <function dataclass"),
    ("", "--import takes a module or a Python file"),
])
def test_a_bad_import_is_one_line(cli, circuits_file, given, words):
    (circuits_file.parent / "empty.py").write_text("x = 1\n", encoding="utf-8")
    line = cli.error("--import", given, "draw", "--list")
    assert line.startswith(f"qelm: error: {words}"), line


def test_an_unknown_circuit_name_lists_the_known_ones(cli, corpus, config_file, tmp_path):
    line = cli.error("train", "--data", corpus, "--config", config_file, "--out", tmp_path / "run",
                     "--attention-circuit", "nope")
    assert ("attention_circuit='nope' is invalid: no circuit named 'nope' is registered in this process "
            "(registered attention circuits: attention)") in line
    line = cli.error("draw", "nope")
    assert "unknown circuit 'nope': valid circuits are amplitude, angle" in line and "--import" in line


def test_bench_measures_a_custom_circuit_in_its_own_processes(cli, circuits_file):
    """Each measurement runs in a process of its own, which imports what registered the circuit."""
    rc, out, err = cli("--import", "my_circuits.py:Heads", "bench", "--quick", "--seq-lens", "8", "--modes",
                       "inference", "--attention-circuit", "cli_heads", "--feed-forward-circuit", "cli_block",
                       "--n-qubits", "2", "--circuit-layers", "1", "--d-model", "8", "--json")
    assert rc == 0, err
    rows = json.loads(out)["rows"]
    assert [r["status"] for r in rows] == ["ok", "ok"] and rows[0]["model"] == "qelm", rows
