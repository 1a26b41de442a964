"""Bring your own: a registered Circuit subclass as the embedding, any installed PennyLane device as the
backend, and checkpoints that name them (loading imports nothing: the class must be registered)."""

from __future__ import annotations

from dataclasses import dataclass

import pennylane as qml
import pytest
import torch

from qelm.backends import BackendSpec
from qelm import QELM, QELMConfig
from qelm.checkpoint import load_checkpoint, save_checkpoint
from qelm.circuits import CIRCUITS, Circuit, register_circuit
from qelm.tokenizer import CharTokenizer


@dataclass(frozen=True)
class XYEmbedding(Circuit):
    """RX then RY data rotations per qubit, then StronglyEntanglingLayers."""

    name = "xy_test"
    kind = "embedding"

    @property
    def n_inputs(self):
        return 2 * self.n_qubits

    def apply(self, a):
        n = self.n_qubits
        qml.AngleEmbedding(a[..., :n], wires=self.wires, rotation="X")
        qml.AngleEmbedding(a[..., n:2 * n], wires=self.wires, rotation="Y")
        qml.StronglyEntanglingLayers(a[..., 2 * n:].reshape(a.shape[:-1] + self.weight_shape), wires=self.wires)


@pytest.fixture
def registered():
    register_circuit(XYEmbedding)
    yield XYEmbedding
    CIRCUITS.pop(XYEmbedding.name, None)


def _config(**kw):
    return QELMConfig(vocab_size=11, d_model=8, n_heads=2, d_hidden=16, context_len=6, n_qubits=2, circuit_layers=1, **kw)


def test_unregistered_circuit_says_how_to_register():
    with pytest.raises(ValueError, match="register_circuit"):
        _config(embedding_circuit="xy_test")


def test_registered_embedding_runs_on_every_backend_alike(registered):
    torch.manual_seed(0)
    model = QELM(_config(embedding_circuit="xy_test"), BackendSpec("default.qubit")).double()
    idx = torch.randint(0, 11, (2, 6))
    ref = model(idx)[0]
    for backend in ("qelm.fused", "lightning.qubit", "default.mixed"):
        model.set_backend(backend)
        torch.testing.assert_close(model(idx)[0], ref, atol=1e-7, rtol=0)


def test_checkpoint_naming_a_custom_circuit_loads_once_registered(registered, tmp_path):
    tok = CharTokenizer.from_text("abcdefghij ")
    model = QELM(QELMConfig(vocab_size=tok.vocab_size, d_model=8, n_heads=2, d_hidden=16, context_len=6, n_qubits=2,
                            circuit_layers=1, embedding_circuit="xy_test"))
    save_checkpoint(tmp_path / "ck", model, tok)
    CIRCUITS.pop("xy_test")
    with pytest.raises(ValueError, match="xy_test.*register_circuit"):
        load_checkpoint(tmp_path / "ck")
    register_circuit(XYEmbedding)
    loaded = load_checkpoint(tmp_path / "ck").model
    idx = torch.randint(0, tok.vocab_size, (1, 6))
    torch.testing.assert_close(loaded(idx)[0], model(idx)[0])


def test_register_refuses_non_circuits_and_name_clashes():
    with pytest.raises(TypeError, match="Circuit subclass"):
        register_circuit(int)

    @dataclass(frozen=True)
    class Clash(XYEmbedding):
        name = "angle"

    with pytest.raises(ValueError, match="'angle' is already registered"):
        register_circuit(Clash)


def test_any_installed_pennylane_device_is_a_backend():
    model = QELM(_config(), BackendSpec("default.mixed"))
    assert model.backend.name == "default.mixed"
    with pytest.raises(ValueError, match="installed PennyLane device"):
        QELM(_config(), BackendSpec("no.such.device"))
