"""How a trained QELM fares under realistic noise, and how much error mitigation recovers.

The demo QELM (the bundled config and corpus, 800 steps) is trained exactly on ``qelm.fused``, then its
validation split (every token, windows of the context length) is scored under each condition:

* exact (``qelm.fused``), and shots only (``qiskit.aer``, no noise);
* each noise model (:mod:`qelm.backends.noise`): depolarizing, thermal relaxation, readout error, and a device's
  calibration snapshot (``fake_manila``, circuits transpiled to it), without mitigation and with the
  mitigations of :mod:`qelm.backends.mitigation` that apply to it.

For each: held-out perplexity; the mean absolute error of every circuit output against the exact output
of the same circuit on the same inputs (each circuit call is also run on ``qelm.fused``, so later layers
see the noisy earlier outputs, as they would on hardware); the circuits and shots the evaluation asked for
(calibration and mitigation included); the wall time of the noisy evaluation (the exact reference runs
are timed and left out).

A shot sweep measures where mitigation starts to pay: the circuit calls of the first validation windows,
depolarizing noise, unmitigated and with ZNE, at several shot counts.

Noise-aware fine-tuning: the exact run is resumed for a few steps with shots and noise (``--ft-noise``,
default depolarizing) on ``qiskit.aer`` (``qelm train --resume DIR --noise ... --shots ... --grad ...``),
with SPSA and with parameter-shift gradients, beside a control that trains the same extra steps exactly.
Each is scored exactly and under that noise; circuits per step and wall time are measured.

Needs the ``noise`` extra (``pip install "qelm-lab[noise]"``: mitiq, qiskit-ibm-runtime's device snapshots).

Usage::

    python benchmarks/noise.py               # the committed run: benchmarks/results/noise-cpu.json and .png
    python benchmarks/noise.py --quick       # a smoke test: 4 validation windows, 2 and 4 fine-tuning steps
    python benchmarks/noise.py --ft-only --ft-noise fake_manila --ft-long 0 --json benchmarks/results/noise-finetune-fake_manila.json
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import shutil
import sys
import tempfile
import time
import warnings
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from qelm.backends import Backend, get_backend  # noqa: E402
from qelm.bench.machine import machine_description  # noqa: E402
from qelm.checkpoint import load_checkpoint  # noqa: E402
from qelm.data import TextDataset, bundled_corpus  # noqa: E402
from qelm.evaluate import evaluate  # noqa: E402
from qelm.train import train  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
PACKAGES = ("qiskit", "qiskit-aer", "qiskit-ibm-runtime", "mitiq", "cirq-core", "numpy")
DEVICE = "fake_manila"
# (noise, mitigations tried on it): ZNE is Richardson on scales 1/3/5 by default
CONDITIONS = {
    "depolarizing": [None, "zne", "zne:fit=linear"],
    "thermal": [None, "zne", "zne:fit=linear", "twirl", "zne+twirl"],
    "readout": [None, "readout", "zne"],
    DEVICE: [None, "zne", "readout", "zne+readout", "zne:fit=linear+readout"],
}
SWEEP_SHOTS = (1024, 8192, 32768, 131072)
SWEEP_MITIGATIONS = (None, "zne", "zne:fit=linear")


class AgainstExact(Backend):
    """Runs every circuit call on ``inner`` and on ``qelm.fused`` with the same inputs and weights, adds up
    the absolute differences, and returns ``inner``'s outputs."""

    name = "qiskit.aer"

    def __init__(self, inner: Backend) -> None:
        super().__init__(shots=inner.shots, seed=inner.seed)
        self.inner, self.exact = inner, get_backend("qelm.fused")
        self.abs_error, self.outputs, self.exact_seconds = 0.0, 0, 0.0

    def run(self, circuit, inputs, weights, kind="expval"):
        out = self.inner.run(circuit, inputs, weights, kind)
        start = time.perf_counter()
        ref = self.exact.run(circuit, inputs, weights, kind)
        self.exact_seconds += time.perf_counter() - start
        self.abs_error += float((out.double() - ref.double()).abs().sum())
        self.outputs += out.numel()
        return out

    def describe(self) -> str:
        return self.inner.describe()


class Recorder(Backend):
    """Runs on ``qelm.fused`` and keeps every call, to replay the same circuit inputs on other backends."""

    name = "qelm.fused"

    def __init__(self) -> None:
        super().__init__()
        self.exact, self.calls = get_backend("qelm.fused"), []

    def run(self, circuit, inputs, weights, kind="expval"):
        out = self.exact.run(circuit, inputs, weights, kind)
        self.calls.append((circuit, inputs.detach().clone(), weights.detach().clone(), out.detach().clone()))
        return out


