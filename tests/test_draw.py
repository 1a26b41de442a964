"""Circuit drawings in every format, trained angles from a model, and `qelm draw`."""

import io
import json
import re

import pytest
import torch
from PIL import Image
from qiskit import qasm2

from qelm import QELM, ClassicalLM, CIRCUITS, build_circuit
from qelm.checkpoint import save_checkpoint
from qelm.circuits.angles import trained_angles, weight_mask
from qelm.draw import FORMATS, caption, circuit_weights, draw_text, render
from qelm.tokenizer import CharTokenizer


# --- every circuit in every format --------------------------------------------------------------------
@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("name", sorted(CIRCUITS))
def test_every_circuit_renders_in_every_format(name, fmt):
    c = build_circuit(name, n_qubits=2, n_layers=1)
    out = render(c, fmt)
    if fmt == "png":
        img = Image.open(io.BytesIO(out))
        assert img.format == "PNG" and img.size[0] > 100 and img.size[1] > 50
    elif fmt == "svg":
        assert out.lstrip().startswith(b"<?xml") and b"<svg" in out
    elif fmt == "qasm":
        assert qasm2.loads(out).num_qubits == c.n_wires
    elif fmt == "qiskit":  # symbolic: every angle appears as its qiskit Parameter
        assert {int(i) for i in re.findall(r"theta\[(\d+)\]", out.split("\n", 2)[2])} == set(range(c.n_angles))
    elif fmt == "resources":
        r = json.loads(out)
        assert r["wires"] == c.n_wires and r["parameters"]["gate_angles"] == c.n_angles
        assert sum(r["pennylane_device"]["gate_types"].values()) == r["pennylane_device"]["gates"]
    else:
        lines = out.splitlines()
        assert lines[0].startswith(f"# circuit {name!r}")
        assert [line.split(":")[0] for line in lines[1:]] == [str(w) for w in range(c.n_wires)]


@pytest.mark.parametrize("name", sorted(CIRCUITS))
def test_symbolic_text_shows_each_angle_index_exactly_once(name):
    c = build_circuit(name, n_qubits=3, n_layers=2)
    text = draw_text(c)
    numbers = [int(n) for args in re.findall(r"[A-Za-z]\(([\d,]+)\)", text) for n in args.split(",")]
    assert sorted(numbers) == list(range(c.n_angles)), "each gate angle is one angle-vector entry, used once"
    assert "StronglyEntanglingLayers" not in text, "templates must be decomposed"
    assert "Rot" in text or not c.n_weights


def test_caption_names_data_and_weight_ranges():
    c = build_circuit("swap_test", n_qubits=2, n_layers=1)
    assert "data angles theta[0-1, 8-9], trained weights theta[2-7, 10-15]" in caption(c)


# --- trained angles from a model ----------------------------------------------------------------------
@pytest.mark.parametrize("name", sorted(CIRCUITS))
def test_trained_angles_hold_weights_and_zero_data(name):
    c = build_circuit(name, 2, 2)
    w = torch.rand(c.weight_shape, dtype=torch.float64) + 1.0  # nonzero everywhere
    angles = trained_angles(c, w)
    mask = weight_mask(c)
    assert torch.all(angles[~mask] == 0)
    assert torch.all(angles[mask] != 0)
    # every weight appears in the vector (twice for the swap test, which shares them between its states)
    assert sorted(set(angles[mask].tolist())) == sorted(w.flatten().tolist())


def test_trained_angles_reject_a_wrong_shape():
    c = build_circuit("angle", 2, 2)
    with pytest.raises(ValueError, match=r"weights of shape \(1, 2, 3\) do not fit circuit 'angle'"):
        trained_angles(c, torch.zeros(1, 2, 3))


