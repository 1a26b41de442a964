"""Property: every number the command line takes (a flag, or a field of the config file's [model] and
[train] tables) either is refused with one line naming it and exit code 2, before any work, or gives a
finite, working run. Hypothesis draws the numbers: small valid ones, zero, negatives, huge ones, fractions,
NaN and infinities. Valid numbers are drawn small (a huge valid step count would just run long)."""

import contextlib
import io
import json
import math
import re
import tempfile
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import qelm.cli
import qelm.train.run
from qelm.files import atomic_write

pytestmark = pytest.mark.usefixtures("_one_thread")

CORPUS = "the cat sat on the mat. the dog ran to the log. a hen and a fox.\n" * 8
MODEL = {"d_model": 8, "n_heads": 2, "d_hidden": 16, "n_layers": 1, "context_len": 8, "n_qubits": 2, "circuit_layers": 1}
TRAIN = {"steps": 1, "batch_size": 2}
HUGE = 2**63 - 1  # the largest integer a TOML file holds


def _ints(low: int, high: int, huge: bool = True) -> st.SearchStrategy[int]:
    """Valid small integers in [low, high], their neighbours below, negative ones and (unless a huge value is
    valid and would only run long, as a step count) huge ones."""
    return st.one_of(st.integers(low - 3, high), st.integers(-(2**70), -4),
                     *([st.integers(2**40, 2**70)] if huge else []))


def _numbers(low: int, high: int, huge: bool = True) -> st.SearchStrategy[str]:
    """A flag's text: an integer as above, or any float (fractions, NaN, infinities, subnormals)."""
    return st.one_of(_ints(low, high, huge).map(str), st.floats(allow_nan=True, allow_infinity=True).map(repr))


def _config_numbers(low: int, high: int, huge: bool = True) -> st.SearchStrategy:
    """A TOML value: an integer a TOML file can hold, any float, or a boolean."""
    return st.one_of(_ints(low, high, huge).filter(lambda v: -HUGE - 1 <= v <= HUGE), st.floats(), st.booleans())


@contextlib.contextmanager
def _plotless():
    with pytest.MonkeyPatch.context() as m:
        m.setattr(qelm.train.run, "plot_curves", lambda curves, path, **kwargs: atomic_write(path, b"stub"))
        yield


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    """A corpus, a tiny config and a trained checkpoint; the loss curve is a stub (drawing it is slow)."""
    root = tmp_path_factory.mktemp("numbers")
    (root / "corpus.txt").write_text(CORPUS, encoding="utf-8")
    _write_config(root / "tiny.toml", MODEL, TRAIN)
    with _plotless():
        rc, _, err = _qelm("train", "--data", root / "corpus.txt", "--config", root / "tiny.toml", "--out", root / "run",
                           "--no-twin", "--no-matched")
        assert rc == 0, err
        yield root


def _write_config(path: Path, model: dict, train: dict) -> None:
    def toml(v):
        if isinstance(v, bool):
            return str(v).lower()
        if isinstance(v, float) and not math.isfinite(v):
            return "nan" if math.isnan(v) else ("inf" if v > 0 else "-inf")
        return repr(v)

    path.write_text("[model]\n" + "".join(f"{k} = {toml(v)}\n" for k, v in model.items()) +
                    "[train]\n" + "".join(f"{k} = {toml(v)}\n" for k, v in train.items()), encoding="utf-8")


def _qelm(*argv) -> tuple[int, str, str]:
    """``qelm ARGV`` in this process: (exit code, stdout, stderr); torch's thread count is left as it was."""
    out, err, threads = io.StringIO(), io.StringIO(), torch.get_num_threads()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            rc = qelm.cli.main([str(a) for a in argv])
        except SystemExit as e:  # argparse
            rc = e.code
    torch.set_num_threads(threads)
    return rc, out.getvalue(), err.getvalue()


def _refused_by_name_or_ran(rc: int, err: str, names: tuple[str, ...]) -> str | None:
    """``None`` when the command ran; the error line when it was refused as it must be."""
    assert "Traceback" not in err, err
    if rc == 0:
        return None
    lines = [line for line in err.splitlines() if line.strip()]
    assert rc == 2 and len(lines) == 1, (rc, err)
    assert any(re.search(rf"(^|[^\w-]){re.escape(n)}(\b|=)", lines[0]) for n in names), (names, lines[0])
    return lines[0]


def _train_ran_finite(out: Path) -> None:
    summary = json.loads((out / "summary.json").read_text())
    assert all(math.isfinite(m["val_loss"]) for m in summary["models"].values()), summary["models"]