def score(model, ids: torch.Tensor, backend: Backend | None, context_len: int) -> dict:
    """Perplexity of ``model`` on ``ids`` with its circuits on ``backend`` (None: exact), with the MAE of
    the circuit outputs against exact, the circuits and shots asked for, and the wall time."""
    wrapper = AgainstExact(backend) if backend is not None else None
    model.set_backend(wrapper if wrapper is not None else "qelm.fused")
    start = time.perf_counter()
    res = evaluate(model, ids, batch_size=64, context_len=context_len)
    seconds = time.perf_counter() - start
    out = {"perplexity": res["perplexity"], "loss": res["loss"], "tokens": res["tokens"]}
    if wrapper is None:
        out.update(mae=0.0, seconds=seconds, circuits=None, shots_taken=0, backend="qelm.fused (exact)")
    else:
        usage = backend.usage
        out.update(mae=wrapper.abs_error / max(1, wrapper.outputs), outputs=wrapper.outputs,
                   seconds=seconds - wrapper.exact_seconds, circuits=usage["circuits"], shots_taken=usage["shots"],
                   backend=backend.describe())
    model.set_backend("qelm.fused")
    return out


def aer(shots: int, noise: str | None = None, mitigation: str | None = None, **options) -> Backend:
    opts = {k: v for k, v in {"noise": noise, "mitigation": mitigation}.items() if v is not None}
    return get_backend("qiskit.aer", shots=shots, seed=0, **opts, **options)


def conditions(model, ids, context_len: int, shots: int, log, which: dict = CONDITIONS) -> list[dict]:
    rows = []

    def add(label, noise, mitigation, backend):
        row = {"noise": noise, "mitigation": mitigation, "shots_per_circuit": shots, **score(model, ids, backend,
                                                                                            context_len)}
        row["label"] = label
        rows.append(row)
        log(f"{label:42s} ppl {row['perplexity']:.3f}  MAE {row['mae']:.4f}  {row['seconds']:.0f} s")

    add("exact", None, None, None)
    add(f"shots only ({shots})", None, None, aer(shots))
    for noise, mitigations in which.items():
        for mitigation in mitigations:
            add(f"{noise} / {mitigation or 'unmitigated'}", noise, mitigation, aer(shots, noise, mitigation))
    base = {r["noise"]: r for r in rows if r["noise"] and r["mitigation"] is None}
    for r in rows:
        if r["noise"] and r["mitigation"]:
            b = base[r["noise"]]
            r["mae_reduction"] = b["mae"] / r["mae"] if r["mae"] else None
            r["shot_factor"] = r["shots_taken"] / b["shots_taken"]
            r["time_factor"] = r["seconds"] / b["seconds"]
    return rows


def shot_sweep(model, ids, context_len: int, windows: int, log) -> list[dict]:
    """MAE of the circuit outputs of the first ``windows`` validation windows (exact inputs) under
    depolarizing noise, unmitigated and mitigated, at each shot count."""
    rec = Recorder()
    model.set_backend(rec)
    with torch.no_grad():
        model.eval()
        x = ids[: windows * context_len].reshape(windows, context_len)
        model(x)
    model.set_backend("qelm.fused")
    rows = []
    for shots in SWEEP_SHOTS:
        for mitigation in SWEEP_MITIGATIONS:
            backend = aer(shots, "depolarizing", mitigation)
            err, n = 0.0, 0
            for circuit, inputs, weights, ref in rec.calls:
                out = backend.run(circuit, inputs, weights)
                err += float((out.double() - ref.double()).abs().sum())
                n += out.numel()
            rows.append({"shots": shots, "mitigation": mitigation, "mae": err / n, "outputs": n,
                         "shots_taken": backend.usage["shots"]})
            log(f"sweep {shots:>7} shots {mitigation or 'unmitigated':15s} MAE {err / n:.4f}")
    return rows


