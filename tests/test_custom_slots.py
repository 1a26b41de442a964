"""A registered circuit in every slot: the contract of each slot (qelm.circuits.SLOTS) checked when a layer is
built, one training step with gradients into the circuit, the same values on qelm.fused and default.qubit, a
backend that cannot run a circuit refused at once naming one that can, and checkpoints that name the circuits
(loading imports nothing: the circuits must be registered again, and the error says which)."""

from __future__ import annotations

from dataclasses import dataclass

import pennylane as qml
import pytest
import torch

from qelm import QELM, QELMConfig
from qelm.backends import BackendSpec
from qelm.checkpoint import load_checkpoint, save_checkpoint
from qelm.circuits import CIRCUITS, Circuit, build_circuit, check_slot, register_circuit, slot_circuits
from qelm.errors import BackendError, CheckpointError, ConfigError
from qelm.tokenizer import CharTokenizer


@dataclass(frozen=True)
class XYEmbedding(Circuit):
    """RX then RY data rotations per qubit, then StronglyEntanglingLayers."""

    name = "xy_slot_test"
    kind = "embedding"

    @property
    def n_inputs(self):
        return 2 * self.n_qubits

    def apply(self, a):
        n = self.n_qubits
        qml.AngleEmbedding(a[..., :n], wires=self.wires, rotation="X")
        qml.AngleEmbedding(a[..., n:2 * n], wires=self.wires, rotation="Y")
        qml.StronglyEntanglingLayers(a[..., 2 * n:].reshape(a.shape[:-1] + self.weight_shape), wires=self.wires)


@dataclass(frozen=True)
class RingHeads(Circuit):
    """Attention: RX data angles, then per layer an RY on each wire, a CNOT ring and an RZ on each wire."""

    name = "ring_slot_test"
    kind = "attention"

    @property
    def n_inputs(self):
        return self.n_qubits

    @property
    def weight_shape(self):
        return (self.n_layers, 2, self.n_qubits)

    def apply(self, a):
        n = self.n_qubits
        qml.AngleEmbedding(a[..., :n], wires=self.wires, rotation="X")
        k = n
        for _ in range(self.n_layers):
            for w in range(n):
                qml.RY(a[..., k], wires=w)
                k += 1
            for w in range(n):
                qml.CNOT(wires=[w, (w + 1) % n])
            for w in range(n):
                qml.RZ(a[..., k], wires=w)
                k += 1


@dataclass(frozen=True)
class WideFeedForward(Circuit):
    """Feed-forward with two data angles per qubit (RY, RZ): the slot's reduce layer is 2n wide."""

    name = "wide_slot_test"
    kind = "feed_forward"

    @property
    def n_inputs(self):
        return 2 * self.n_qubits

    def apply(self, a):
        n = self.n_qubits
        qml.AngleEmbedding(a[..., :n], wires=self.wires, rotation="Y")
        qml.AngleEmbedding(a[..., n:2 * n], wires=self.wires, rotation="Z")
        qml.StronglyEntanglingLayers(a[..., 2 * n:].reshape(a.shape[:-1] + self.weight_shape), wires=self.wires)


@dataclass(frozen=True)
class ExcitationFeedForward(WideFeedForward):
    """A SingleExcitation between the data and the weights: PennyLane decomposes it into gates whose angles are
    computed from its own, which qelm.fused does not run; default.qubit does."""

    name = "excitation_slot_test"

    @property
    def n_angles(self):
        return 2 * self.n_qubits + 1 + self.n_weights

    def data_angles(self, inputs):
        return torch.cat([inputs, inputs[..., :1]], dim=-1)

    def angles(self, inputs, weights):
        w = weights.reshape(weights.shape[: weights.dim() - len(self.weight_shape)] + (-1,))
        return torch.cat([self.data_angles(inputs), w.expand(inputs.shape[:-1] + (self.n_weights,)).to(inputs.dtype)], -1)

    def apply(self, a):
        n = self.n_qubits
        qml.AngleEmbedding(a[..., :n], wires=self.wires, rotation="Y")
        qml.AngleEmbedding(a[..., n:2 * n], wires=self.wires, rotation="Z")
        qml.SingleExcitation(a[..., 2 * n], wires=[0, 1])
        qml.StronglyEntanglingLayers(a[..., 2 * n + 1:].reshape(a.shape[:-1] + self.weight_shape), wires=self.wires)


MINE = (XYEmbedding, RingHeads, WideFeedForward, ExcitationFeedForward)
FIELDS = {"embedding": ("embedding_circuit", XYEmbedding.name), "attention": ("attention_circuit", RingHeads.name),
          "feed_forward": ("feed_forward_circuit", WideFeedForward.name)}


