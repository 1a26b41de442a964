"""A circuit of your own in every slot: subclass Circuit, register it, name it in a config.

A circuit takes one flat vector of angles (data angles first, then weights) and gives each gate exactly one
entry of it. It says how many data numbers one instance takes (``n_inputs``), may choose its weights' shape
(``weight_shape``) and places its gates (``apply``); its ``kind`` names the slot it fills, and
``qelm.circuits.SLOTS`` says what each slot feeds it. Here: an embedding with two data rotations per qubit,
attention heads whose weights are RY and RZ layers around a CNOT ring, and a feed-forward block that takes two
numbers per qubit. The model trains, gives the same logits on PennyLane's ``default.qubit``, and a checkpoint of
it loads once its circuits are registered (loading imports no code).

    python examples/custom_circuit.py --out runs/custom

The circuits are defined at the top of this file and the demonstration runs under ``main``, so the file is also
a module of circuits: ``qelm --import examples/custom_circuit.py train --attention-circuit ring ...``.
"""

import argparse
from dataclasses import dataclass
from pathlib import Path

import pennylane as qml
import torch

from qelm import QELM, Circuit, QELMConfig
from qelm.checkpoint import load_checkpoint, save_checkpoint
from qelm.circuits import CIRCUITS, register_circuit
from qelm.draw import render
from qelm.tokenizer import CharTokenizer


@register_circuit
@dataclass(frozen=True)
class XYEmbedding(Circuit):
    """Embedding: RX then RY data rotations on each qubit, then the strongly entangling layers of the weights."""

    name = "xy"
    kind = "embedding"

    @property
    def n_inputs(self) -> int:
        return 2 * self.n_qubits  # two learned numbers per qubit and token

    def apply(self, angles: torch.Tensor) -> None:
        n = self.n_qubits
        qml.AngleEmbedding(angles[..., :n], wires=self.wires, rotation="X")
        qml.AngleEmbedding(angles[..., n:2 * n], wires=self.wires, rotation="Y")
        qml.StronglyEntanglingLayers(angles[..., 2 * n:].reshape(angles.shape[:-1] + self.weight_shape), wires=self.wires)


@register_circuit
@dataclass(frozen=True)
class RingAttention(Circuit):
    """Attention heads: RX data angles, then per layer an RY on each wire, a ring of CNOTs and an RZ on each
    wire. Three per head (query, key, value), each with weights of its own."""

    name = "ring"
    kind = "attention"

    @property
    def n_inputs(self) -> int:
        return self.n_qubits  # a head's slice of the token: d_model is reduced to n_heads * n_inputs

    @property
    def weight_shape(self) -> tuple[int, ...]:
        return (self.n_layers, 2, self.n_qubits)  # an RY and an RZ angle per wire and layer

    def apply(self, angles: torch.Tensor) -> None:
        n = self.n_qubits
        qml.AngleEmbedding(angles[..., :n], wires=self.wires, rotation="X")
        k = n
        for _ in range(self.n_layers):
            for wire in range(n):
                qml.RY(angles[..., k + wire], wires=wire)
            for wire in range(n):
                qml.CNOT(wires=[wire, (wire + 1) % n])
            for wire in range(n):
                qml.RZ(angles[..., k + n + wire], wires=wire)
            k += 2 * n


@register_circuit
@dataclass(frozen=True)
class WideFeedForward(Circuit):
    """Feed-forward: two numbers per qubit (RY and RZ), so the slot reduces d_model to 2 n, not n."""

    name = "wide"
    kind = "feed_forward"

    @property
    def n_inputs(self) -> int:
        return 2 * self.n_qubits

    def apply(self, angles: torch.Tensor) -> None:
        n = self.n_qubits
        qml.AngleEmbedding(angles[..., :n], wires=self.wires, rotation="Y")
        qml.AngleEmbedding(angles[..., n:2 * n], wires=self.wires, rotation="Z")
        qml.StronglyEntanglingLayers(angles[..., 2 * n:].reshape(angles.shape[:-1] + self.weight_shape), wires=self.wires)


MINE = (XYEmbedding, RingAttention, WideFeedForward)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="custom_circuit", help="folder for the drawings and the checkpoint "
                                                                 "(default: custom_circuit)")
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    text = "the cat sat on the mat. "
    tok = CharTokenizer.from_text(text)
    config = QELMConfig(vocab_size=tok.vocab_size, d_model=8, n_heads=2, context_len=12, n_qubits=2, circuit_layers=1,
                        embedding_circuit="xy", attention_circuit="ring", feed_forward_circuit="wide")
    for cls in MINE:  # each circuit drawn at the model's size, every gate labelled by its angle's index
        (out / f"{cls.name}.png").write_bytes(render(config.circuit(cls.name), "png"))

    torch.manual_seed(0)
    model = QELM(config)
    ids = torch.tensor([tok.encode(text)])  # (1, 24)
    windows = ids.unfold(1, 13, 1)[0]  # (12, 13): every window of context_len + 1 tokens
    opt = torch.optim.Adam(model.parameters(), lr=0.05)
    for step in range(20):
        _, loss = model(windows[:, :-1], windows[:, 1:])
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step % 5 == 0 or step == 19:
            print(f"step {step:2d}: loss {loss.item():.4f}")
    for layer in model.quantum_layers():
        for circuit in layer.circuits():
            print(f"{type(layer).__name__:22s} runs {circuit.name!r}: {circuit.n_inputs} inputs, weights "
                  f"{tuple(layer.weights.shape)}, {circuit.n_outputs} outputs")

    model.eval()
    with torch.no_grad():
        reference = model(windows[:, :-1])[0]
        model.set_backend("default.qubit")  # the same weights on PennyLane's simulator
        diff = (model(windows[:, :-1])[0] - reference).abs().max().item()
        model.set_backend("qelm.fused")
    print(f"{model.circuit_parameters()} of {model.num_parameters()} parameters are gate angles; "
          f"default.qubit agrees with qelm.fused to {diff:.1e}")

    save_checkpoint(out / "model", model, tok)
    for cls in MINE:  # what a process knows that has not imported this file: the built-in circuits only
        del CIRCUITS[cls.name]
    try:
        load_checkpoint(out / "model")
    except ValueError as e:
        print(f"without the circuits registered, loading says: {e}")
    for cls in MINE:  # importing this file registers them again (on the command line: --import)
        register_circuit(cls)
    loaded = load_checkpoint(out / "model").model
    with torch.no_grad():
        same = torch.equal(loaded(windows[:, :-1])[0], reference)
    print(f"registered again, the checkpoint loads: the same logits ({same})")


if __name__ == "__main__":
    main()
