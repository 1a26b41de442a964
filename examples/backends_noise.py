"""Backends and noise: one trained tiny QELM on every simulator here, then on simulated noisy hardware.

The model trains on ``qelm.fused`` (exact). Its weights then run unchanged on every other backend this machine
has: the exact ones give the same logits. On ``qiskit.aer`` with shots the circuits' outputs are estimates from
sampled bitstrings; with a noise model (depolarizing after every gate, or readout errors) they are biased as well,
and the model's loss on its training text rises with the noise. Where mitiq is installed (``pip install
'qelm-lab[noise]'``), readout-error mitigation corrects the readout noise; where it is not, the script says so and
goes on. ``--out DIR`` writes the figure ``noise.png``: loss against noise strength.

    python examples/backends_noise.py --out runs/noise

The same from the command line: ``qelm eval --checkpoint DIR --data FILE --backend qiskit.aer --shots 4096
--noise depolarizing:p1=0.003,p2=0.03 [--mitigate readout]``.
"""

import argparse
from pathlib import Path

import matplotlib.pyplot as plt
import torch

from qelm import QELM, BackendUnavailable, QELMConfig, available_backends
from qelm.plot import save_figure
from qelm.tokenizer import CharTokenizer

SHOTS = 4096


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="backends_noise", help="folder for noise.png (default: backends_noise)")
    args = parser.parse_args()

    text = "the cat sat on the mat. "
    tok = CharTokenizer.from_text(text)
    torch.manual_seed(0)
    config = QELMConfig(vocab_size=tok.vocab_size, d_model=8, n_heads=2, context_len=8, n_qubits=2, circuit_layers=1)
    model = QELM(config)
    windows = torch.tensor([tok.encode(text)]).unfold(1, 9, 1)[0]  # (16, 9): every window of 8 + 1 tokens
    x, y = windows[:, :-1], windows[:, 1:]
    opt = torch.optim.Adam(model.parameters(), lr=0.05)
    for _ in range(25):
        _, loss = model(x, y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.double().eval()  # compared in float64, so agreement is seen to its last digits

    def run(backend: str, **options) -> tuple[torch.Tensor, float]:
        model.set_backend(backend, **options)
        with torch.no_grad():
            logits, loss = model(x, y)
        return logits, loss.item()

    reference, exact_loss = run("qelm.fused")
    print(f"trained on qelm.fused: loss {exact_loss:.4f}")
    print("\nthe same weights, every other exact backend here:")
    for name, status in available_backends().items():
        if status != "ok":
            print(f"  {name:16s} unavailable: {status.split(':')[0]}")
            continue
        if name in ("qelm.fused", "qiskit.aer"):
            continue  # the reference; sampled (below)
        logits, _ = run(name)
        print(f"  {name:16s} max |logits - qelm.fused logits| = {(logits - reference).abs().max().item():.1e}")

    print(f"\nqiskit.aer, {SHOTS} shots per circuit, seed 0:")
    logits, shots_loss = run("qiskit.aer", shots=SHOTS, seed=0)
    def report(label: str, logits: torch.Tensor, loss: float) -> float:
        drift = (logits - reference).abs().mean().item()
        print(f"  {label:30s} loss {loss:.4f}  mean |logits - exact| = {drift:.3f}")
        return drift

    shots_drift = report("no noise", logits, shots_loss)
    strengths = [0.01, 0.03, 0.1]
    curves: dict[str, list[tuple[float, float]]] = {"depolarizing": [], "readout": []}
    for p in strengths:
        for kind, noise in (("depolarizing", f"depolarizing:p1={p / 10:g},p2={p:g}"), ("readout", f"readout:p={p:g}")):
            logits, noisy = run("qiskit.aer", shots=SHOTS, seed=0, noise=noise)
            curves[kind].append((noisy, report(noise, logits, noisy)))
    try:
        logits, loss = run("qiskit.aer", shots=SHOTS, seed=0, noise="readout:p=0.1", mitigation="readout")
        mitigated: tuple[float, float] | None = (loss, report("readout:p=0.1, mitigated", logits, loss))
    except BackendUnavailable as e:  # an optional extra: the rest of the tutorial does not need it
        mitigated = None
        print(f"  readout mitigation not run here: {e}")

    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for ax, k, exact, shots, what in ((axes[0], 0, exact_loss, shots_loss, "loss on the training text (nats)"),
                                      (axes[1], 1, 0.0, shots_drift, "mean |logits - exact logits|")):
        ax.axhline(exact, color="black", lw=1, label="exact (qelm.fused)")
        ax.axhline(shots, color="grey", lw=1, ls="--", label=f"{SHOTS} shots, no noise")
        ax.plot(strengths, [c[k] for c in curves["depolarizing"]], "o-", label="depolarizing p2 (p1 = p2 / 10)")
        ax.plot(strengths, [c[k] for c in curves["readout"]], "s-", label="readout flips p")
        if mitigated is not None:
            ax.plot([0.1], [mitigated[k]], "D", color="C1", mfc="white", label="readout p = 0.1, mitigated")
        ax.set_xscale("log")
        ax.set_xticks(strengths, [f"{p:g}" for p in strengths])
        ax.minorticks_off()
        ax.set_xlabel("noise probability (qiskit.aer)")
        ax.set_ylabel(what)
    axes[0].legend(fontsize=8)
    fig.suptitle("One trained tiny QELM, its weights unchanged, on simulated noisy hardware")
    fig.tight_layout()
    out = save_figure(fig, Path(args.out) / "noise.png", make_parents=True)
    plt.close(fig)
    print(f"\nwrote {out}")


if __name__ == "__main__":
    main()
