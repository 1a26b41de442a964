"""Noise on the qiskit.aer backend: named noise models and their validation, the sampled noisy path (shots
drawn from exact noisy outcome probabilities through the readout errors), SPSA gradients, the --noise /
--shots / --mitigate / --grad flags and their one-line errors. Everything here runs without the noise extra;
what needs mitiq or qiskit-ibm-runtime is in test_mitigation.py."""

import copy
import importlib.util
import json

import pytest
import torch

from qelm.backends import BackendSpec
from qelm import QELM, QELMConfig
from qelm.backends import BackendUnavailable, get_backend
from qelm.backends.noise import NOISE_MODELS, parse_noise, readout_confusion
from qelm.checkpoint import load_checkpoint, save_checkpoint
from qelm.circuits import build_circuit
from qelm.tokenizer import CharTokenizer

HAS_MITIQ = importlib.util.find_spec("mitiq") is not None
HAS_RUNTIME = importlib.util.find_spec("qiskit_ibm_runtime") is not None
CHARS = "abcdefghijk"  # the tiny_config's 11 tokens

pytestmark = pytest.mark.usefixtures("_one_thread")


def _batch(name="angle", n_qubits=2, n_layers=1, n=16, seed=0):
    circuit = build_circuit(name, n_qubits, n_layers)
    g = torch.Generator().manual_seed(seed)
    angles = (torch.rand(n, circuit.n_angles, generator=g, dtype=torch.float64) * 2 - 1) * torch.pi
    exact = get_backend("qelm.fused").expval(circuit, angles)
    return circuit, angles, exact


# --- specs ------------------------------------------------------------------------------------------------------
def test_named_models_take_defaults_combine_and_round_trip():
    noise = parse_noise("Depolarizing:p2=0.02 + readout:p=0.05")
    assert noise.models == {"depolarizing": {"p1": NOISE_MODELS["depolarizing"]["p1"][0], "p2": 0.02},
                            "readout": {"p0to1": 0.05, "p1to0": 0.05}}
    assert noise.device is None and parse_noise(noise.spec) == noise  # the canonical spec means the same
    assert parse_noise("thermal").models["thermal"] == {k: d for k, (d, _) in NOISE_MODELS["thermal"].items()}


@pytest.mark.parametrize("spec, match", [
    ("foo", r"unknown model 'foo'; valid models are depolarizing, thermal, readout .*fake_manila"),
    ("depolarizing:p1=1.5", r"depolarizing p1=1.5 is not a probability: use a number in \[0, 1\]"),
    ("depolarizing:p2=-0.1", r"p2=-0.1 is not a probability"),
    ("readout:p=2", r"readout p=2 is not a probability"),
    ("thermal:t1=10e-6,t2=30e-6", r"t2=3e-05 > 2\*t1=2e-05 is not physical: use t2 <= 2\*t1"),
    ("thermal:t1=0", r"thermal t1=0 is invalid: use a time > 0"),
    ("thermal:time2=-1e-9", r"thermal time2=-1e-09 is invalid: use a duration >= 0"),
    ("depolarizing:q=1", r"unknown parameter\(s\) q of depolarizing; valid: p1 .*; p2"),
    ("depolarizing:p1=abc", r"p1='abc' is not a number"),
    ("depolarizing+depolarizing", r"'depolarizing' appears twice"),
    ("depolarizing:p1", r"'p1' is not key=value"),
    ("   ", r"is empty: give a model name"),
    ("depolarizing++readout", r"empty part"),
])
def test_bad_specs_say_what_and_the_valid_choices(spec, match):
    with pytest.raises(ValueError, match=match):
        parse_noise(spec)


@pytest.mark.skipif(HAS_RUNTIME, reason="checks the message shown when qiskit-ibm-runtime is missing")
def test_device_without_runtime_names_the_extra():
    with pytest.raises(ValueError, match=r'device models need .*pip install "qelm-lab\[noise\]"'):
        parse_noise("fake_manila")


