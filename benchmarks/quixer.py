"""One training step of Quixer on Penn Treebank's shapes (1,024 windows of 32 tokens, forward + backward + Adam),
on qelm.fused eager and compiled, beside a gate-by-gate reference and the Transformer-96 baseline, all in the
same run. Prints a table with ratios and writes JSON.

The gate-by-gate reference applies each gate of every token's ansatz to that token's state as TorchQuantum does
(a per-sample 2x2 complex matrix contracted with the state's target axis; a controlled gate on the control's
1-half), inside the same Quixer model: only the circuit engine differs.

    python benchmarks/quixer.py --device cuda --label h200
    python benchmarks/quixer.py --device cpu --windows 1024 --repeats 2 --label cpu
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from qelm.ptb_models import build_window_model

V = 9924


class GateByGate:
    """The reference engine: every gate applied by its own 2x2 complex matrices, state ``(N, 2, ..., 2)``."""

    dtype = "complex64"

    def __init__(self) -> None:
        from qelm.backends.fused_evolve import evolve_plan

        self._plan = evolve_plan
        self._plans: dict = {}

    def evolve_pairs(self, circuit, angles, re, im):
        key = circuit.key
        if key not in self._plans:
            self._plans[key] = self._plan(circuit)
        plan = self._plans[key]
        n, N = plan.n_wires, re.shape[0]
        psi = torch.complex(re, im).reshape((N,) + (2,) * n)
        half = 0.5 * angles.to(re.dtype)
        c, s = torch.cos(half).to(psi.dtype), torch.sin(half).to(psi.dtype)
        for name, wires, col in plan.gates:
            cc, ss = c[:, col], s[:, col]
            if name.endswith("RY"):
                m = torch.stack([torch.stack([cc, -ss], -1), torch.stack([ss, cc], -1)], -2)
            else:  # RX
                m = torch.stack([torch.stack([cc, -1j * ss], -1), torch.stack([-1j * ss, cc], -1)], -2)
            target = wires[-1] + 1
            if name.startswith("C"):  # act on the control's 1-half only
                control = wires[0] + 1
                sub = psi.select(control, 1)
                t = target if target < control else target - 1
                moved = sub.movedim(t, -1)
                new = torch.einsum("nij,n...j->n...i", m, moved.reshape(N, -1, 2)).reshape(moved.shape).movedim(-1, t)
                psi = torch.stack([psi.select(control, 0), new], dim=control)
            else:
                moved = psi.movedim(target, -1)
                psi = torch.einsum("nij,n...j->n...i", m, moved.reshape(N, -1, 2)).reshape(moved.shape).movedim(-1, target)
        psi = psi.reshape(N, -1)
        return psi.real, psi.imag


def time_step(model, windows: int, device, repeats: int, warmup: int, compile_model: bool) -> dict:
    torch.manual_seed(0)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.Adam(params, lr=1e-3, weight_decay=1e-4, eps=1e-10, **({"fused": True} if device.type == "cuda" else {}))
    forward = torch.compile(model) if compile_model else model
    x = torch.randint(0, V, (windows, 32), device=device)
    y = torch.randint(0, V, (windows,), device=device)

    def step():
        loss = F.cross_entropy(forward(x).float(), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 5.0, foreach=True)
        opt.step()

    t0 = time.perf_counter()
    for _ in range(warmup):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    first = time.perf_counter() - t0
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        step()
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t)
    peak = torch.cuda.max_memory_allocated() / 2**30 if device.type == "cuda" else None
    return {"median_ms": 1000 * statistics.median(times), "min_ms": 1000 * min(times), "warmup_s": first,
            "repeats": repeats, "peak_gib": peak}


def report(rows: dict, args, device) -> Path:
    """Ratios and the JSON, written after every row (a run cut short keeps what it measured)."""
    best = min((v["median_ms"], k) for k, v in rows.items() if k.startswith("quixer")) if any(
        k.startswith("quixer") for k in rows) else (float("nan"), None)
    ratios = {}
    if "gate-by-gate" in rows and best[1]:
        ratios["gate_by_gate_over_best_quixer"] = rows["gate-by-gate"]["median_ms"] / best[0]
    for t in ("transformer-eager", "transformer-compiled"):
        if t in rows and best[1]:
            ratios[f"best_quixer_over_{t}"] = best[0] / rows[t]["median_ms"]
    gpu = torch.cuda.get_device_name(device) if device.type == "cuda" else None
    result = {"benchmark": "quixer training step (1,024 windows x 32 tokens, forward + backward + Adam)",
              "windows": args.windows, "device": args.device, "gpu": gpu, "cpu": platform.processor() or platform.machine(),
              "threads": torch.get_num_threads(), "torch": torch.__version__, "command": " ".join(["python"] + sys.argv),
              "best_quixer": best[1], "rows": rows, "ratios": ratios}
    label = args.label or (gpu or "cpu").split()[-1].lower()
    path = Path(args.out) / f"quixer-step-{label}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2) + "\n")
    return path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--windows", type=int, default=1024)
    ap.add_argument("--repeats", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--label", default=None)
    ap.add_argument("--only", default="quixer-compiled,quixer-eager,gate-by-gate,transformer-eager,transformer-compiled")
    ap.add_argument("--out", default="benchmarks/results")
    ap.add_argument("--profile", action="store_true", help="print torch.profiler's top kernels of one Quixer step")
    args = ap.parse_args()
    device = torch.device(args.device)
    rows = {}
    for name in args.only.split(","):
        torch.manual_seed(0)
        model_name = "transformer" if name.startswith("transformer") else "quixer"
        model = build_window_model(model_name, V, backend_options={"dtype": "complex64"}).to(device)
        if name == "gate-by-gate":
            model.mixer.backend = GateByGate()
        if name == "quixer-torch":  # fused_evolve's torch operations instead of the CUDA kernel
            model.mixer.backend.evolve_kernel = False
        repeats = args.repeats if name != "gate-by-gate" else max(2, args.repeats // 4)
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats()
        rows[name] = time_step(model, args.windows, device, repeats, args.warmup, name.endswith("compiled"))
        print(f"{name:22s} {rows[name]['median_ms']:9.2f} ms/step (min {rows[name]['min_ms']:.2f}; warm-up "
              f"{rows[name]['warmup_s']:.1f} s)", flush=True)
        del model
        path = report(rows, args, device)
    print(f"wrote {path}: " + json.dumps(json.loads(path.read_text())["ratios"]))
    if args.profile:
        model = build_window_model("quixer", V, backend_options={"dtype": "complex64"}).to(device)
        time_step(model, args.windows, device, 1, 1, False)
        with torch.profiler.profile() as prof:
            time_step(model, args.windows, device, 2, 0, False)
        print(prof.key_averages().table(sort_by="self_cuda_time_total" if device.type == "cuda" else "self_cpu_time_total",
                                        row_limit=15))


if __name__ == "__main__":
    main()