def fine_tune(run: Path, work: Path, dataset, steps: tuple[int, int], noisy_eval, ft_shots: int, noise: str,
              log) -> list[dict]:
    """Resume the exact run for more steps: exactly (the control), and with shots + ``noise`` through
    qiskit.aer with SPSA and with parameter-shift gradients. ``steps``: (steps of every variant, steps of
    the cheap ones, SPSA and the control, in a longer second run; 0 skips it)."""
    base_steps = json.loads((run / "summary.json").read_text())["run"]["steps"]
    noisy = {"shots": ft_shots, "noise": noise, "seed": 0}
    short, long = steps
    variants = [("exact (control)", "qelm.fused", {}, short),
                ("noise-aware, spsa", "qiskit.aer", {**noisy, "gradient": "spsa"}, short),
                ("noise-aware, parameter shift", "qiskit.aer", {**noisy, "gradient": "parameter_shift"}, short)]
    if long:
        variants += [("exact (control)", "qelm.fused", {}, long),
                     ("noise-aware, spsa", "qiskit.aer", {**noisy, "gradient": "spsa"}, long)]
    rows = []
    for i, (label, backend, options, n) in enumerate(variants):
        out = work / f"ft{i}"
        shutil.copytree(run, out)
        start = time.perf_counter()
        result = train(out=out, resume=True, steps=base_steps + n, twin=False, matched=False, backend=backend,
                       backend_options=options, eval_every=10**9)
        seconds = time.perf_counter() - start
        model = result.qelm.model
        engine = model.backend
        usage = dict(getattr(engine, "usage", {"circuits": 0, "shots": 0}))
        history = [r for r in result.qelm.history if r["step"] > base_steps]
        row = {"label": label, "steps": n, "backend": engine.describe(), "seconds": seconds,
               "step_seconds": sum(r["step_seconds"] for r in history) / len(history),
               "usage_total": usage, "val_perplexity_during_run": result.qelm.val.get("perplexity")}
        cfg = model.config
        model.set_backend("qelm.fused")
        row["exact_perplexity"] = evaluate(model, dataset.val_ids, batch_size=64, context_len=cfg.context_len)["perplexity"]
        scored = noisy_eval(model)
        row["noisy_perplexity"], row["noisy_mae"] = scored["perplexity"], scored["mae"]
        rows.append(row)
        log(f"fine-tune {label:30s} {n:>3} steps  {row['step_seconds']:.1f} s/step  exact ppl "
            f"{row['exact_perplexity']:.3f}  noisy ppl {row['noisy_perplexity']:.3f}")
    return rows