def test_circuit_weights_come_from_the_first_layer_running_the_circuit(tiny_config):
    model = QELM(tiny_config.replace(n_layers=2))
    w, where = circuit_weights(model, "attention")
    assert torch.equal(w, model.blocks[0].attention.heads.weights[0, 0]) and where.startswith("blocks.0.")
    w, where = circuit_weights(model, "angle")
    assert torch.equal(w, model.embedding.weights) and where == "embedding"
    with pytest.raises(ValueError, match="does not run circuit 'fidelity'; it runs angle, attention, feed_forward"):
        circuit_weights(model, "fidelity")
    with pytest.raises(ValueError, match="runs no circuits"):
        circuit_weights(ClassicalLM(tiny_config), "angle")
    swap = QELM(tiny_config.replace(attention="fidelity", fidelity_method="swap_test"))
    w, _ = circuit_weights(swap, "swap_test")
    assert torch.equal(w, swap.blocks[0].attention.heads.weights[0, 0])


def test_values_drawing_shows_the_trained_weights(tiny_config):
    model = QELM(tiny_config)
    c = tiny_config.circuit("feed_forward")
    w = model.blocks[0].feed_forward.weights.detach()
    text = render(c, "text", trained_angles(c, w), source="test", decimals=3)
    first_rot = re.search(r"Rot\(([-\d.]+),([-\d.]+),([-\d.]+)\)", text)
    assert [float(v) for v in first_rot.groups()] == pytest.approx(w[0, 0].tolist(), abs=5e-4)


# --- CLI ----------------------------------------------------------------------------------------------
def test_cli_draws_text_to_stdout(cli):
    rc, out, err = cli("draw", "attention", "--n-qubits", 2, "--circuit-layers", 1)
    assert rc == 0 and err == ""
    assert out.startswith("# circuit 'attention'") and "Rot(2,3,4)" in out


@pytest.mark.parametrize("suffix, magic", [(".png", b"\x89PNG"), (".svg", b"<?xml"), (".qasm", b"OPENQASM 2.0;"),
                                           (".json", b"{")])
def test_cli_infers_the_format_from_the_file_name(cli, tmp_path, suffix, magic):
    out = tmp_path / f"c{suffix}"
    rc, stdout, _ = cli("draw", "angle", "--n-qubits", 2, "--circuit-layers", 1, "--out", out)
    assert rc == 0 and str(out) in stdout
    assert out.read_bytes().startswith(magic)


@pytest.mark.parametrize("argv, message", [
    (["draw", "nope"], "unknown circuit 'nope': valid circuits are amplitude, angle"),
    (["draw", "angle", "--out", "x.bmp"], "cannot tell the format from --out 'x.bmp'"),
    (["draw", "angle", "--format", "png", "--out", "x.svg"], "does not end in .png"),
    (["draw", "angle", "--n-qubits", "0"], "argument --n-qubits: 0 is invalid: use an integer >= 1"),
    (["draw", "angle", "--config", "missing.toml"], "config file 'missing.toml' does not exist"),
    (["draw", "angle", "--checkpoint", "missing_dir"], "'missing_dir' does not exist"),
])
def test_cli_user_errors_are_one_line(cli, argv, message):
    rc, out, err = cli(*argv)
    assert rc == 2 and out == ""
    assert message in err and len(err.strip().splitlines()) == 1 and "Traceback" not in err


def test_cli_draws_a_checkpoint_with_its_trained_values(cli, tmp_path, tiny_config):
    tokenizer = CharTokenizer(list("abcdefghijk"))
    model = QELM(tiny_config)
    save_checkpoint(tmp_path / "ck", model, tokenizer)
    rc, out, _ = cli("draw", "angle", "--checkpoint", tmp_path / "ck", "--decimals", 3)
    assert rc == 0 and "trained weights of embedding" in out
    w = model.embedding.weights.detach()[0, 0]
    assert f"Rot({w[0]:.3f},{w[1]:.3f},{w[2]:.3f})" in out
    rc, _, err = cli("draw", "angle", "--checkpoint", tmp_path / "ck", "--n-qubits", 3)
    assert rc == 2 and "--n-qubits 3 does not match the checkpoint's n_qubits=2" in err
    rc, _, err = cli("draw", "fidelity", "--checkpoint", tmp_path / "ck")
    assert rc == 2 and "does not run circuit 'fidelity'" in err
