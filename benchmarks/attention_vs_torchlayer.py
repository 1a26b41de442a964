"""One QuantumMultiHeadAttention call (forward + backward) against the same circuits run the textbook way:
a ``qml.qnn.TorchLayer`` per head and per q/k/v slot, called once per token in a Python loop.

Both compute the same function with the same weights (checked before timing), on default.qubit, in one
run. Prints the table and writes JSON (``--json``).

    python benchmarks/attention_vs_torchlayer.py --batch 8 --seq 32
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import statistics
import time

import pennylane as qml
import torch

from qelm import QELM, ClassicalLM, QELMConfig, QuantumMultiHeadAttention


class LoopedTorchLayerAttention(torch.nn.Module):
    """The same attention as ``QuantumMultiHeadAttention`` with one TorchLayer call per token, head and slot."""

    def __init__(self, mha: QuantumMultiHeadAttention) -> None:
        super().__init__()
        self.mha = mha
        circuit = mha.heads.features
        dev = qml.device("default.qubit", wires=circuit.n_wires)

        def qnode(inputs, weights):
            circuit.apply(circuit.angles(inputs, weights))
            return [qml.expval(qml.PauliZ(w)) for w in circuit.observables]

        node = qml.QNode(qnode, dev, interface="torch", diff_method="backprop")
        H = mha.n_heads
        self.layers = torch.nn.ModuleList(
            qml.qnn.TorchLayer(node, {"weights": circuit.weight_shape}) for _ in range(H * 3)
        )
        with torch.no_grad():  # the same weight values as the batched module
            for h in range(H):
                for s in range(3):
                    self.layers[h * 3 + s].weights.copy_(mha.heads.weights[h, s])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, T, _ = x.shape
        H, n = self.mha.n_heads, self.mha.n_qubits
        red = self.mha.reduce(x).view(B, T, H, n)
        feats = torch.stack([
            torch.stack([
                torch.stack([
                    torch.stack([self.layers[h * 3 + s](red[b, t, h].unsqueeze(0))[0] for s in range(3)])
                    for h in range(H)])
                for t in range(T)])
            for b in range(B)])  # (B, T, H, 3, n): the per-token loop this benchmark is about
        q, k, v = feats.permute(3, 0, 2, 1, 4).unbind(0)
        att = (q @ k.transpose(-1, -2) / math.sqrt(n)).masked_fill(~torch.ones(T, T, dtype=torch.bool).tril(), float("-inf")).softmax(-1)
        return self.mha.expand((att @ v).permute(0, 2, 1, 3).reshape(B, T, -1))


def _time(fn, repeats: int) -> list[float]:
    fn()  # warm-up: builds and caches the QNodes
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return times


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--seq", type=int, default=32)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--loop-repeats", type=int, default=1, help="repeats of the (slow) looped version")
    p.add_argument("--json", default=None)
    args = p.parse_args()
    torch.manual_seed(0)
    config = QELMConfig(context_len=args.seq)
    mha = QuantumMultiHeadAttention(config)
    looped = LoopedTorchLayerAttention(mha)
    x = torch.randn(args.batch, args.seq, config.d_model)
    with torch.no_grad():
        diff = (mha(x) - looped(x)).abs().max().item()
    assert diff < 1e-5, f"the two implementations disagree by {diff}"

    def step(module):
        return lambda: module(x).sum().backward()

    fast = _time(step(mha), args.repeats)
    slow = _time(step(looped), args.loop_repeats)
    circuits = args.batch * args.seq * config.n_heads * 3
    result = {
        "workload": f"QuantumMultiHeadAttention forward+backward, B={args.batch}, T={args.seq}, heads={config.n_heads}, "
                    f"{config.n_qubits} qubits, {config.circuit_layers} re-uploading layers: {circuits} circuits per call",
        "qelm_batched_s": statistics.median(fast),
        "torchlayer_per_token_s": statistics.median(slow),
        "speedup": statistics.median(slow) / statistics.median(fast),
        "max_abs_output_difference": diff,
        "parameters": {"qelm_default": QELM(QELMConfig()).num_parameters(),
                       "classical_twin_default": ClassicalLM(QELMConfig()).num_parameters()},
        "machine": {"cpu": platform.processor() or platform.machine(), "threads": torch.get_num_threads(),
                    "torch": torch.__version__, "pennylane": qml.__version__},
        "repeats": {"qelm": args.repeats, "torchlayer": args.loop_repeats},
    }
    print(result["workload"])
    print("| implementation | forward+backward | ratio |\n| --- | --- | --- |")
    print(f"| qelm QuantumMultiHeadAttention (one broadcast execution) | {result['qelm_batched_s'] * 1e3:.1f} ms | 1.0 |")
    print(f"| qml.qnn.TorchLayer looped per token, head, q/k/v | {result['torchlayer_per_token_s'] * 1e3:.0f} ms | "
          f"{result['speedup']:.0f}x slower |")
    print(f"parameters: default QELM {result['parameters']['qelm_default']}, "
          f"classical twin {result['parameters']['classical_twin_default']}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2)


if __name__ == "__main__":
    main()