@pytest.fixture
def registered():
    for cls in MINE:
        register_circuit(cls)
    yield
    for cls in MINE:
        CIRCUITS.pop(cls.name, None)


def _config(**fields):
    sizes = dict(vocab_size=11, d_model=8, n_heads=2, d_hidden=16, context_len=6, n_qubits=2, circuit_layers=1)
    return QELMConfig(**{**sizes, **fields})


def _everywhere(**fields):
    return _config(**dict(FIELDS.values()), **fields)


def test_each_slot_lists_the_circuits_registered_for_it(registered):
    assert slot_circuits("embedding") == ("angle", "polar", "amplitude", XYEmbedding.name)
    assert slot_circuits("attention") == ("attention", RingHeads.name)  # fidelity, swap_test: the mode's own
    assert slot_circuits("feed_forward") == ("feed_forward", WideFeedForward.name, ExcitationFeedForward.name)


@pytest.mark.parametrize("slot", list(FIELDS))
def test_a_custom_circuit_in_each_slot_trains_one_step(registered, slot):
    torch.manual_seed(0)
    field, name = FIELDS[slot]
    model = QELM(_config(**{field: name}))
    layer = {"embedding": model.embedding, "attention": model.blocks[0].attention.heads,
             "feed_forward": model.blocks[0].feed_forward}[slot]
    assert layer.circuits()[0].name == name
    if slot == "attention":
        assert tuple(layer.weights.shape) == (2, 3, *RingHeads(2, 1).weight_shape)  # (H, q/k/v, *weight_shape)
        assert model.blocks[0].attention.reduce.out_features == 2 * RingHeads(2, 1).n_inputs
    if slot == "feed_forward":
        assert model.blocks[0].feed_forward.reduce.out_features == WideFeedForward(2, 1).n_inputs == 4
    before = layer.weights.detach().clone()
    idx = torch.randint(0, 11, (3, 6))
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    _, loss = model(idx[:, :-1], idx[:, 1:])
    loss.backward()
    assert torch.isfinite(loss)
    assert layer.weights.grad is not None and (layer.weights.grad != 0).any()
    opt.step()
    assert not torch.equal(layer.weights.detach(), before)


@pytest.mark.parametrize("attention", ["quantum", "fidelity-exact", "fidelity-swap_test"])
def test_custom_circuits_give_the_same_values_on_fused_and_default_qubit(registered, attention):
    mode, _, method = attention.partition("-")
    torch.manual_seed(0)
    model = QELM(_everywhere(attention=mode, fidelity_method=method or "exact")).double()
    idx = torch.randint(0, 11, (2, 6))
    fused_logits, fused_loss = model(idx, idx)
    fused_loss.backward()
    fused_grads = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    model.set_backend("default.qubit")
    logits, loss = model(idx, idx)
    loss.backward()
    torch.testing.assert_close(logits, fused_logits, atol=1e-9, rtol=0)
    for p, g in zip(model.parameters(), fused_grads):
        torch.testing.assert_close(p.grad, g, atol=1e-8, rtol=0)


def test_a_checkpoint_of_custom_circuits_loads_once_they_are_registered_again(registered, tmp_path):
    tok = CharTokenizer.from_text("abcdefghij ")
    torch.manual_seed(0)
    model = QELM(_everywhere(vocab_size=tok.vocab_size)).eval()
    save_checkpoint(tmp_path / "ck", model, tok)
    model.save_pretrained(tmp_path / "hf")
    CIRCUITS.pop(RingHeads.name)
    for load in (lambda: load_checkpoint(tmp_path / "ck"), lambda: QELM.from_pretrained(tmp_path / "hf")):
        with pytest.raises(CheckpointError) as error:
            load()
        message = str(error.value)
        assert "\n" not in message
        assert f"attention_circuit={RingHeads.name!r}" in message and "register_circuit" in message
        assert "--import" in message  # and how to do it from the command line
    register_circuit(RingHeads)
    idx = torch.randint(0, tok.vocab_size, (1, 6))
    for loaded in (load_checkpoint(tmp_path / "ck").model, QELM.from_pretrained(tmp_path / "hf")):
        assert loaded.config == model.config
        torch.testing.assert_close(loaded.eval()(idx)[0], model(idx)[0])


