"""A CPU training step (forward + backward + AdamW) of the QELM on ``qelm.fused`` and of its twin, through the
Python API, measured interleaved in one process: every variant runs a few steps in turn, round after round,
so that a shared, loaded machine slows them alike. Writes JSON with the machine, the load and the command.

Three studies:

* ``--study features``: one torch thread (as the CLI runs); the QELM with its narrow circuits in the feature
  form (``qelm.backends.fused_features``, the default) and stage by stage (``backend.features = False``),
  and the twin.
* ``--study precision``: one torch thread; the QELM's circuits in float64 arithmetic (``dtype="complex128"``,
  the default) and in float32 (``dtype="complex64"``), and the twin.
* ``--study threads``: torch's thread count 1 against 2 (torch's default on 2 cores), the second with the
  library's default ``model.cpu_threads = 1`` and with ``None`` (torch's setting everywhere). ``--load``
  starts a busy process (``while 1: pass``) for the run's length: the loaded case.

    python benchmarks/cpu_step.py --study features --out benchmarks/results/cpu-step-features.json
    python benchmarks/cpu_step.py --study threads --load --out benchmarks/results/cpu-step-threads-loaded.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time

import torch

from qelm import QELM, ClassicalLM, QELMConfig
from qelm.bench.machine import load_average, machine_description


def _step(cls, T: int, batch: int, features: bool = True, cpu_threads: int | None = 1, dtype: str | None = None):
    torch.manual_seed(0)
    model = cls(QELMConfig(context_len=max(T, 32)))
    if dtype is not None:
        model.set_backend("qelm.fused", dtype=dtype)
    model.cpu_threads = cpu_threads
    if model.backend is not None:
        model.backend.features = features
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    idx = torch.randint(0, 64, (batch, T))

    def step():
        _, loss = model(idx, targets=idx)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return step


def _variants(study: str, T: int, batch: int) -> dict:
    """name -> (torch threads, step)."""
    if study == "features":
        return {"qelm features": (1, _step(QELM, T, batch)),
                "qelm staged": (1, _step(QELM, T, batch, features=False)),
                "twin": (1, _step(ClassicalLM, T, batch))}
    if study == "precision":
        return {"qelm complex128": (1, _step(QELM, T, batch)),
                "qelm complex64": (1, _step(QELM, T, batch, dtype="complex64")),
                "twin": (1, _step(ClassicalLM, T, batch))}
    out = {}
    for cls, name in ((QELM, "qelm"), (ClassicalLM, "twin")):
        out[f"{name} torch 1"] = (1, _step(cls, T, batch))
        out[f"{name} torch 2, cpu_threads 1"] = (2, _step(cls, T, batch))
        out[f"{name} torch 2, cpu_threads None"] = (2, _step(cls, T, batch, cpu_threads=None))
    return out


def measure(study: str, seq_lens: list[int], batch: int, rounds: int, steps: int) -> dict:
    rows = []
    held = torch.get_num_threads()
    try:
        for T in seq_lens:
            variants = _variants(study, T, batch)
            times: dict[str, list[float]] = {name: [] for name in variants}
            for threads, step in variants.values():  # warm-up: plans, caches, allocator
                torch.set_num_threads(threads)
                for _ in range(3):
                    step()
            for _ in range(rounds):
                for name, (threads, step) in variants.items():
                    torch.set_num_threads(threads)
                    t = time.perf_counter()
                    for _ in range(steps):
                        step()
                    times[name].append((time.perf_counter() - t) / steps)
            for name, ts in times.items():
                median = statistics.median(ts)
                rows.append({"variant": name, "seq_len": T, "batch": batch, "median_s": median,
                             "tokens_per_s": batch * T / median, "round_means_s": ts})
    finally:
        torch.set_num_threads(held)
    return {"rows": rows}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="benchmarks/cpu_step.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("--study", choices=("features", "threads", "precision"), default="features")
    parser.add_argument("--seq-lens", default="32,128")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=7, help="rounds of every variant in turn (median over them)")
    parser.add_argument("--steps", type=int, default=5, help="steps per variant and round")
    parser.add_argument("--load", action="store_true", help="run a busy process (while 1: pass) meanwhile")
    parser.add_argument("--out", help="JSON file to write (default: print only)")
    args = parser.parse_args(argv)
    busy = subprocess.Popen([sys.executable, "-c", "while 1: pass"]) if args.load else None
    try:
        start = load_average()
        result = measure(args.study, [int(t) for t in args.seq_lens.split(",")], args.batch, args.rounds, args.steps)
        end = load_average()
    finally:
        if busy is not None:
            busy.kill()
            busy.wait()
    result = {"schema": "qelm.cpu-step/1", "study": args.study, "busy_process": args.load,
              "method": "median over rounds of the mean step time of each variant; variants interleaved in one "
                        "process, round after round; tokens/s = batch * T / median",
              "load_average_start": start, "load_average_end": end, "machine": machine_description("cpu"),
              "command": "python benchmarks/cpu_step.py " + " ".join(sys.argv[1:] if argv is None else argv), **result}
    for row in result["rows"]:
        print(f"T={row['seq_len']:4d} {row['variant']:32s} {row['median_s'] * 1e3:8.2f} ms {row['tokens_per_s']:9.0f} tok/s")
    print(f"load average {start} -> {end}")
    if args.out:
        with open(args.out, "w") as f:
            json.dump(result, f, indent=1)
        print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