def test_models_act_on_gates_and_readout():
    model = parse_noise("depolarizing+readout:p0to1=0.1,p1to0=0.2").build()
    assert {"cx", "ry", "rz", "sx", "x"} <= set(model.noise_instructions)
    a = readout_confusion(model, [0, 3])  # A[measured, prepared], the same on every qubit
    torch.testing.assert_close(torch.tensor(a), torch.tensor([[[0.9, 0.2], [0.1, 0.8]]] * 2, dtype=torch.float64))
    assert (readout_confusion(parse_noise("thermal").build(), [0]) == torch.eye(2).numpy()).all()


# --- the backend ------------------------------------------------------------------------------------------------
def test_backend_option_errors():
    with pytest.raises(ValueError, match=r"noise needs shots: .*set shots \(e\.g\. 1024"):
        get_backend("qiskit.aer", noise="depolarizing")
    from qiskit_aer.noise import NoiseModel

    with pytest.raises(ValueError, match="not both"):
        get_backend("qiskit.aer", shots=10, noise="depolarizing", noise_model=NoiseModel())
    with pytest.raises(ValueError, match="needs a noise model to mitigate"):
        get_backend("qiskit.aer", shots=10, mitigation="twirl")
    with pytest.raises(ValueError, match="valid gradients are parameter_shift, spsa"):
        get_backend("qiskit.aer", gradient="finite_difference")
    with pytest.raises(ValueError, match="unknown model 'nope'"):
        get_backend("qiskit.aer", shots=10, noise="nope")


def test_zero_noise_samples_the_exact_distribution():
    shots = 20000
    circuit, angles, exact = _batch("angle", 3, 2)
    backend = get_backend("qiskit.aer", shots=shots, seed=3, noise="depolarizing:p1=0,p2=0")
    out = backend.expval(circuit, angles)
    sigma = ((1 - exact**2).clamp_min(0) / shots).sqrt()
    assert torch.all((out - exact).abs() <= 5 * sigma + 1e-12)
    assert (out - exact).abs().max() > 0  # sampled, not exact
    k = (out + 1) / 2 * shots  # counts of +1 outcomes
    torch.testing.assert_close(k, k.round(), atol=1e-6, rtol=0)
    assert backend.usage == {"circuits": len(angles), "shots": len(angles) * shots}


def test_readout_error_is_the_predicted_affine_map():
    """Flipping a measured bit (0->1 with a, 1->0 with b) maps <Z> to (1 - a - b) <Z> + (b - a)."""
    shots, a, b = 200000, 0.05, 0.15
    circuit, angles, exact = _batch("angle", 2, 1)
    out = get_backend("qiskit.aer", shots=shots, seed=5, noise=f"readout:p0to1={a},p1to0={b}").expval(circuit, angles)
    expected = (1 - a - b) * exact + (b - a)
    assert torch.all((out - expected).abs() <= 5 / shots**0.5)
    assert (out - exact).abs().mean() > 0.05  # the bias is really there


def test_depolarizing_damps_and_the_seed_repeats_the_draws():
    circuit, angles, exact = _batch("angle", 3, 2)
    a = get_backend("qiskit.aer", shots=100000, seed=1, noise="depolarizing:p1=0.01,p2=0.05").expval(circuit, angles)
    b = get_backend("qiskit.aer", shots=100000, seed=1, noise="depolarizing:p1=0.01,p2=0.05").expval(circuit, angles)
    torch.testing.assert_close(a, b, atol=0, rtol=0)
    assert a.abs().mean() < 0.9 * exact.abs().mean()


def test_wide_gates_are_split_so_named_noise_reaches_them():
    from qelm.backends.aer import translate
    from qelm.backends.noise import _split_wide_gates

    circuit, angles, exact = _batch("swap_test", 2, 1, n=4)
    qc = _split_wide_gates(translate(circuit).qc)
    assert max(len(inst.qubits) for inst in qc.data) == 2
    noisy = get_backend("qiskit.aer", shots=50000, seed=0, noise="depolarizing:p1=0.02,p2=0.05").expval(circuit, angles)
    clean = get_backend("qiskit.aer", shots=50000, seed=0, noise="depolarizing:p1=0,p2=0").expval(circuit, angles)
    assert (clean - exact).abs().max() < 0.03 and noisy.abs().mean() < clean.abs().mean()


