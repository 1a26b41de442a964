"""Error mitigation (mitiq's ZNE and readout-error mitigation, qiskit's Pauli twirling) and device noise
models (qiskit-ibm-runtime's calibration snapshots): each needs the noise extra and skips without it."""

import importlib.util

import numpy as np
import pytest
import torch

from qelm.backends import get_backend
from qelm.backends.aer import translate
from qelm.circuits import build_circuit

INSTALL = 'needs the noise extra: pip install "qelm-lab[noise]"'
HAS_MITIQ = importlib.util.find_spec("mitiq") is not None
HAS_RUNTIME = importlib.util.find_spec("qiskit_ibm_runtime") is not None
needs_mitiq = pytest.mark.skipif(not HAS_MITIQ, reason=f"mitiq missing: {INSTALL}")
needs_runtime = pytest.mark.skipif(not HAS_RUNTIME, reason=f"qiskit-ibm-runtime missing: {INSTALL}")

pytestmark = pytest.mark.usefixtures("_one_thread")


def _batch(name="attention", n_qubits=3, n_layers=2, n=24, seed=0):
    circuit = build_circuit(name, n_qubits, n_layers)
    g = torch.Generator().manual_seed(seed)
    angles = (torch.rand(n, circuit.n_angles, generator=g, dtype=torch.float64) * 2 - 1) * torch.pi
    return circuit, angles, get_backend("qelm.fused").expval(circuit, angles)


def _mae(circuit, angles, exact, **options) -> tuple[float, dict]:
    backend = get_backend("qiskit.aer", seed=0, **options)
    return float((backend.expval(circuit, angles) - exact).abs().mean()), backend.usage


def _bound(qc, values):
    return qc.assign_parameters(dict(zip(qc.parameters, values)))


# --- specs --------------------------------------------------------------------------------------------------------
@needs_mitiq
def test_parse_mitigation_fields_and_defaults():
    from qelm.backends.mitigation import parse_mitigation

    m = parse_mitigation("zne+readout:shots=500+twirl:n=3")
    assert (m.fit, m.scales, m.fold, m.readout, m.readout_shots, m.twirls) == ("richardson", (1.0, 3.0, 5.0), "global",
                                                                              True, 500, 3)
    m = parse_mitigation("zne:fit=linear,scales=1/2/3,fold=random")
    assert (m.fit, m.scales, m.fold, m.readout, m.twirls) == ("linear", (1.0, 2.0, 3.0), "random", False, 0)


@needs_mitiq
@pytest.mark.parametrize("spec, match", [
    ("zne:fit=cubic", r"fit='cubic' is invalid: use richardson or linear"),
    ("zne:scales=1", r"scales='1' is invalid: use two or more distinct numbers >= 1"),
    ("zne:scales=0.5/1", r"use two or more distinct numbers >= 1"),
    ("zne:scales=1/x", r"use numbers >= 1 joined by '/'"),
    ("zne:fold=local", r"fold='local' is invalid: use global or random"),
    ("twirl:n=0", r"twirl n='0' is invalid"),
    ("readout:shots=-3", r"readout shots='-3' is invalid"),
    ("zne:order=2", r"unknown option\(s\) order of zne; valid: fit .*scales .*fold"),
    ("zne+zne", r"'zne' appears twice"),
])
def test_bad_mitigation_specs(spec, match):
    from qelm.backends.mitigation import parse_mitigation

    with pytest.raises(ValueError, match=match):
        parse_mitigation(spec)


# --- the parts ----------------------------------------------------------------------------------------------------
@needs_mitiq
def test_zne_weights_are_mitiqs_extrapolations():
    from mitiq.zne.inference import LinearFactory, RichardsonFactory

    from qelm.backends.mitigation import zne_weights

    np.testing.assert_allclose(zne_weights("richardson", (1.0, 3.0, 5.0)), [15 / 8, -5 / 4, 3 / 8], atol=1e-12)
    y = np.random.default_rng(0).normal(size=(5, 3))
    for fit, factory in (("richardson", RichardsonFactory), ("linear", LinearFactory)):
        w = zne_weights(fit, (1.0, 2.0, 3.5))
        for row in y:
            assert w @ row == pytest.approx(factory.extrapolate([1.0, 2.0, 3.5], list(row)), abs=1e-10)


@needs_mitiq
@pytest.mark.parametrize("method, scale", [("global", 3), ("global", 2.5), ("random", 3), ("random", 1.6)])
def test_folding_keeps_the_unitary_and_scales_the_gates(method, scale):
    from qiskit.quantum_info import Operator

    from qelm.backends.mitigation import fold

    circuit, angles, _ = _batch(n=2)
    qc = translate(circuit).qc
    folded = fold(qc, scale, method, seed=1)
    assert folded.parameters == qc.parameters  # still one parameterized circuit for the whole batch
    assert abs(folded.size() / qc.size() - scale) <= 2 / qc.size() + 0.01
    values = angles[0, translate(circuit).cols].numpy()
    assert Operator(_bound(folded, values)).equiv(Operator(_bound(qc, values)))


def test_twirled_copies_keep_the_unitary():
    from qiskit.quantum_info import Operator

    from qelm.backends.mitigation import twirl

    circuit, angles, _ = _batch(n=1)
    qc = translate(circuit).qc
    copies = twirl(qc, 3, seed=2)
    values = angles[0, translate(circuit).cols].numpy()
    assert len(copies) == 3 and all(c.size() > qc.size() for c in copies)
    for c in copies:
        assert Operator(_bound(c, values)).equiv(Operator(_bound(qc, values)))


