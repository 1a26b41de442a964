"""qelm.fused building the feature-form matrices of all of a training forward's circuits of one structure in
one call (``Backend.prepare``, qelm.backends.fused_joint): the same logits and gradients as a build per call,
a build per call wherever the structures or the weights differ, and nothing held once the forward is over."""

from __future__ import annotations

from dataclasses import dataclass

import pennylane as qml
import pytest
import torch

from qelm import QELM, QELMConfig
from qelm.backends import Backend, get_backend
from qelm.backends import fused_joint
from qelm.backends.fused import FusedBackend
from qelm.circuits import CIRCUITS, build_circuit, register_circuit
from qelm.circuits.variational import FeedForwardCircuit


@dataclass(frozen=True)
class RenamedFeedForward(FeedForwardCircuit):
    """The built-in feed-forward circuit under another name: the same gates, so one structure."""

    name = "renamed_joint_test"


@dataclass(frozen=True)
class RingFeedForward(FeedForwardCircuit):
    """The feed-forward circuit with a CNOT ring after it: another structure."""

    name = "ring_joint_test"

    def apply(self, angles):
        super().apply(angles)
        for w in range(self.n_qubits):
            qml.CNOT(wires=[w, (w + 1) % self.n_qubits])


@pytest.fixture
def registered():
    for cls in (RenamedFeedForward, RingFeedForward):
        register_circuit(cls)
    yield
    for cls in (RenamedFeedForward, RingFeedForward):
        CIRCUITS.pop(cls.name, None)


@pytest.fixture
def builds(monkeypatch):
    """The weight sets of every joint build, in order (not the builds that fill a plan's tables once, which
    run without a gradient)."""
    seen: list[tuple[int, ...]] = []
    real = fused_joint.feature_matrix

    def spy(fp, ex, lead):
        if torch.is_grad_enabled():
            seen.append(lead)
        return real(fp, ex, lead)
    monkeypatch.setattr(fused_joint, "feature_matrix", spy)
    return seen


def _model(**fields) -> QELM:
    torch.manual_seed(0)
    return QELM(QELMConfig(**{"context_len": 8, **fields})).double()


def _step(model: QELM, idx: torch.Tensor):
    model.zero_grad(set_to_none=True)
    logits, loss = model(idx, targets=idx)
    loss.backward()
    return logits.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


def _assert_same(a, b):
    torch.testing.assert_close(a[0], b[0], atol=1e-12, rtol=0)
    assert a[1].keys() == b[1].keys()
    for name in a[1]:
        torch.testing.assert_close(a[1][name], b[1][name], atol=1e-12, rtol=0, msg=name)


def _per_call(model: QELM, idx: torch.Tensor, monkeypatch):
    with monkeypatch.context() as m:
        m.setattr(FusedBackend, "prepare", Backend.prepare)  # nothing prepared: every call builds its own W
        return _step(model, idx)


@pytest.mark.parametrize("n_layers", [1, 2])
def test_one_build_gives_the_logits_and_gradients_of_a_build_per_call(n_layers, builds, monkeypatch):
    model = _model(n_layers=n_layers)
    idx = torch.randint(0, model.config.vocab_size, (3, 8))
    joint = _step(model, idx)
    assert builds == [(7 * n_layers,)]  # 2 heads x q, k, v and the feed-forward circuit, per block
    _assert_same(joint, _per_call(model, idx, monkeypatch))
    assert model.backend.__dict__.get("_held") is None  # nothing kept past the forward


def test_circuits_of_one_structure_share_whatever_their_name(registered, builds, monkeypatch):
    model = _model(feed_forward_circuit=RenamedFeedForward.name)
    idx = torch.randint(0, model.config.vocab_size, (2, 8))
    joint = _step(model, idx)
    assert builds == [(7,)]
    _assert_same(joint, _per_call(model, idx, monkeypatch))


def test_circuits_of_other_structures_build_their_own(registered, builds, monkeypatch):
    model = _model(feed_forward_circuit=RingFeedForward.name)
    idx = torch.randint(0, model.config.vocab_size, (2, 8))
    one = _step(model, idx)
    assert builds == []  # one call per structure: nothing to share
    _assert_same(one, _per_call(model, idx, monkeypatch))
    model = _model(feed_forward_circuit=RingFeedForward.name, n_layers=2)  # each structure shared across blocks
    _step(model, idx)
    assert sorted(builds) == [(2,), (12,)]