def test_spsa_takes_two_circuits_per_sample_and_follows_the_gradient():
    circuit, angles, _ = _batch("angle", 2, 1, n=4)
    exact_backend = get_backend("qiskit.aer")
    a = angles.clone().requires_grad_()
    (ref,) = torch.autograd.grad(exact_backend.expval(circuit, a).sum(), a)
    spsa = get_backend("qiskit.aer", seed=0, gradient="spsa")
    grads = []
    for _ in range(300):
        b = angles.clone().requires_grad_()
        before = spsa.usage["circuits"]
        (g,) = torch.autograd.grad(spsa.expval(circuit, b).sum(), b)
        assert spsa.usage["circuits"] - before == 3 * len(angles)  # forward N, backward 2N
        grads.append(g)
    mean = torch.stack(grads).mean(0)
    cos = torch.nn.functional.cosine_similarity(mean.flatten(), ref.flatten(), dim=0)
    assert cos > 0.9, cos
    shift = get_backend("qiskit.aer")
    b = angles.clone().requires_grad_()
    torch.autograd.grad(shift.expval(circuit, b).sum(), b)
    assert shift.usage["circuits"] == len(angles) * (1 + 2 * circuit.n_angles)  # 2 per angle and sample


def test_noisy_backend_describes_itself_and_copies():
    backend = get_backend("qiskit.aer", shots=100, seed=0, noise="readout", gradient="spsa")
    circuit, angles, _ = _batch()
    backend.expval(circuit, angles)
    text = backend.describe()
    assert "density_matrix" in text and "100 shots" in text and "readout(p0to1=0.01, p1to0=0.03)" in text
    assert "spsa gradients" in text
    clone = copy.deepcopy(backend)
    assert clone._sampled is None and clone.expval(circuit, angles).shape == (len(angles), 2)


def test_the_runtime_table_carries_noise_through_toml(tiny_config):
    import tomllib

    from qelm.model_files import config_texts

    spec = BackendSpec("qiskit.aer", 256, {"noise": "depolarizing", "seed": 0})
    table = tomllib.loads(config_texts("qelm", tiny_config, spec)[0])
    assert QELMConfig.from_dict(table["model"]) == tiny_config
    again = BackendSpec.from_fields(table["runtime"])
    assert again == spec
    model = QELM(tiny_config, again)
    assert model.backend.noise.models == {"depolarizing": {"p1": 1e-3, "p2": 1e-2}}
    logits, _ = model(torch.randint(0, 11, (2, 6)))
    assert torch.isfinite(logits).all()


# --- command line -----------------------------------------------------------------------------------------------
@pytest.fixture
def checkpoint(tmp_path, tiny_config):
    folder = save_checkpoint(tmp_path / "ck", QELM(tiny_config), CharTokenizer(CHARS))
    data = tmp_path / "text.txt"
    data.write_text("abcdefghijk" * 30, encoding="utf-8")
    return folder, data


@pytest.mark.parametrize("flags, match", [
    (["--noise", "foo", "--shots", "10"], r"--noise 'foo' is invalid: unknown model 'foo'; valid models are "
                                          r"depolarizing, thermal, readout"),
    (["--noise", "depolarizing:p1=-0.5", "--shots", "10"], r"--noise .* p1=-0.5 is not a probability: use a number in"),
    (["--noise", "thermal:t1=1e-5,t2=5e-5", "--shots", "10"], r"--noise .* use t2 <= 2\*t1"),
    (["--noise", "depolarizing"], r"--noise needs --shots"),
    (["--noise", "depolarizing", "--shots", "10", "--backend", "qelm.fused", "--mitigate", "zne"],
     r"--noise runs on backend qiskit.aer only .*--backend qelm.fused cannot"),
    (["--backend", "default.qubit", "--shots", "10", "--mitigate", "twirl"], r"--mitigate runs on backend qiskit.aer only"),
    (["--shots", "10", "--mitigate", "zne"], r"--mitigate needs --noise"),
    (["--noise", "depolarizing", "--shots", "10", "--mitigate", "magic"],
     r"--mitigate 'magic' is invalid: unknown mitigation 'magic'; valid are zne, readout, twirl"),
    (["--shots", "0"], r"--shots 0 is invalid"),
])
def test_cli_bad_noise_input_is_one_line_before_any_work(tmp_path, cli, flags, match):
    missing = tmp_path / "no-such-checkpoint"  # checked later: the flag error must come first
    line = cli.error("eval", "--checkpoint", missing, "--data", tmp_path / "no-such.txt", *flags)
    assert line.startswith("qelm eval: error: ")
    import re

    assert re.search(match, line), line


