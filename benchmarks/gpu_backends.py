"""Which backend for which circuit size: per-sample cost of qelm's backends from 4 to 24 qubits.

Workload: qelm's "angle" circuit (AngleEmbedding + 2 StronglyEntanglingLayers) at each ``--qubits`` size
(4 to 26 by default),
forward + backward of the sum of the <Z> outputs, gradients with respect to the inputs and the weights,
through ``qelm.backends.get_backend(name).run(circuit, inputs, weights)``. The figure of merit is the
cost per sample at a batch that suits each simulator, so the study shows where (if anywhere) a
state-at-a-time simulator overtakes the batched ones as the state vector grows.

How N (samples per step) is chosen, and why it differs:

* Batched simulators (``qelm.fused``, ``default.qubit``) hold all N states at once, so their cost per
  sample falls as N grows until the device is full. N's ceiling is the largest power of two
  <= ``--max-batch`` whose working set, N x 2**n x 16 bytes x ``--state-copies`` (complex128 states kept
  by autograd), fits in ``--memory-gib``; N climbs to it from 1 by factors of 8. A batch ``qelm.fused``
  refuses with its MemoryError (before allocating) is replaced by the batch the refusal names as fitting.
* Per-sample simulators (``lightning.*``, ``qiskit.aer``) loop over the samples inside the library, so
  their cost is linear in N and a small N is enough: 1, then 8, doubling while a step takes under 0.5 s,
  up to the batched ceiling.

Every step respects ``--max-seconds``. The first step is one sample (it also warms the backend up); over
the cap, the backend is skipped at that size and every larger one. N never grows past the cap's linear
prediction from the last step, and a probe over the cap (slower than linear: on a CPU, caches and memory
bandwidth make the cost per sample rise with N) lowers the ceiling; the row's ``probes`` keep every (N,
seconds of one cold step). Timing: a warm-up step, then the median of ``--repeats`` steps, the device
synchronized before each clock read. ``max_abs_diff``: the forward on the first min(N, 8) samples against
``qelm.fused`` on the same seeded inputs and weights.

Torch tensors live on ``--device`` for the batched backends; the per-sample ones take CPU tensors. A
spec ``name:DEV`` passes ``device=DEV`` (``qiskit.aer:GPU``).

Usage::

    python benchmarks/gpu_backends.py                  # CUDA: qelm.fused, default.qubit, lightning.gpu, qiskit.aer:GPU
    python benchmarks/gpu_backends.py --device cpu --backends qelm.fused,default.qubit,lightning.qubit \
        --qubits 4,8,10,12,14,16,18,20,22 --max-qubits default.qubit=20 --threads 1 --max-seconds 10
    python benchmarks/gpu_backends.py --quick --device cpu --backends qelm.fused,default.qubit   # a smoke test
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import os
import re
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from backends import cpu_model, make_data, qelm_entry, sync, time_it, versions  # noqa: E402

from qelm.backends import BackendUnavailable  # noqa: E402

BATCHED = ("qelm.fused", "default.qubit")
PACKAGES = ("torch", "pennylane", "pennylane_lightning", "pennylane_lightning_gpu", "qiskit", "qiskit-aer",
            "qiskit-aer-gpu")
GROW_UNTIL_S = 0.5  # per-sample simulators: N doubles while a step takes less than this
CHECK_SAMPLES = 8
FIELDS = ("N", "seconds_per_step", "ms_per_sample", "samples_per_second", "max_abs_diff", "reference", "peak_mib",
          "tensors_on", "probes", "skipped", "error")  # every row has them all, None where they do not apply


# --- batch sizes -------------------------------------------------------------------------------------
def pow2_floor(x: float) -> int:
    return 1 << (max(1, int(x)).bit_length() - 1)


def batch_limit(n_qubits: int, max_batch: int, memory_bytes: float, copies: int) -> int:
    """The largest power of two N <= max_batch whose working set N x 2**n x 16 B x copies fits; at least 1."""
    return pow2_floor(min(max_batch, memory_bytes // (2**n_qubits * 16 * copies)))


class Refused(Exception):
    """A backend refused a batch before allocating it, naming the largest batch that fits (qelm.fused)."""

    def __init__(self, fits: int) -> None:
        super().__init__(f"at most {fits} states fit")
        self.fits = fits


def refused_batch(error: MemoryError) -> int | None:
    """The batch a MemoryError says fits ("at most N states fit"), or None when it names none."""
    found = re.search(r"at most (\d+) states fit", str(error))
    return int(found.group(1)) if found else None


def fit_batch(one_step, n_max: int, batched: bool, cap_s: float) -> tuple[int, float, list]:
    """(N, seconds of one step at N, every (N, seconds) probed). Starts with one sample, then grows N by 8
    (batched; per-sample: to 8, then by 2 while a step is under ``GROW_UNTIL_S``), never past the largest
    N whose linear prediction fits the cap. A probe over the cap (slower than linear: caches, memory)
    lowers the ceiling and N is tried again below it; a probe out of memory (``one_step`` returns inf)
    halves it, and a probe the backend refuses (``one_step`` raises :class:`Refused`) takes the batch the
    refusal names as the ceiling. One sample over the cap is returned (the caller skips)."""
    try:
        # twice, keeping the faster: the first step of a process pays one-off costs (a CUDA context, kernel
        # loading) that made a 4-qubit row stop at N = 1 (3.4 s for its first sample on an H200)
        n, t = 1, min(one_step(1), one_step(1))
    except Refused:  # not even one sample fits
        return 1, math.inf, [(1, math.inf)]
    probes = [(1, t)]
    while n < n_max and t <= cap_s and (batched or t < GROW_UNTIL_S):
        nxt = min(n_max, n * (8 if batched or n == 1 else 2), pow2_floor(n * cap_s / max(t, 1e-9)))
        if nxt <= n:
            break
        try:
            t_nxt = one_step(nxt)
        except Refused as e:  # the backend's own memory check: it names the batch that fits
            probes.append((nxt, None))
            n_max = max(n, min(nxt - 1, e.fits))
            continue
        probes.append((nxt, t_nxt))
        if math.isinf(t_nxt):  # out of memory: the working set, not time, bounds N
            n_max = nxt // 2
        elif t_nxt > cap_s:
            n_max = min(nxt // 2, pow2_floor(nxt * cap_s / t_nxt))
        else:
            n, t = nxt, t_nxt
    return n, t, probes


# --- one (backend, n) measurement --------------------------------------------------------------------
def parse_spec(spec: str) -> tuple[str, dict]:
    name, _, dev = spec.partition(":")
    return name, ({"device": dev} if dev else {})


def measure(spec: str, n: int, data, reference, args) -> dict:
    """The row of ``spec`` at ``n`` qubits: N, timing, max|diff| against the reference, peak memory."""
    name, options = parse_spec(spec)
    batched = name in BATCHED
    on = args.device if batched else "cpu"
    circuit, x, w = data  # x: (rows, n) on the CPU, the same seeded rows for every backend

    def build(size: int):  # a fresh backend per build: recorded CUDA graphs of other sizes are dropped
        return qelm_entry(name, on, **options)(circuit, x[:size].to(on), w.to(on))

    def one_step(size: int) -> float:
        """Seconds of one cold step at ``size`` samples; inf when it runs out of device memory; raises
        :class:`Refused` when the backend refuses the batch naming the one that fits."""
        try:
            _, step = build(size)
            t0 = time.perf_counter()
            step()
            sync(args.device)
            return time.perf_counter() - t0
        except torch.OutOfMemoryError:
            pass
        except MemoryError as e:
            fits = refused_batch(e)
            if fits is None:
                raise
            raise Refused(fits) from None
        gc.collect()  # outside the handler: the traceback no longer holds the step's tensors
        torch.cuda.empty_cache()
        return math.inf

    size, t, probes = fit_batch(one_step, x.shape[0], batched, args.max_seconds)
    row = {"N": size, "tensors_on": on, "probes": [{"N": p, "seconds": s, **({"refused": True} if s is None else {})}
                                                  for p, s in probes]}
    if math.isinf(t):
        return {**row, "skipped": "one sample does not fit in the device's memory"}
    if t > args.max_seconds:
        return {**row, "skipped": f"one sample takes {t:.3g} s > --max-seconds ({args.max_seconds:g})"}
    check, _ = build(min(size, CHECK_SAMPLES))
    with torch.no_grad():
        out = check().to("cpu", torch.float64)
    _, step = build(size)
    cuda = on == "cuda"
    if cuda:
        gc.collect()  # the probes' backends (and their recorded graphs) go before the peak is reset
        torch.cuda.reset_peak_memory_stats()
    seconds = time_it(step, args.repeats, 1, args.device)
    row.update(seconds_per_step=seconds, ms_per_sample=seconds / size * 1e3, samples_per_second=size / seconds,
               peak_mib=torch.cuda.max_memory_allocated() / 2**20 if cuda else None)
    if reference is not None:
        row["max_abs_diff"] = float((out - reference[: out.shape[0]]).abs().max())
    return row


def reference_output(data, device: str) -> tuple[str, torch.Tensor]:
    """The forward on the first samples, on the torch device, as CPU float64: qelm.fused's, or default.qubit's
    where qelm.fused refuses the size (its weight unitaries would not fit in memory)."""
    circuit, x, w = data
    for name in BATCHED:
        try:
            forward, _ = qelm_entry(name, device)(circuit, x[:CHECK_SAMPLES].to(device), w.to(device))
            with torch.no_grad():
                return name, forward().to("cpu", torch.float64)
        except MemoryError:
            continue
    raise MemoryError(f"neither {' nor '.join(BATCHED)} fits {circuit.n_wires} qubits here")


def run(args, save=lambda rows: None) -> list[dict]:
    """Every (backend, n) row; ``save(rows)`` after each one, so a run cut short keeps what it measured."""
    rows, dropped = [], {}  # dropped: spec -> why it is not run at this or larger n
    for n in args.qubits:
        rows_n = batch_limit(n, args.max_batch, args.memory_gib * 2**30, args.state_copies)
        data = make_data(rows_n, "cpu", args.seed, n_qubits=n)
        try:
            reference_name, reference = reference_output(data, args.device)
        except Exception as e:
            reference_name, reference = None, None
            print(f"n={n}: no reference ({type(e).__name__}: {e})", flush=True)
        for spec in args.backends:
            row = {"backend": spec, "n_qubits": n, "batched": parse_spec(spec)[0] in BATCHED, **dict.fromkeys(FIELDS)}
            if spec in dropped:
                row["skipped"] = dropped[spec]
            elif n > args.max_qubits.get(spec, n):
                row["skipped"] = f"--max-qubits {spec}={args.max_qubits[spec]}"
            else:
                try:
                    row.update(measure(spec, n, data, reference, args), reference=reference_name)
                    if row["skipped"]:
                        dropped[spec] = f"{row['skipped']} at n={n}"
                except (BackendUnavailable, ImportError) as e:
                    row["skipped"] = dropped[spec] = f"unavailable: {e}"
                except Exception as e:  # recorded, and the study goes on
                    row["error"] = f"{type(e).__name__}: {e}".splitlines()[0]
            rows.append(row)
            print(f"n={n:2d} {spec:16s} " + (f"N={row['N']:<6d} {row['ms_per_sample']:.4g} ms/sample"
                  if row["ms_per_sample"] is not None else row["skipped"] or row["error"]), flush=True)
            save(rows)
            gc.collect()
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
    return rows


# --- summary -----------------------------------------------------------------------------------------
def summarize(rows: list[dict], qubits: list[int]) -> dict:
    """Fastest backend per n, and the smallest n at which a per-sample backend beats every batched one
    (a batched backend skipped as too slow counts as beaten; one that failed or is missing does not)."""
    fastest, crossover = {}, None
    for n in qubits:
        timed = [r for r in rows if r["n_qubits"] == n and r["ms_per_sample"] is not None]
        if timed:
            best = min(timed, key=lambda r: r["ms_per_sample"])
            fastest[n] = {"backend": best["backend"], "ms_per_sample": best["ms_per_sample"]}
        batched = [r["ms_per_sample"] if r["ms_per_sample"] is not None else math.inf for r in rows
                   if r["n_qubits"] == n and r["batched"] and (r["ms_per_sample"] is not None or
                                                             (r["skipped"] or "").startswith("one sample"))]
        single = [r for r in timed if not r["batched"]]
        if crossover is None and batched and single and min(r["ms_per_sample"] for r in single) < min(batched):
            winner = min(single, key=lambda r: r["ms_per_sample"])
            crossover = {"n_qubits": n, "backend": winner["backend"], "ms_per_sample": winner["ms_per_sample"]}
    return {"fastest": fastest, "crossover": crossover}


def ratio(x: float) -> str:
    return f"{x:.1f}x" if x < 100 else f"{x:,.0f}x"


def print_table(rows: list[dict], args, summary: dict) -> None:
    width = max(16, *(len(s) + 2 for s in args.backends))
    print(f"\nms per sample (x the fastest at that n), forward + backward, device {args.device}")
    print(f"{'n':>3s} " + "".join(f"{s:>{width}s}" for s in args.backends))
    for n in args.qubits:
        best = summary["fastest"].get(n, {}).get("ms_per_sample")
        cells = []
        for r in (r for r in rows if r["n_qubits"] == n):
            ms = r["ms_per_sample"]
            cells.append(f"{ms:.3g} ({ratio(ms / best)})" if ms is not None else "skipped" if r["skipped"] else "error")
        print(f"{n:3d} " + "".join(f"{c:>{width}s}" for c in cells))
    print()
    for n in args.qubits:
        f = summary["fastest"].get(n)
        print(f"n={n}: fastest " + (f"{f['backend']} ({f['ms_per_sample']:.3g} ms/sample)" if f else "none measured"))
    diffs = [r["max_abs_diff"] for r in rows if r["max_abs_diff"] is not None]
    if diffs:
        print(f"max|diff| of the forward against the reference (qelm.fused; default.qubit where it refuses the "
              f"size), over every measured row: {max(diffs):.1e}")
    for backend, reason in dict.fromkeys((r["backend"], r["skipped"] or r["error"]) for r in rows
                                         if r["ms_per_sample"] is None):
        print(f"not measured, {backend}: {reason}")
    c = summary["crossover"]
    print(f"crossover: at n={c['n_qubits']} {c['backend']} ({c['ms_per_sample']:.3g} ms/sample) beats every batched "
          "backend" if c else "crossover: no per-sample backend beat every batched one in the measured range "
          f"(n = {', '.join(map(str, args.qubits))})")


def plot(rows: list[dict], args, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for spec in args.backends:
        pts = [(r["n_qubits"], r["ms_per_sample"]) for r in rows if r["backend"] == spec and r["ms_per_sample"]]
        if pts:
            ax.plot(*zip(*pts), marker="o", label=spec)
    ax.set_yscale("log")
    ax.set(xlabel="qubits", ylabel="ms per sample (forward + backward)", xticks=args.qubits,
           title=f"angle circuit, 2 layers, {args.label}")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def parse_args(argv=None):
    ints = lambda v: [int(x) for x in v.split(",")]  # noqa: E731
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--qubits", type=ints, default=[4, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26],
                   help="circuit sizes (default 4,8,10,12,14,16,18,20,22,24,26; a size whose one sample does not "
                        "fit a backend is skipped for it)")
    p.add_argument("--max-qubits", type=lambda v: {k: int(n) for k, _, n in (x.partition("=") for x in v.split(","))},
                   default={}, help="SPEC=N,...: run SPEC only up to N qubits (e.g. default.qubit=20 on a CPU, whose "
                                    "backprop keeps a state per gate)")
    p.add_argument("--backends", type=lambda v: v.split(","),
                   default=["qelm.fused", "default.qubit", "lightning.gpu", "qiskit.aer:GPU"],
                   help="comma-separated specs, name or name:DEV (default qelm.fused,default.qubit,lightning.gpu,"
                        "qiskit.aer:GPU)")
    p.add_argument("--device", choices=("cuda", "cpu"), default="cuda", help="torch tensors' device (default cuda)")
    p.add_argument("--max-batch", type=int, default=65536, help="largest N (default 65536)")
    p.add_argument("--memory-gib", type=float, default=None,
                   help="memory for the batched working set (default: 80%% of the GPU's, 4 GiB on CPU)")
    p.add_argument("--state-copies", type=int, default=24, help="state vectors per sample in the autograd "
                   "working set (default 24)")
    p.add_argument("--max-seconds", type=float, default=20.0, help="time cap of one step (default 20)")
    p.add_argument("--repeats", type=int, default=3, help="timed steps after one warm-up; the median (default 3)")
    p.add_argument("--seed", type=int, default=0, help="seed of the inputs and weights (default 0)")
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's choice)")
    p.add_argument("--label", default=None, help="file label (default: the --device)")
    p.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "results",
                   help="output folder (default benchmarks/results)")
    p.add_argument("--quick", action="store_true", help="qubits 4,8 and one repeat: a smoke test")
    args = p.parse_args(argv)
    if args.quick:
        args.qubits, args.repeats = [4, 8], 1
    if args.device == "cuda" and not torch.cuda.is_available():
        p.error("--device cuda: torch sees no CUDA device here; use --device cpu")
    if args.memory_gib is None:
        cuda = args.device == "cuda"
        args.memory_gib = 0.8 * torch.cuda.get_device_properties(0).total_memory / 2**30 if cuda else 4.0
    args.label = args.label or args.device
    return args


def main(argv=None) -> dict:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    meta = {"machine": {"gpu": torch.cuda.get_device_name(0) if args.device == "cuda" else None,
                        "cpu": cpu_model(), "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(),
                        "load_average_start": os.getloadavg()},
            "versions": versions(PACKAGES),
            "command": " ".join(sys.argv if argv is None else ["benchmarks/gpu_backends.py", *argv]),
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "workload": "angle circuit (AngleEmbedding RY + 2 StronglyEntanglingLayers), forward + backward of "
                        "sum(<Z>) w.r.t. inputs and weights; max_abs_diff: forward on the first "
                        f"{CHECK_SAMPLES} samples against qelm.fused (default.qubit where qelm.fused refuses the "
                        "size) on the torch device",
            "settings": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items() if k != "out"}}
    m = meta["machine"]
    print(f"GPU {m['gpu']}, CPU {m['cpu']} ({m['cpu_count']} CPUs, torch threads {m['torch_threads']})\n"
          + ", ".join(f"{k} {v}" for k, v in meta["versions"].items()), flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    stem = f"gpu-backends-{args.label}"
    path = args.out / f"{stem}.json"
    rows = run(args, save=lambda rows: path.write_text(json.dumps({**meta, "rows": rows, "partial": True}, indent=2)))
    meta["machine"]["load_average_end"] = os.getloadavg()
    summary = summarize(rows, args.qubits)
    print_table(rows, args, summary)
    result = {**meta, "rows": rows, "summary": summary}
    path.write_text(json.dumps(result, indent=2) + "\n")
    plot(rows, args, args.out / f"{stem}.png")
    print(f"wrote {args.out / stem}.json and {stem}.png")
    return result


if __name__ == "__main__":
    main()