def test_nothing_is_held_outside_a_forward_with_gradients(builds):
    model = _model()
    idx = torch.randint(0, model.config.vocab_size, (2, 8))
    backend = model.backend
    during = []
    model.blocks[0].feed_forward.register_forward_pre_hook(lambda *_: during.append(backend.__dict__.get("_held")))
    _step(model, idx)
    assert during[-1] is not None and backend._held is None
    with torch.no_grad():
        model(idx)
    assert during[-1] is None and builds == [(7,)]  # no gradient: nothing prepared

    def fail(*_):
        raise RuntimeError("stop")
    handle = model.blocks[0].feed_forward.register_forward_pre_hook(fail)
    with pytest.raises(RuntimeError, match="stop"):
        model(idx, targets=idx)
    assert backend._held is None  # let go when the forward raises too
    handle.remove()


def test_a_traced_forward_finds_every_call_s_tables_built(monkeypatch):
    """The joint build runs one plan of each structure; the other calls' own tables are built once beside it
    (without a gradient), so that a forward under torch.compile, which prepares nothing and builds each ``W``
    per call, reads no table from the host."""
    model = _model()
    idx = torch.randint(0, model.config.vocab_size, (2, 8))
    tables = []
    real = fused_joint.feature_matrix

    def spy(fp, ex, lead):
        if not torch.is_grad_enabled():
            tables.append(lead)
        return real(fp, ex, lead)
    monkeypatch.setattr(fused_joint, "feature_matrix", spy)
    _step(model, idx)
    assert tables == [()]  # the feed-forward circuit's, once
    _step(model, idx)
    assert tables == [()]


def test_features_off_prepares_nothing(builds):
    model = _model()
    model.backend.features = False
    _step(model, torch.randint(0, model.config.vocab_size, (2, 8)))
    assert builds == []


def test_a_prepared_matrix_serves_only_its_unchanged_weights(builds):
    """Weights changed in place after the preparation, or another tensor of the same values, build their own."""
    backend = get_backend("qelm.fused")
    circuit, other = build_circuit("attention", 4, 2), build_circuit("feed_forward", 4, 2, readout="zz")
    g = torch.Generator().manual_seed(0)
    w = (torch.rand((2, 3) + circuit.weight_shape, generator=g, dtype=torch.float64) * 6).requires_grad_()
    v = (torch.rand(other.weight_shape, generator=g, dtype=torch.float64) * 6).requires_grad_()
    x = torch.rand((2, 1, 5) + circuit.input_shape, generator=g, dtype=torch.float64).expand(2, 3, 5, -1)
    y = torch.rand((5,) + other.input_shape, generator=g, dtype=torch.float64)
    plain = get_backend("qelm.fused")
    want = plain.run(circuit, x, w), plain.run(other, y, v)
    with backend.prepare([(circuit, w), (other, v)]):
        assert builds == [(7,)]  # other readouts, one structure
        held = backend._held
        assert held.get(backend._structure(circuit), w) is not None
        assert held.get(backend._structure(circuit), w.detach().clone().requires_grad_()) is None
        got = backend.run(circuit, x, w), backend.run(other, y, v)
        with torch.no_grad():
            v.mul_(1.0)  # a new version: its matrix is stale
        assert held.get(backend._structure(other), v) is None
        again = backend.run(other, y, v)
    assert backend._held is None
    for a, b in zip(got + (again,), want + (want[1],)):
        torch.testing.assert_close(a, b, atol=1e-12, rtol=0)
    ga = torch.autograd.grad(got[0].sum() + got[1].sum(), (w, v))
    gb = torch.autograd.grad(want[0].sum() + want[1].sum(), (w, v))
    for a, b in zip(ga, gb):
        torch.testing.assert_close(a, b, atol=1e-12, rtol=0)


def test_other_backends_prepare_nothing():
    model = _model(d_model=8, n_heads=2, n_qubits=2, circuit_layers=1)
    model.set_backend("default.qubit")
    idx = torch.randint(0, model.config.vocab_size, (1, 3))
    logits, _ = _step(model, idx)
    assert torch.isfinite(logits).all()
