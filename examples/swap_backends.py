"""Train a tiny QELM on default.qubit, then run the same weights on other simulators and compare logits.
Backends that cannot run here are reported with the reason (and what to install)."""

import torch

from qelm import QELM, QELMConfig, available_backends

torch.manual_seed(0)
config = QELMConfig(vocab_size=8, d_model=8, n_heads=2, context_len=8, n_qubits=3, circuit_layers=1)
model = QELM(config)
seq = torch.tensor([[0, 1, 2, 3, 4, 5, 6, 7, 0]])
opt = torch.optim.Adam(model.parameters(), lr=0.05)
for _ in range(20):
    _, loss = model(seq[:, :-1], seq[:, 1:])
    opt.zero_grad()
    loss.backward()
    opt.step()

model.eval()
with torch.no_grad():
    reference = model(seq[:, :-1])[0]
    for name, status in available_backends().items():
        if status != "ok":
            print(f"{name:16s} unavailable: {status}")
            continue
        model.set_backend(name)
        diff = (model(seq[:, :-1])[0] - reference).abs().max().item()
        print(f"{name:16s} max |logits - default.qubit logits| = {diff:.2e}")
