"""The cost table of qelm.fused's block planner, measured: what each primitive of a block plan costs per
amplitude of one sample on this device (``qelm.backends.fused_blocks.COSTS``).

The planner picks the widest block ``k`` by predicting each candidate plan's forward + adjoint backward
from these numbers. Each primitive runs on a state batch of ``--qubits`` qubits and ``--samples`` samples
(a chunk of the size the executor runs on this device), timed as the minimum of ``--repeats`` runs:

* ``apply[k]``: a k-wire block on the last axes, one real GEMM on rows of ``2K`` numbers;
* ``outer[k]``: its gradient contraction ``rows_in^T rows_lam``;
* ``gather``: a permutation block of 4 wires in the middle of the axes;
* ``rotate`` / ``rotation_grad``: an RX data rotation on a middle wire, and its angle's gradient;
* ``reorder``: moving 4 wires from the middle of the axes to the end.

Usage::

    python benchmarks/block_costs.py                      # CPU, one thread
    python benchmarks/block_costs.py --device cuda        # then copy the printed table into COSTS["cuda"]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from qelm.backends import fused_adjoint as fa  # noqa: E402
from qelm.backends.fused_blocks import MAX_BLOCK_WIRES, Rotation  # noqa: E402
from qelm.backends.fused_plan import Op  # noqa: E402
from qelm.backends.fused_unitaries import real_form  # noqa: E402


def timed(fn, repeats: int, device: str) -> float:
    fn()
    best = float("inf")
    for _ in range(repeats):
        if device == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        fn()
        if device == "cuda":
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - t0)
    return best


def measure(n: int, samples: int, device: str, repeats: int, dtype=torch.complex128) -> dict:
    g = torch.Generator(device=device).manual_seed(0)
    x = torch.randn((1, samples, 2**n), dtype=dtype, device=device, generator=g)
    lam = torch.randn_like(x)
    amps = samples * 2**n
    per_amp = lambda fn: timed(fn, repeats, device) / amps * 1e9  # noqa: E731
    table = {"apply": {}, "outer": {}}
    for k in range(1, MAX_BLOCK_WIRES + 1):
        u = torch.linalg.qr(torch.randn((2**k, 2**k), dtype=dtype, device=device, generator=g))[0]
        a = real_form(u)
        table["apply"][k] = round(per_amp(lambda: fa._apply_dense(x, a, k)), 3)
        table["outer"][k] = round(per_amp(lambda: fa._outer(lam, x, k)), 3)
    perm = torch.randperm(16, device=device)
    table["gather"] = round(per_amp(lambda: fa._apply_gather(x, perm, None, n // 2, 4, n)), 3)
    step = Rotation(Op("RX", (n // 2,), "data", 0), (n // 2,), (1, 0), (-1j, -1j))
    c, s = torch.rand((1, samples), device=device, dtype=x.real.dtype), torch.rand((1, samples), device=device, dtype=x.real.dtype)
    table["rotate"] = round(per_amp(lambda: fa._rotate(x, step, c, s, n)), 3)
    table["rotation_grad"] = round(per_amp(lambda: fa._rotation_grad(lam, x, step, n)), 3)
    moved = tuple([i for i in range(n) if not n // 2 <= i < n // 2 + 4] + list(range(n // 2, n // 2 + 4)))
    table["reorder"] = round(per_amp(lambda: fa._reorder(x, moved, n)), 3)
    return table


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    p.add_argument("--qubits", type=int, default=16, help="qubits of the state batch (default 16)")
    p.add_argument("--samples", type=int, default=None,
                   help="samples in the batch (default: one executor chunk on this device)")
    p.add_argument("--repeats", type=int, default=7, help="timed runs, the minimum is kept (default 7)")
    p.add_argument("--threads", type=int, default=1, help="torch.set_num_threads on the CPU (default 1)")
    args = p.parse_args(argv)
    if args.device == "cpu":
        torch.set_num_threads(args.threads)
    samples = args.samples or fa.chunk_size(args.qubits, 1, 1 << 30, torch.complex128, torch.device(args.device))
    table = measure(args.qubits, samples, args.device, args.repeats)
    print(f"ns per amplitude of one sample, {args.qubits} qubits x {samples} samples on {args.device}, "
          f"complex128, minimum of {args.repeats}:")
    print(json.dumps(table, indent=1))
    return table


if __name__ == "__main__":
    main()