def test_a_classical_slot_needs_no_registered_circuit():
    config = _config(feed_forward="classical", feed_forward_circuit="not_registered_anywhere")
    assert config.classical().feed_forward_circuit == "not_registered_anywhere"
    with pytest.raises(ConfigError, match="feed_forward_circuit='not_registered_anywhere'.*no circuit named"):
        _config(feed_forward_circuit="not_registered_anywhere")


@pytest.mark.parametrize("field, name, words", [
    ("attention_circuit", "angle", "circuit 'angle' is of kind 'embedding'; the attention slot runs one of attention"),
    ("attention_circuit", "fidelity", "one of the fidelity mode's own circuits"),
    ("feed_forward_circuit", "attention", "of kind 'attention'; the feed_forward slot runs one of feed_forward"),
    ("embedding_circuit", "nope", "no circuit named 'nope' is registered in this process (registered embedding "
                                  "circuits: angle, polar, amplitude)"),
])
def test_a_config_names_a_circuit_of_the_slot_s_kind(field, name, words):
    with pytest.raises(ConfigError) as error:
        _config(**{field: name})
    assert words in str(error.value) and "\n" not in str(error.value)


def _broken(**members):
    base = dict(name="broken_slot_test", kind="feed_forward", n_inputs=property(lambda self: self.n_qubits),
                apply=WideFeedForward.apply)
    return dataclass(frozen=True)(type("Broken", (Circuit,), {**base, **members}))


@pytest.mark.parametrize("members, words", [
    ({"kind": "embedding"}, "its kind is 'embedding'; a circuit for this slot sets kind = 'feed_forward'"),
    ({"returns": "state"}, "it returns 'state'"),
    ({"n_inputs": property(lambda self: 0)}, "n_inputs=0; it must be an integer >= 1"),
    ({"input_shape": property(lambda self: (2, self.n_qubits))}, "input_shape=(2, 2); a slot gives each instance one flat"),
    ({"n_inputs": property(lambda self: 3 * self.n_qubits)}, "apply() of an angle vector of n_angles=12 raised"),
    ({"apply": lambda self, a: qml.RX(a[..., 0], wires=5)}, "places gates on wire(s) 5, outside its n_wires=2"),
    ({"angles": lambda self, x, w: x}, "angles() of 2 instances has shape (2, 2), not (2, n_angles=8)"),
])
def test_a_circuit_that_breaks_its_slot_s_contract_is_refused_in_one_line(members, words):
    circuit = _broken(**members)(n_qubits=2, n_layers=1)
    with pytest.raises(ConfigError) as error:
        check_slot(circuit, "feed_forward")
    assert str(error.value).startswith("circuit 'broken_slot_test' cannot fill the feed_forward slot: ")
    assert words in str(error.value) and "\n" not in str(error.value)


def test_a_backend_that_cannot_run_a_circuit_is_refused_naming_one_that_can(registered):
    config = _config(feed_forward_circuit=ExcitationFeedForward.name)
    with pytest.raises(BackendError) as error:
        QELM(config)  # qelm.fused, the default: refused when the model is built, not at its first forward
    assert str(error.value).startswith(f"backend 'qelm.fused' cannot run circuit {ExcitationFeedForward.name!r}: ")
    assert str(error.value).endswith("run it on backend 'default.qubit'") and "\n" not in str(error.value)
    model = QELM(config, BackendSpec("default.qubit"))
    idx = torch.randint(0, 11, (2, 6))
    _, loss = model(idx, idx)
    loss.backward()
    assert (model.blocks[0].feed_forward.weights.grad != 0).any()
    for backend in ("qelm.fused", "qiskit.aer"):
        with pytest.raises(BackendError, match="run it on backend 'default.qubit'"):
            model.set_backend(backend)
        assert model.backend.name == "default.qubit"  # the model keeps a backend that runs it


def test_the_swap_test_of_a_custom_state_compares_that_state(registered):
    from qelm import get_backend

    swap = build_circuit("swap_test", 2, 1)
    mine = type(swap)(2, 1, state=RingHeads)
    assert mine.key != swap.key and mine.n_wires == 5 and mine.weight_shape == RingHeads(2, 1).weight_shape
    torch.manual_seed(0)
    x, w = torch.rand(4, 2, 2, dtype=torch.float64), torch.rand(RingHeads(2, 1).weight_shape, dtype=torch.float64)
    fused = get_backend("qelm.fused")
    psi = fused.run(RingHeads(2, 1), x, w, "state")  # (4, 2, 4): both states of each pair
    overlap = (psi[:, 0].conj() * psi[:, 1]).sum(-1).abs().square()
    torch.testing.assert_close(fused.run(mine, x, w)[..., 0], overlap, atol=1e-10, rtol=0)