def plot(results: dict, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from qelm.plot import save_figure

    from matplotlib.colors import to_rgba

    rows = [r for r in results["conditions"] if r["noise"]]
    labels = [r["label"].replace(" / ", "\n") for r in rows]
    hues = {n: c for n, c in zip(CONDITIONS, ("tab:blue", "tab:orange", "tab:green", "tab:red"))}
    colors = [to_rgba(hues[r["noise"]], 1.0 if r["mitigation"] is None else 0.5) for r in rows]
    fig, axes = plt.subplots(1, 3, figsize=(18, 6), gridspec_kw={"width_ratios": [3, 3, 2]})
    ax = axes[0]
    x = range(len(rows))
    ax.bar(x, [r["mae"] for r in rows], color=colors)
    ax.set_xticks(list(x), labels, rotation=90, fontsize=7)
    ax.set_ylabel("mean |circuit output - exact|")
    ax.set_yscale("log")
    ax.set_title(f"circuit-output error, {results['settings']['shots']:,} shots per circuit and scale")
    ax = axes[1]
    exact = next(r for r in results["conditions"] if r["label"] == "exact")["perplexity"]
    ax.bar(x, [r["perplexity"] for r in rows], color=colors)
    ax.axhline(exact, color="black", lw=1, ls="--", label=f"exact {exact:.2f}")
    ax.set_ylim(exact * 0.95, max(r["perplexity"] for r in rows) * 1.02)
    ax.set_xticks(list(x), labels, rotation=90, fontsize=7)
    ax.set_ylabel("validation perplexity")
    ax.legend()
    ax.set_title("held-out perplexity (unmitigated: solid)")
    ax = axes[2]
    for mitigation in SWEEP_MITIGATIONS:
        pts = [r for r in results["shot_sweep"] if r["mitigation"] == mitigation]
        ax.plot([p["shots"] for p in pts], [p["mae"] for p in pts], marker="o", label=mitigation or "unmitigated")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("shots per circuit (and per ZNE scale)")
    ax.set_ylabel("mean |circuit output - exact|")
    ax.set_title("depolarizing: when ZNE pays")
    ax.legend()
    fig.tight_layout()
    save_figure(fig, out, make_parents=True)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shots", type=int, default=100_000, help="shots per circuit and ZNE scale (default 100000)")
    parser.add_argument("--ft-shots", type=int, default=1024, help="shots per circuit in fine-tuning (default 1024)")
    parser.add_argument("--ft-steps", type=int, default=8, help="fine-tuning steps of every variant (default 8)")
    parser.add_argument("--ft-long", type=int, default=40, help="fine-tuning steps of SPSA and the control in a "
                                                                  "second, longer run (default 40)")
    parser.add_argument("--sweep-windows", type=int, default=4, help="validation windows in the shot sweep (default 4)")
    parser.add_argument("--ft-noise", default="depolarizing", help="noise of the fine-tuning (default depolarizing)")
    parser.add_argument("--ft-only", action="store_true",
                        help="only the fine-tuning (and the exact and --ft-noise scores it needs); no plot")
    parser.add_argument("--quick", action="store_true", help="smoke test: 4 validation windows, 2 and 4 fine-tuning steps")
    parser.add_argument("--json", default=str(RESULTS / "noise-cpu.json"))
    parser.add_argument("--plot", default=str(RESULTS / "noise-cpu.png"))
    args = parser.parse_args(argv)
    warnings.filterwarnings("ignore", category=UserWarning)  # fake backends warn that snapshots are not typical
    torch.set_num_threads(1)
    log = lambda s: print(s, flush=True)  # noqa: E731
    started = time.perf_counter()
    machine = machine_description("cpu")
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        t0 = time.perf_counter()
        result = train(data=bundled_corpus(), out=work / "exact", twin=False, matched=False)
        train_seconds = time.perf_counter() - t0
        ck = load_checkpoint(work / "exact" / "qelm")
        model, context_len = ck.model, ck.config.context_len
        dataset: TextDataset = result.dataset
        ids = dataset.val_ids if not args.quick else dataset.val_ids[: 4 * context_len + 1]
        log(f"trained exactly in {train_seconds:.1f} s; validation: {ids.numel() - 1} tokens")
        only = {args.ft_noise: [None]} if args.ft_only else CONDITIONS
        rows = conditions(model, ids, context_len, args.shots, log, only)
        sweep = [] if args.ft_only else shot_sweep(model, dataset.val_ids, context_len,
                                                   1 if args.quick else args.sweep_windows, log)

        def noisy_eval(m):
            return score(m, ids, aer(args.shots, args.ft_noise), context_len)

        steps = (2, 4) if args.quick else (args.ft_steps, args.ft_long)
        tuned = fine_tune(work / "exact", work, dataset, steps, noisy_eval, args.ft_shots, args.ft_noise, log)
    eval_circuits = next(r for r in rows if r["noise"] == args.ft_noise and r["mitigation"] is None)["circuits"]
    for t in tuned:  # the run's last step scores the validation split once on its own backend
        u = t.pop("usage_total")
        t["circuits_per_step"] = (u["circuits"] - (eval_circuits if u["circuits"] else 0)) / t["steps"]
    results = {
        "what": "a QELM trained exactly, evaluated under noise models with and without error mitigation; "
                "noise-aware fine-tuning",
        "settings": {"config": "bundled tiny config (qelm/data/tiny.toml)", "corpus": "bundled corpus",
                     "train_steps": 800, "train_seconds": train_seconds, "shots": args.shots, "ft_shots": args.ft_shots,
                     "ft_steps": list(steps), "validation_tokens": int(ids.numel() - 1),
                     "quick": args.quick, "device_model": DEVICE, "ft_noise": args.ft_noise, "seed": 0},
        "method": {
            "mae": "mean over every circuit output of the evaluation of |output - exact output of the same circuit on "
                   "the same inputs and weights| (qelm.fused)",
            "shots": "shots per circuit and ZNE scale; ZNE runs every scale with the full shots (shots_taken counts "
                     "them, and readout calibration); twirled copies share the shots",
            "seconds": "wall time of the noisy evaluation, the exact reference calls left out; 2-core CPU, one torch "
                       "thread, qiskit-aer density matrix",
            "noise": "qiskit-aer NoiseModel: depolarizing p1=1e-3 p2=1e-2; thermal T1=50us T2=70us, gates 50/300 ns; "
                     "readout p0to1=0.01 p1to0=0.03; fake_manila: NoiseModel.from_backend, circuits transpiled to it",
            "fine_tuning": "the exact run resumed for ft_steps more steps (the batches that follow, same lr), with "
                           "ft_shots shots and ft_noise; noisy_perplexity: scored like the ft_noise unmitigated "
                           "condition; circuits_per_step: circuits the training asked for, minus its final validation "
                           "pass, per step; step_seconds: forward + backward + optimizer step",
        },
        "machine": machine,
        "packages": {p: _version(p) for p in PACKAGES},
        "conditions": rows,
        "shot_sweep": sweep,
        "fine_tuning": tuned,
        "total_seconds": time.perf_counter() - started,
    }
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    if not args.ft_only:
        plot(results, Path(args.plot))
    log(f"wrote {args.json}{'' if args.ft_only else ' and ' + args.plot} ({results['total_seconds'] / 60:.1f} min)")
    return 0


def _version(name: str) -> str | None:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


if __name__ == "__main__":
    sys.exit(main())
