"""What users run: every script in examples/ and `qelm demo`, each at settings small enough to take a few
seconds, run in this process as ``python examples/NAME.py`` / the ``qelm`` script would run them."""

import json
import runpy
import sys
from pathlib import Path

import pytest

import qelm.circuits.registry

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"

pytestmark = pytest.mark.usefixtures("_one_thread")


def _run_example(name: str, *argv: str, monkeypatch, capsys) -> str:
    monkeypatch.setattr(sys, "argv", [str(EXAMPLES / name), *argv])
    registered = dict(qelm.circuits.registry.CIRCUITS)
    try:
        runpy.run_path(str(EXAMPLES / name), run_name="__main__")
    finally:  # what it registers goes (the dict itself stays: every module holds that one)
        qelm.circuits.registry.CIRCUITS.clear()
        qelm.circuits.registry.CIRCUITS.update(registered)
    return capsys.readouterr().out


# tiny settings for the scripts that take options; the others are small as written
ARGS = {
    "draw_circuits.py": lambda tmp: ["--n-qubits", "2", "--circuit-layers", "1", "--out", str(tmp / "drawings")],
    "compare_sizes.py": lambda tmp: ["--plot", str(tmp / "sizes.png")],
    "train_tiny.py": lambda tmp: ["--steps", "2", "--out", str(tmp / "run")],
    "hub_round_trip.py": lambda tmp: ["--out", str(tmp / "pretrained")],
    "custom_circuit.py": lambda tmp: ["--out", str(tmp / "custom")],
    "backends_noise.py": lambda tmp: ["--out", str(tmp / "noise")],
    "sweep.py": lambda tmp: ["--out", str(tmp / "sweep"), "--plot", str(tmp / "pareto.png")],
}


def test_every_example_is_tested():
    assert sorted(p.name for p in EXAMPLES.glob("*.py")) == sorted(
        ["quickstart.py", *ARGS]), "a new example needs its line in this module"


@pytest.mark.parametrize("name", sorted(p.name for p in EXAMPLES.glob("*.py")))
def test_example_runs(name, tmp_path, monkeypatch, capsys):
    out = _run_example(name, *ARGS.get(name, lambda tmp: [])(tmp_path), monkeypatch=monkeypatch, capsys=capsys)
    expect = {
        "quickstart.py": ["QELM", "classical twin", "matched classical baseline"],
        "backends_noise.py": ["default.qubit", "max |logits - qelm.fused logits|", "depolarizing:p1=0.01,p2=0.1",
                              "readout:p=0.1", "wrote "],
        "draw_circuits.py": ["max |diff|", "wrote 16 files"],  # 8 circuits, text and PNG each
        "compare_sizes.py": ["Claim check:", "QELM parameters:", "wrote "],
        "train_tiny.py": ["reloaded QELM: validation perplexity", "sample: 'The "],
        "custom_circuit.py": ["step 19: loss", "QuantumAttentionHead   runs 'ring': 2 inputs, weights (2, 3, 1, 2, 2)",
                              "QuantumFeedForward     runs 'wide': 4 inputs", "default.qubit agrees with qelm.fused to ",
                              "embedding_circuit='xy' is invalid: no circuit named 'xy' is registered",
                              "the checkpoint loads: the same logits (True)"],
        "sweep.py": ["$ qelm sweep --space examples/sweep_tiny.toml", "trial 1 in", "Verdict:", "Wrote "],
        "hub_round_trip.py": ["reloaded from ", "max |logits difference| = 0.0e+00"],
    }[name]
    for text in expect:
        assert text in out, (text, out)
    if name == "draw_circuits.py":  # qiskit runs the exported circuit to PennyLane's state
        diffs = [float(line.split()[-1]) for line in out.splitlines() if line.split() and line.split()[-1][:1].isdigit()
                 and "e" in line.split()[-1]]
        assert diffs and max(diffs) < 1e-8, out
    if name == "backends_noise.py":  # exact backends agree; noise moves the logits more than shots alone
        diffs = [float(line.rsplit("= ", 1)[1]) for line in out.splitlines() if "max |logits" in line]
        assert diffs and max(diffs) < 1e-10, out
        drift = {line.split()[0]: float(line.rsplit("= ", 1)[1]) for line in out.splitlines() if "mean |logits" in line}
        assert drift["no"] < drift["depolarizing:p1=0.01,p2=0.1"] and drift["no"] < drift["readout:p=0.1"], out
    if name in ("custom_circuit.py", "backends_noise.py", "sweep.py"):  # the figures the tutorials show
        figures = sorted(p.name for p in (tmp_path.glob("*.png") if name == "sweep.py" else tmp_path.rglob("*.png")))
        assert figures == {"custom_circuit.py": ["ring.png", "wide.png", "xy.png"], "backends_noise.py": ["noise.png"],
                           "sweep.py": ["pareto.png"]}[name], figures
    if name == "train_tiny.py":  # the reloaded checkpoint measures what the run measured
        line = next(ln for ln in out.splitlines() if ln.startswith("reloaded QELM"))
        again, measured = line.split("perplexity ")[1].split(" ")[0], line.split("measured ")[1].rstrip(")")
        assert again == measured


def test_qelm_demo(cli, tmp_path):
    out = tmp_path / "demo"
    rc, stdout, _ = cli("demo", "--steps", "2", "--out", out, "--max-new-tokens", "12")
    assert rc == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["run"]["steps"] == 2 and set(summary["models"]) == {"qelm", "twin", "matched"}
    assert "".join(f"Result: {summary['verdict']}.".split()) in "".join(stdout.split())
    assert stdout.count("Sample from the ") == 3 and (out / "loss_curve.png").read_bytes()[:4] == b"\x89PNG"