# flag or field: (smallest valid, largest drawn valid, whether huge values are drawn too)
TRAIN_FLAGS = {"--steps": (1, 2, False), "--batch-size": (1, 3, True), "--seed": (0, 5, True),
               "--eval-every": (1, 2, True), "--save-every": (1, 2, True), "--log-every": (1, 2, True),
               "--threads": (1, 2, True)}
PROPERTY = settings(max_examples=60, derandomize=True, database=None, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow])


@PROPERTY
@given(data=st.data())
def test_train_flags(workspace, data):
    flag = data.draw(st.sampled_from([*TRAIN_FLAGS, "--lr", "--vocab-size"]), label="flag")
    if flag == "--lr":
        value = data.draw(st.floats(allow_nan=True, allow_infinity=True).map(repr), label="value")
    elif flag == "--vocab-size":
        value = data.draw(_numbers(19, 40), label="value")
    else:
        value = data.draw(_numbers(*TRAIN_FLAGS[flag]), label="value")
    extra = ["--tokenizer", "bpe"] if flag == "--vocab-size" else []
    out = Path(tempfile.mkdtemp(dir=workspace)) / "run"
    with _plotless():
        rc, _, err = _qelm("train", "--data", workspace / "corpus.txt", "--config", workspace / "tiny.toml", "--out",
                           out, "--no-twin", "--no-matched", *extra, flag, value)
    line = _refused_by_name_or_ran(rc, err, (flag, flag[2:].replace("-", "_")))
    if line is None:
        _train_ran_finite(out)
    elif "argument" not in line:  # refused after parsing: before any training
        assert not (out / "qelm" / "checkpoint.json").exists() or "became" in line or "give a loss" in line, line


@PROPERTY
@given(data=st.data())
def test_generate_and_eval_flags(workspace, data):
    command, flag, low, high, huge = data.draw(st.sampled_from([
        ("generate", "--max-new-tokens", 0, 5, False), ("generate", "--top-k", 1, 30, True),
        ("generate", "--seed", 0, 5, True), ("generate", "--temperature", 0, 0, True),
        ("eval", "--batch-size", 1, 4, True)]), label="flag")
    if flag == "--temperature":
        value = data.draw(st.floats(allow_nan=True, allow_infinity=True).map(repr), label="value")
    else:
        value = data.draw(_numbers(low, high, huge), label="value")
    checkpoint = workspace / "run" / "qelm"
    if command == "generate":
        argv = ["generate", "--checkpoint", checkpoint, "--prompt", "the ", "--max-new-tokens", "5", flag, value]
    else:
        argv = ["eval", "--checkpoint", checkpoint, "--data", workspace / "corpus.txt", "--json", flag, value]
    rc, stdout, err = _qelm(*argv)
    if _refused_by_name_or_ran(rc, err, (flag, flag[2:].replace("-", "_"))) is None:
        if command == "generate":
            assert stdout.startswith("the ") and "\ufffd" not in stdout
        else:
            assert math.isfinite(json.loads(stdout)["perplexity"])


MODEL_FIELDS = {"d_model": (2, 10, True), "n_heads": (1, 2, True), "d_hidden": (1, 20, True), "n_layers": (1, 2, True),
                "context_len": (1, 9, True), "n_qubits": (1, 3, True), "circuit_layers": (1, 2, True),
                "batch_hint": (1, 8, True), "shots": (1, 50, True)}  # shots: refused on qelm.fused, which is exact
TRAIN_FIELDS = {"steps": (1, 2, False), "batch_size": (1, 3, True), "seed": (0, 5, True), "eval_every": (1, 2, True),
                "save_every": (1, 2, True), "log_every": (1, 2, True), "lr": None, "grad_clip": None,
                "weight_decay": None}


@PROPERTY
@given(data=st.data())
def test_config_file_fields(workspace, data):
    table, field = data.draw(st.sampled_from([("model", f) for f in MODEL_FIELDS] + [("train", f) for f in TRAIN_FIELDS]),
                             label="field")
    drawn = (MODEL_FIELDS if table == "model" else TRAIN_FIELDS)[field]
    if drawn is None:  # a real-valued setting
        value = data.draw(st.one_of(st.floats(), st.integers(-3, 3), st.booleans()), label="value")
    else:
        value = data.draw(_config_numbers(*drawn), label="value")
    model, train = dict(MODEL), dict(TRAIN)
    (model if table == "model" else train)[field] = value
    path = Path(tempfile.mkdtemp(dir=workspace))
    _write_config(path / "c.toml", model, train)
    with _plotless():
        rc, _, err = _qelm("train", "--data", workspace / "corpus.txt", "--config", path / "c.toml", "--out",
                           path / "run", "--no-twin", "--no-matched")
    if _refused_by_name_or_ran(rc, err, (field,)) is None:
        _train_ran_finite(path / "run")