# --- what they achieve --------------------------------------------------------------------------------------------
@needs_mitiq
def test_zne_halves_the_error_under_depolarizing_noise_in_one_aer_call(monkeypatch):
    circuit, angles, exact = _batch()
    shots = 10**6  # shot noise well below the bias, as the study shows it must be for ZNE to pay
    raw, raw_usage = _mae(circuit, angles, exact, shots=shots, noise="depolarizing")
    backend = get_backend("qiskit.aer", shots=shots, seed=0, noise="depolarizing", mitigation="zne")
    backend.expval(circuit, angles[:1])  # prepare the folded circuits
    calls = []
    run = backend._sampled.sim.run
    monkeypatch.setattr(backend._sampled.sim, "run", lambda *a, **k: calls.append(a) or run(*a, **k))
    zne = float((backend.expval(circuit, angles) - exact).abs().mean())
    assert len(calls) == 1 and len(calls[0][0]) == 3  # every scale, the whole batch: one Aer run
    assert zne * 2 <= raw, (raw, zne)
    assert backend.usage["shots"] - 3 * shots == 3 * raw_usage["shots"]  # 3 scales, each with the full shots


@needs_mitiq
def test_readout_mitigation_removes_the_readout_bias():
    circuit, angles, exact = _batch()
    raw, _ = _mae(circuit, angles, exact, shots=200000, noise="readout:p0to1=0.04,p1to0=0.1")
    mitigated, usage = _mae(circuit, angles, exact, shots=200000, noise="readout:p0to1=0.04,p1to0=0.1",
                            mitigation="readout:shots=400000")
    assert mitigated * 5 <= raw, (raw, mitigated)
    assert usage == {"circuits": len(angles) + 2, "shots": len(angles) * 200000 + 2 * 400000}  # + calibration


@needs_mitiq
def test_zne_helps_under_thermal_relaxation_with_twirling():
    circuit, angles, exact = _batch(n=12)
    raw, _ = _mae(circuit, angles, exact, shots=10**6, noise="thermal:t1=30e-6,t2=40e-6")
    mitigated, usage = _mae(circuit, angles, exact, shots=10**6, noise="thermal:t1=30e-6,t2=40e-6",
                            mitigation="zne+twirl:n=2")
    assert mitigated < raw / 1.5, (raw, mitigated)
    assert usage["circuits"] == len(angles) * 3 * 2  # 3 scales x 2 twirled copies


# --- devices ------------------------------------------------------------------------------------------------------
@needs_runtime
def test_device_circuits_run_on_its_basis_and_coupling_map():
    from qiskit_aer import AerSimulator

    from qelm.backends._aer_noise import _signs
    from qelm.backends.noise import parse_noise

    noise = parse_noise("fake_manila")
    assert noise.device == "fake_manila" and "calibration" in noise.describe()
    circuit, angles, exact = _batch("attention", 4, 2, n=5)
    compiled = translate(circuit)
    prepared, measured = noise.prepare(compiled.qc)
    basis = set(noise.basis())
    assert {inst.operation.name for inst in prepared.data} <= basis and prepared.num_qubits == 5
    coupling = {tuple(e) for e in noise.backend.coupling_map.get_edges()}
    assert all(tuple(prepared.find_bit(q).index for q in inst.qubits) in coupling
               for inst in prepared.data if len(inst.qubits) == 2)
    # without noise the prepared circuit computes the same outputs, read from the routed qubits
    qc = prepared.copy()
    qc.save_probabilities(qubits=measured)
    values = angles.numpy()[:, compiled.cols]
    binds = [{p: values[:, list(compiled.qc.parameters).index(p)].tolist() for p in qc.parameters}]
    result = AerSimulator(method="density_matrix").run([qc], parameter_binds=binds).result()
    probs = np.array([result.data(i)["probabilities"] for i in range(len(values))])
    np.testing.assert_allclose(probs @ _signs(compiled.z_qubits, 4), exact.numpy(), atol=1e-9)
    with pytest.raises(ValueError, match="only 5: pick a larger device"):
        noise.prepare(translate(build_circuit("angle", 6, 1)).qc)


@needs_runtime
@needs_mitiq
def test_device_noise_is_reduced_by_zne_and_readout_mitigation():
    from qelm.backends.mitigation import fold
    from qelm.backends.noise import parse_noise

    noise = parse_noise("fake_manila")
    circuit, angles, exact = _batch("attention", 4, 2, n=12)
    prepared, _ = noise.prepare(translate(circuit).qc)
    folded = fold(prepared, 3, basis=noise.basis())
    assert {inst.operation.name for inst in folded.data} <= set(noise.basis())  # folds translated, none cancelled
    assert folded.size() >= 2.5 * prepared.size()
    raw, _ = _mae(circuit, angles, exact, shots=10**6, noise="fake_manila")
    mitigated, _ = _mae(circuit, angles, exact, shots=10**6, noise="fake_manila", mitigation="zne+readout")
    assert mitigated * 2 <= raw, (raw, mitigated)


@needs_runtime
def test_unknown_device_lists_the_devices():
    from qelm.backends.noise import parse_noise

    with pytest.raises(ValueError, match=r"unknown device 'fake_nowhere'; devices are .*fake_manila"):
        parse_noise("fake_nowhere")
    with pytest.raises(ValueError, match="carries its own calibrated"):
        parse_noise("fake_manila+readout")
    with pytest.raises(ValueError, match="takes no parameters"):
        parse_noise("fake_manila:p=1")
