"""The conventions users bring from PyTorch, Hugging Face and other LM tools: ``qelm --version``, an
installable distribution name, one flag vocabulary (a config field ``foo_bar`` is ``--foo-bar`` in every
command), every default shown in ``--help`` with its source, model-size flags and ``--set``, ``eval``
reporting unknown tokens and which checkpoint it read, and progress bars that print each finished bar once."""

import argparse
import io
import json
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

import qelm
import qelm.cli
import qelm.cli.progress
from qelm.checkpoint import load_checkpoint
from qelm.cli import build_parser
from qelm.cli.options import MODEL_FLAGS, flag

pytestmark = pytest.mark.usefixtures("_one_thread")
ROOT = Path(__file__).resolve().parents[1]



def _commands(parser=None, prefix=""):
    """``{"train": parser, "plot curves": parser, ...}``: every (sub-)command's parser."""
    parser = parser or build_parser()
    found = {}
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                found[f"{prefix}{name}"] = sub
                found.update(_commands(sub, f"{prefix}{name} "))
    return found


# --- 1, 6: the version and the distribution ------------------------------------------------------------------
def test_version_names_qelm_and_how_to_install_it():
    run = subprocess.run([sys.executable, "-m", "qelm", "--version"], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0 and run.stdout.startswith(f"qelm {qelm.__version__} (pip install qelm-lab;")
    assert "torch" in run.stdout and run.stderr == ""


def test_the_distribution_has_its_own_name_and_installs_import_qelm_and_the_qelm_command():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert project["name"] == qelm.DISTRIBUTION == "qelm-lab", "qelm on the package index is another project"
    assert project["scripts"] == {"qelm": "qelm.cli:main"} and "version" in project["dynamic"]
    assert "pip install qelm-lab" in (ROOT / "README.md").read_text()


# --- 5, 8: one vocabulary, every default shown ----------------------------------------------------------------
def test_every_flag_of_every_command_shows_its_default():
    for name, parser in _commands().items():
        for action in parser._actions:
            if action.help == argparse.SUPPRESS or action.nargs == 0 or action.required:
                continue  # hidden (a renamed flag), a switch, or a required argument
            if isinstance(action, argparse._SubParsersAction) or (not action.option_strings and action.nargs is None):
                continue
            assert "default" in (action.help or ""), f"qelm {name} {'/'.join(action.option_strings) or action.dest}"


def test_help_prints_percent_signs_once_and_the_vocabulary(capsys):
    for argv in (["eval", "--help"], ["--help"]):
        with pytest.raises(SystemExit):
            qelm.cli.main(argv)
        out = capsys.readouterr().out
        assert "%%" not in out
    with pytest.raises(SystemExit):
        qelm.cli.main(["eval", "--help"])
    assert "last 10% (the split" in " ".join(capsys.readouterr().out.split())  # however argparse wraps it
    with pytest.raises(SystemExit):
        qelm.cli.main(["--help"])
    out = capsys.readouterr().out
    assert "one vocabulary, every command" in out and "--set FIELD=VALUE" in out and "--json [FILE]" in out


def test_a_flag_means_one_thing_in_every_command():
    """A model flag is its config field wherever it appears; --json takes an optional FILE everywhere;
    --backend one name; --checkpoint a folder; no command has --layers or --qubits in its help."""
    seen: dict[str, set] = {}
    for parser in _commands().values():
        for action in parser._actions:
            if action.help == argparse.SUPPRESS:
                continue
            for option in action.option_strings:
                seen.setdefault(option, set()).add((action.dest, action.nargs if option != "--backend" else None))
                assert option not in ("--layers", "--qubits", "--heads", "--hidden", "--context", "--batch", "--text")
    for field in MODEL_FLAGS:
        assert {dest for dest, _ in seen.get(flag(field), ())} <= {field}, field
    assert seen["--json"] == {("json", "?")}
    for option in ("--seed", "--checkpoint", "--backend", "--out", "--prompt", "--data", "--config"):
        assert len({dest for dest, _ in seen[option]}) == 1, option
    assert {"train", "compare", "bench"} <= {n for n, p in _commands().items()
                                            if any("--n-qubits" in a.option_strings for a in p._actions)}
    assert "--set" in {o for n in ("train", "compare", "bench") for a in _commands()[n]._actions for o in a.option_strings}


@pytest.mark.parametrize("argv, old", [
    (["compare", "--heads", "2"], "--heads"),
    (["compare", "--classic"], "--classic"),
    (["draw", "angle", "--qubits", "2"], "--qubits"),
    (["draw", "angle", "--layers", "1"], "--layers"),
    (["bench", "--qubits", "2,4"], "--qubits"),
])
def test_one_spelling_of_each_flag(cli, argv, old):
    """Before the first release, the old spellings are gone: each flag is its config field's name."""
    line = cli.error(*argv)
    assert "unrecognized arguments" in line and old in line


def test_bench_flags_parse_to_their_settings():
    from qelm.cli.bench import settings_from_args

    parser = _commands()["bench"]
    args = parser.parse_args(["--qubit-sweep", "2,4", "--batch-size", "3", "--backend", "qelm.fused",
                              "--backend", "default.qubit", "--n-qubits", "3", "--set", "readout=zz"])
    config, settings = settings_from_args(args)
    assert (settings.qubits, settings.batch, settings.backends) == ((2, 4), 3, ("qelm.fused", "default.qubit"))
    assert (config.n_qubits, config.readout) == (3, "zz")


def test_train_takes_model_flags_and_set_and_refuses_unknown_fields(tmp_path, cli, corpus, config_file):
    rc, _, err = cli("train", "--data", corpus, "--config", config_file, "--out", tmp_path / "r", "--steps", "1",
                     "--no-twin", "--no-matched", "--n-qubits", "3", "--set", "circuit_layers=2", "--set", "readout=zz",
                     "--set", "lr_schedule=constant", "--d-model", "6", "--n-heads", "3")
    assert rc == 0, err
    ck = load_checkpoint(tmp_path / "r" / "qelm")
    assert (ck.config.n_qubits, ck.config.circuit_layers, ck.config.readout, ck.config.d_model) == (3, 2, "zz", 6)
    assert ck.training_state["run"]["lr_schedule"] == "constant"
    line = cli.error("train", "--data", corpus, "--config", config_file, "--out", tmp_path / "s", "--set", "qubits=3")
    assert "'qubits' is not a config field; valid fields are" in line and "n_qubits" in line
    line = cli.error("train", "--data", corpus, "--out", tmp_path / "s", "--n-qubits", "3", "--set", "n_qubits=4")
    assert "n_qubits is given twice (3 and 4)" in line
    line = cli.error("train", "--data", corpus, "--out", tmp_path / "s", "--set", "n_qubits")
    assert "argument --set: 'n_qubits' is not FIELD=VALUE" in line


def test_train_help_names_each_default_and_where_it_comes_from(capsys):
    with pytest.raises(SystemExit):
        qelm.cli.main(["train", "--help"])
    out = " ".join(capsys.readouterr().out.split())
    tiny = tomllib.loads((ROOT / "qelm" / "data" / "tiny.toml").read_text())
    assert (f"(default {tiny['train']['steps']}: the bundled tiny config's [train]; with --config, that file's [train], "
            f"else 300)") in out
    assert f"(default {tiny['model']['n_qubits']}: the bundled tiny config; with --config, that file's [model])" in out
    assert "(default cosine: qelm's own" in out and "(default 5% of the steps" in out


# --- 9, 10: eval reports unknown tokens and which checkpoint it loads ------------------------------------------
def test_eval_reports_tokens_that_fell_back_and_which_checkpoint_it_read(tmp_path, cli, corpus, config_file):
    assert cli("train", "--data", corpus, "--config", config_file, "--out", tmp_path / "r", "--no-twin",
               "--no-matched")[0] == 0
    other = tmp_path / "other.txt"
    other.write_text("The Cat sat on the Mat! " * 20, encoding="utf-8")  # T, C, M and ! are new
    rc, out, _ = cli("eval", "--checkpoint", tmp_path / "r" / "qelm", "--data", other)
    assert rc == 0 and "tokens fell back to the unknown token" in out and "'!' (U+0021" in out
    assert "step 4, the last of its run" in out
    rc, out, _ = cli("eval", "--checkpoint", tmp_path / "r" / "qelm" / "best", "--data", other, "--json")
    record = json.loads(out)
    assert record["which"] == "best" and record["unknown_tokens"] == 2 * 4  # 'T', 'C', 'M', '!' in 2 val sentences
    rc, out, _ = cli("eval", "--checkpoint", tmp_path / "r" / "qelm", "--data", corpus, "--json", tmp_path / "e.json")
    assert rc == 0 and "perplexity" in out and json.loads((tmp_path / "e.json").read_text())["unknown_tokens"] == 0
    rc, _, err = cli("generate", "--checkpoint", tmp_path / "r" / "qelm" / "best", "--prompt", "the", "--max-new-tokens", 2)
    assert rc == 0 and "(qelm, best by validation: step" in err


# --- 11: progress bars --------------------------------------------------------------------------------------
class _Tty(io.StringIO):
    def isatty(self):
        return True


def test_progress_prints_the_finished_bar_once_with_the_training_rate(monkeypatch):
    monkeypatch.setattr(qelm.cli.progress, "show_progress", lambda: True)
    out = _Tty()
    progress = qelm.cli.progress.Progress(file=out)
    progress("start", "qelm", {"step": 0, "steps": 40, "tokens_per_step": 100})
    live = []
    for step in range(1, 41):
        seconds = 0.001 if step % 2 else 0.004  # 100k and 25k tokens/s, step after step
        record = {"step": step, "loss": 1.0, "tokens": 100, "step_seconds": seconds}
        if step % 10 == 0:
            record.update(val_loss=1.0, val_perplexity=2.72)
        progress("step", "qelm", record)
        live.append(1 / progress.per_token["qelm"])
    progress("end", "qelm", {"val": {"perplexity": 2.5}})
    frames = [f for f in out.getvalue().replace("\n", "\r").split("\r") if f.strip()]
    finished = [f for f in frames if "40/40" in f]
    assert len(finished) == 1, finished
    assert "tok/s=40000" in finished[0] and "val_ppl=2.50" in finished[0], "4000 tokens in 0.1 s of training steps"
    assert max(live[10:]) / min(live[10:]) < 1.5, "the live rate is smoothed: raw rates swing 4x"
