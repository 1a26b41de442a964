"""Start-up: ``import qelm``, ``qelm --help`` and ``qelm --version`` load none of the heavy libraries (torch,
PennyLane, qiskit, matplotlib, huggingface_hub), and no model compiles ``torch._dynamo`` into an import. Counted
by which modules a fresh interpreter holds afterwards, not timed: a busy machine cannot make it flaky."""

import argparse
import json
import subprocess
import sys

import pytest

import qelm
from qelm.cli import build_parser
from qelm.cli.commands import COMMANDS

HEAVY = ("torch", "pennylane", "qiskit", "qiskit_aer", "matplotlib", "huggingface_hub", "tokenizers", "numpy",
         "scipy", "safetensors")


def _loaded(code: str) -> set[str]:
    """The top-level packages (and ``torch._dynamo``) a fresh interpreter holds after running ``code``."""
    probe = (f"import sys, json\n{code}\n"
             "print(json.dumps(sorted({m.split('.')[0] for m in sys.modules} | "
             "({'torch._dynamo'} & set(sys.modules)))))")
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=300, check=True)
    return set(json.loads(done.stdout.splitlines()[-1]))


@pytest.mark.parametrize("code", [
    "import qelm",
    "import qelm.cli",
    "from qelm.cli import main\ntry:\n    main(['--help'])\nexcept SystemExit:\n    pass",
    "from qelm.cli import main\ntry:\n    main(['--version'])\nexcept SystemExit:\n    pass",
])
def test_start_up_loads_no_heavy_library(code):
    heavy = _loaded(code) & set(HEAVY)
    assert not heavy, f"{code!r} imports {sorted(heavy)}: import them where they are used"


@pytest.mark.slow
def test_a_model_imports_no_compiler():
    """``torch.compiler.disable`` imports ``torch._dynamo`` (over a second): it is applied when a model is first
    compiled, not when qelm is imported."""
    loaded = _loaded("from qelm import QELM, QELMConfig\nQELM(QELMConfig())")
    assert "torch" in loaded and "torch._dynamo" not in loaded


def test_every_public_name_resolves_from_its_module():
    for name in qelm.__all__:
        assert getattr(qelm, name) is not None
        assert name in dir(qelm)
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        qelm.nope  # noqa: B018


def _choices(parser: argparse.ArgumentParser) -> dict[str, str]:
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return {c.dest: c.help for c in action._choices_actions}


def test_the_command_table_is_what_the_modules_register():
    """``qelm --help`` is drawn from :data:`COMMANDS` without importing the commands: the same names, order and help."""
    assert _choices(build_parser()) == {name: help_text for name, (_, help_text) in COMMANDS.items()}
    assert list(_choices(build_parser())) == list(COMMANDS)
    assert _choices(build_parser([])) == _choices(build_parser())


def test_a_command_registers_only_its_own_module(capsys):
    parser = build_parser(["eval"])
    args = parser.parse_args(["eval", "--checkpoint", "c", "--data", "d"])
    assert args.command == "eval" and callable(args.func)
    with pytest.raises(SystemExit) as exit_:
        parser.parse_args(["nope"])
    assert exit_.value.code == 2 and "invalid choice: 'nope'" in capsys.readouterr().err


@pytest.mark.parametrize("shell", ["bash", "zsh"])
def test_completion_knows_every_command_and_flag(cli, shell):
    pytest.importorskip("shtab")
    rc, out, _ = cli("completion", shell)
    assert rc == 0
    for word in (*COMMANDS, "--embedding-circuit", "--max-new-tokens", "--import"):
        assert word in out, word


def test_completion_without_shtab_names_the_install_command(cli, monkeypatch):
    monkeypatch.setitem(sys.modules, "shtab", None)  # as if not installed
    assert cli.error("completion", "bash") == ("qelm completion: error: shell completion needs shtab, which is not "
                                               "installed: pip install 'qelm-lab[completion]' (or pip install shtab)")
