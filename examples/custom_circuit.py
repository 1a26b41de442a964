"""A circuit of your own as the token embedding: subclass Circuit, register it, name it in a config.

The circuit takes one flat vector of angles (data angles first, then weights); it says how many data
angles it needs (``n_inputs``) and places its gates (``apply``). Once registered, a config names it, every
backend runs it, and a checkpoint that names it loads (loading imports no code: register it first).
"""

from dataclasses import dataclass

import pennylane as qml
import torch

from qelm import QELM, Circuit, QELMConfig
from qelm.circuits import register_circuit


@register_circuit
@dataclass(frozen=True)
class XYEmbedding(Circuit):
    """RX then RY data rotations on each qubit, then the strongly entangling layers of the weights."""

    name = "xy"
    kind = "embedding"

    @property
    def n_inputs(self) -> int:
        return 2 * self.n_qubits  # two data angles per qubit

    def apply(self, angles: torch.Tensor) -> None:
        n = self.n_qubits
        qml.AngleEmbedding(angles[..., :n], wires=self.wires, rotation="X")
        qml.AngleEmbedding(angles[..., n:2 * n], wires=self.wires, rotation="Y")
        qml.StronglyEntanglingLayers(angles[..., 2 * n:].reshape(angles.shape[:-1] + self.weight_shape), wires=self.wires)


print(XYEmbedding(n_qubits=2, n_layers=1).draw())

torch.manual_seed(0)
config = QELMConfig(vocab_size=8, d_model=8, n_heads=2, context_len=8, n_qubits=2, circuit_layers=1,
                    embedding_circuit="xy")
model = QELM(config)
seq = torch.tensor([[0, 1, 2, 3, 4, 5, 6, 7, 0]])
opt = torch.optim.Adam(model.parameters(), lr=0.05)
for step in range(30):
    _, loss = model(seq[:, :-1], seq[:, 1:])
    opt.zero_grad()
    loss.backward()
    opt.step()
    if step % 10 == 0 or step == 29:
        print(f"step {step:2d}: loss {loss.item():.4f}")
model.eval()
with torch.no_grad():
    reference = model(seq[:, :-1])[0]
    model.set_backend("default.qubit")  # the same weights on PennyLane's simulator
    diff = (model(seq[:, :-1])[0] - reference).abs().max().item()
print(f"{model.circuit_parameters()} of {model.num_parameters()} parameters are gate angles; "
      f"default.qubit agrees with qelm.fused to {diff:.1e}")
