"""Whole models at 6 and 8 qubits: QELM / twin training tokens per second, and where qelm.fused should start
fusing into k-qubit blocks (``blocks_from``) for narrow circuits on a device.

One training step through the Python API (forward + backward + AdamW), the QELM on ``qelm.fused`` with each
``blocks_from`` given (the whole-register path for circuits narrower than it, k-qubit blocks with adjoint
differentiation from it) and its classical twin (ClassicalLM at the same config), in the same process,
interleaved round by round so that a machine's drift hits both. The configurations are issue 25's:
6 qubits with d_model 32, 8 qubits with d_model 64, 4 heads, 2 layers, batch 8.

    python benchmarks/width_models.py --device cuda --label h200
    python benchmarks/width_models.py --device cpu --seq-lens 32 --qubits 6 --label cpu

Prints each row with QELM / twin, writes ``results/width-models-LABEL.json`` (every figure, the command and
the machine).
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

from qelm import QELM, ClassicalLM, QELMConfig
from qelm.bench.machine import machine_description

WIDTHS = {4: 16, 6: 32, 8: 64}  # qubits -> d_model (4: the tiny config's width)


def _sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def _stepper(model: torch.nn.Module, idx: torch.Tensor, targets: torch.Tensor):
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)

    def step() -> None:
        _, loss = model(idx, targets)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return step


def _options(text: str) -> dict:
    """``default`` -> {}; ``blocks_from=4,dtype=complex64`` -> {"blocks_from": 4, "dtype": "complex64"}."""
    if text == "default":
        return {}
    pairs = (item.split("=", 1) for item in text.split(","))
    return {k: int(v) if v.isdigit() else v for k, v in pairs}


def _profile(steps: dict, device: str) -> None:
    from torch.profiler import ProfilerActivity, profile

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device == "cuda" else [])
    for name, step in steps.items():
        with profile(activities=activities) as prof:
            step()
            _sync(device)
        key = "self_cuda_time_total" if device == "cuda" else "self_cpu_time_total"
        print(f"--- profile: {name}")
        print(prof.key_averages().table(sort_by=key, row_limit=14, max_name_column_width=60))


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", choices=("cpu", "cuda"), default="cuda")
    p.add_argument("--qubits", default="6,8", help="comma-separated: 6 and/or 8 (default 6,8)")
    p.add_argument("--seq-lens", default="128,512", help="comma-separated (default 128,512)")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--variants", default="default;blocks_from=4",
                   help="qelm.fused option sets to compare, ';'-separated: 'default' or OPTION=VALUE[,OPTION=VALUE] "
                        "(default: 'default;blocks_from=4'); features=0 runs narrow circuits stage by stage")
    p.add_argument("--profile", action="store_true",
                   help="also print torch.profiler's top operations of one QELM step per configuration")
    p.add_argument("--rounds", type=int, default=5, help="timed rounds, each one step of every model (default 5)")
    p.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    p.add_argument("--label", default=None)
    p.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "results")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    variants = {v: _options(v) for v in args.variants.split(";")}
    rows = []
    for n in (int(q) for q in args.qubits.split(",")):
        for T in (int(t) for t in args.seq_lens.split(",")):
            config = QELMConfig(vocab_size=64, d_model=WIDTHS[n], n_heads=4, n_layers=2, n_qubits=n,
                                context_len=T)
            torch.manual_seed(0)
            idx = torch.randint(0, config.vocab_size, (args.batch_size, T), device=args.device)
            targets = torch.randint(0, config.vocab_size, (args.batch_size, T), device=args.device)
            models = {"twin": ClassicalLM(config).to(args.device)}
            for label, options in variants.items():
                q = QELM(config).to(args.device)
                options = dict(options)
                features = options.pop("features", None)  # an attribute of the backend, not an option
                q.set_backend("qelm.fused", **options)
                if features is not None:
                    q.backend.features = bool(features)
                models[f"qelm {label}"] = q
            steps = {name: _stepper(m, idx, targets) for name, m in models.items()}
            times: dict[str, list[float]] = {name: [] for name in steps}
            for step in steps.values():  # warm-up: plans, graphs, allocator
                for _ in range(2):
                    step()
            _sync(args.device)
            for _ in range(args.rounds):
                for name, step in steps.items():
                    _sync(args.device)
                    t0 = time.perf_counter()
                    step()
                    _sync(args.device)
                    times[name].append(time.perf_counter() - t0)
            if args.profile:
                _profile(steps, args.device)
            tokens = args.batch_size * T
            twin = tokens / statistics.median(times["twin"])
            for name, ts in times.items():
                rate = tokens / statistics.median(ts)
                row = {"n_qubits": n, "d_model": WIDTHS[n], "seq_len": T, "batch": args.batch_size, "model": name,
                       "step_ms": 1e3 * statistics.median(ts), "tokens_per_s": rate, "vs_twin": rate / twin,
                       "times_ms": [1e3 * t for t in ts]}
                rows.append(row)
                print(f"{n}q d{WIDTHS[n]} T={T:5d} {name:28s} {row['step_ms']:9.2f} ms  {rate:10.0f} tok/s  "
                      f"x{row['vs_twin']:.2f} of twin", flush=True)
    label = args.label or args.device
    args.out.mkdir(parents=True, exist_ok=True)
    out = args.out / f"width-models-{label}.json"
    out.write_text(json.dumps({"command": "python benchmarks/width_models.py " + " ".join(sys.argv[1:] if argv is None else argv),
                               "machine": machine_description(args.device), "python": platform.python_version(),
                               "method": "median of --rounds interleaved training steps (forward, backward, AdamW) "
                                         "after 2 warm-up steps each; tokens = batch x seq_len per step",
                               "rows": rows}, indent=1))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
