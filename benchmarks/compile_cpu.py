"""Eager against ``torch.compile`` (inductor) on the CPU: a training step (forward + backward + AdamW), an
inference forward and a decode step (one new token with the KV cache), for a QELM on ``qelm.fused`` and its
classical twin, measured in the same run. Writes JSON with the machine and the command; prints each compiled
time as a ratio to its eager peer.

    python benchmarks/compile_cpu.py --seq-lens 32,128 --batch 8 --repeats 20 --out benchmarks/results/compile-cpu.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time

import torch

from qelm import QELM, ClassicalLM, QELMConfig
from qelm.model import KVCache


def _timed(fn, repeats: int, warmup: int) -> dict:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return {"median_s": statistics.median(times), "min_s": min(times), "times_s": times}


def _workloads(model, B: int, T: int, compiled: bool):
    """``{mode: (step, first)}``: the timed iteration of each mode (``first`` runs once untimed, where the
    compiler does its work, and is timed apart as compile_s)."""
    torch.manual_seed(0)
    V = model.config.vocab_size
    idx, targets = torch.randint(0, V, (B, T)), torch.randint(0, V, (B, T))
    run = torch.compile(model) if compiled else model
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)

    def train() -> None:
        opt.zero_grad(set_to_none=True)
        _, loss = run(idx, targets)
        loss.backward()
        opt.step()

    def infer() -> None:
        with torch.no_grad():
            run(idx)

    prompt = idx[:, : T - 1]

    def decode() -> None:  # one new token after a prompt of T - 1 tokens read into the cache (untimed part)
        with torch.no_grad():
            cache = KVCache(len(model.blocks))
            model(prompt, cache=cache)
            t = time.perf_counter()
            run(idx[:, T - 1:], cache=cache)
            decode.last = time.perf_counter() - t

    return {"training": train, "inference": infer, "decode": decode}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seq-lens", default="32,128")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--repeats", type=int, default=20)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--modes", default="training,inference,decode")
    p.add_argument("--out", default=None)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    rows = []
    for T in [int(t) for t in args.seq_lens.split(",")]:
        cfg = QELMConfig(vocab_size=64, d_model=16, n_heads=2, d_hidden=32, n_layers=1, context_len=T, n_qubits=4,
                         circuit_layers=2, batch_hint=args.batch)
        for name, cls in (("qelm", QELM), ("twin", ClassicalLM)):
            for mode in args.modes.split(","):
                row = {"model": name, "seq_len": T, "batch": args.batch, "mode": mode}
                for compiled in (False, True):
                    torch.manual_seed(0)
                    model = cls(cfg)
                    model.train(mode == "training")
                    fn = _workloads(model, args.batch, T, compiled)[mode]
                    t = time.perf_counter()
                    try:
                        fn()
                    except Exception as e:  # a compile failure is a result: recorded, not fatal
                        row["compiled_error"] = f"{type(e).__name__}: {str(e).splitlines()[0][:300]}"
                        break
                    first = time.perf_counter() - t
                    if mode == "decode":
                        times = []
                        for _ in range(args.warmup):
                            fn()
                        for _ in range(args.repeats):
                            fn()
                            times.append(fn.last)
                        res = {"median_s": statistics.median(times), "min_s": min(times), "times_s": times}
                    else:
                        res = _timed(fn, args.repeats, args.warmup)
                    res["first_call_s"] = first
                    row["compiled" if compiled else "eager"] = res
                    torch._dynamo.reset()
                if "compiled" in row:
                    row["compiled_over_eager"] = row["compiled"]["median_s"] / row["eager"]["median_s"]
                rows.append(row)
                ratio = f"{row['compiled_over_eager']:.2f}x eager" if "compiled" in row else row.get("compiled_error")
                print(f"T={T:4d} {name:4s} {mode:9s} eager {row['eager']['median_s'] * 1e3:8.2f} ms  compiled: {ratio}",
                      flush=True)
    out = {
        "schema": "qelm.compile_cpu/1",
        "command": " ".join(["python", "benchmarks/compile_cpu.py"] + (argv if argv is not None else sys.argv[1:])),
        "method": "median of timed calls after warm-up, eager and torch.compile(model) (inductor, default mode) in "
                  "the same process, one after the other; decode: the one-token call only, after a prompt read "
                  "into a fresh KVCache untimed; first_call_s: the first call, compilation included",
        "machine": {"cpu": platform.processor() or platform.machine(), "cpu_count": os.cpu_count(),
                    "torch_threads": torch.get_num_threads(), "torch": torch.__version__,
                    "python": platform.python_version(), "load_average": os.getloadavg()},
        "rows": rows,
    }
    if args.out:
        with open(args.out, "w") as f:
            json.dump(out, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
