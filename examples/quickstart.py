"""Build a tiny QELM, its classical twin and a parameter-matched baseline; train each for a few steps on
a repeated phrase and print what was measured."""

import torch

from qelm import QELM, ClassicalLM, QELMConfig

text = "the cat sat on the mat. " * 8
vocab = sorted(set(text))
ids = torch.tensor([[vocab.index(c) for c in text]])
config = QELMConfig(vocab_size=len(vocab), d_model=16, n_heads=2, context_len=24, n_qubits=4)
x, y = ids[:, :24], ids[:, 1:25]

for name, model in [("QELM", QELM(config)), ("classical twin", ClassicalLM(config))]:
    torch.manual_seed(0)
    opt = torch.optim.Adam(model.parameters(), lr=0.03)
    for step in range(40):
        _, loss = model(x, y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    print(f"{name:15s} {model.num_parameters():6d} parameters ({model.circuit_parameters()} in circuits), "
          f"loss after 40 steps {loss.item():.4f}")
matched = ClassicalLM.matched_to(QELM(config))
print(f"matched classical baseline: d_model={matched.config.d_model}, d_hidden={matched.config.d_hidden}, "
      f"{matched.num_parameters()} parameters")