def test_cli_train_flags_checked_before_training(tmp_path, cli):
    line = cli.error("train", "--data", tmp_path / "no-such.txt", "--noise", "depolarizing")
    assert "--noise needs --shots" in line
    line = cli.error("train", "--data", tmp_path / "no-such.txt", "--grad", "spsa", "--backend", "default.qubit")
    assert "--grad runs on backend qiskit.aer only" in line


@pytest.mark.skipif(HAS_MITIQ, reason="checks the message shown when mitiq is missing")
def test_mitigation_without_mitiq_names_the_extra(checkpoint, cli):
    folder, data = checkpoint
    line = cli.error("eval", "--checkpoint", folder, "--data", data, "--noise", "depolarizing", "--shots", "10",
                     "--mitigate", "zne")
    assert 'pip install "qelm-lab[noise]"' in line
    with pytest.raises(BackendUnavailable, match=r'mitiq: pip install "qelm-lab\[noise\]"'):
        get_backend("qiskit.aer", shots=10, noise="depolarizing", mitigation="readout")


def test_cli_eval_with_noise_reports_the_shots(checkpoint, cli):
    folder, data = checkpoint
    rc, out, _ = cli("eval", "--checkpoint", folder, "--data", data, "--noise", "readout:p=0.1", "--shots", "500",
                     "--mitigate", "twirl:n=2", "--json")
    assert rc == 0, out
    res = json.loads(out)
    assert res["backend"] == "qiskit.aer" and res["shots"] == 500 and res["noise"].startswith("readout:")
    assert res["mitigation"] == "twirl:n=2" and res["shots_taken"] > 0 and res["seconds"] > 0
    # twirled copies share the shots: 500 per circuit output, 2 circuits run for each
    assert res["shots_taken"] * 2 == res["circuits_run"] * 500
    rc, out, _ = cli("eval", "--checkpoint", folder, "--data", data, "--noise", "readout:p=0.1", "--shots", "500")
    assert rc == 0 and "shots taken" in out and "noise readout(p0to1=0.1, p1to0=0.1)" in out
    # the same model exactly: the checkpoint's own backend is untouched
    exact = json.loads(cli("eval", "--checkpoint", folder, "--data", data, "--json")[1])
    assert exact["backend"] == "qelm.fused" and exact["noise"] is None


def test_cli_train_with_noise_and_spsa(tmp_path, cli):
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("the cat sat on the mat. the dog ran to the log.\n" * 8, encoding="utf-8")
    config = tmp_path / "tiny.toml"
    config.write_text('[model]\nd_model = 8\nn_heads = 2\nd_hidden = 16\ncontext_len = 8\nn_qubits = 2\n'
                      'circuit_layers = 1\n\n[train]\nsteps = 2\nbatch_size = 2\n')
    rc, _, err = cli("train", "--data", corpus, "--config", config, "--out", tmp_path / "run", "--no-twin",
                       "--no-matched", "--noise", "depolarizing", "--shots", "64", "--grad", "spsa")
    assert rc == 0, err
    ck = load_checkpoint(tmp_path / "run" / "qelm")
    assert ck.model.spec == BackendSpec("qiskit.aer", 64, {"noise": "depolarizing:p1=0.001,p2=0.01", "gradient": "spsa",
                                                           "seed": 0})
    assert ck.model.backend.gradient == "spsa"
