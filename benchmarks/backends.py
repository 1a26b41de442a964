"""qelm's backends against the usual ways of putting a circuit in a torch model.

Workload: 4 qubits, ``qml.AngleEmbedding`` (RY) + 2 ``StronglyEntanglingLayers`` (qelm's "angle" circuit,
n_layers=2), a batch of 64 samples, forward + backward of the sum of the <Z> outputs, gradients with
respect to the inputs and the weights. Each entry is timed as the median of ``--repeats`` runs after a
warm-up run, all in one process.

Entries:
  qelm qelm.fused (complex128 / complex64)            qelm's own simulator: the weight block fused into one unitary
  qelm default.qubit / lightning.qubit / qiskit.aer   qelm.backends.get_backend(name).run(circuit, inputs, weights)
  qelm lightning.qubit via QNode                      the same device through a PennyLane QNode (adjoint):
                                                      what qelm's direct use of Lightning's kernels saves
  TorchLayer default.qubit / lightning.qubit          qml.qnn.TorchLayer, PennyLane's own torch layer
  TorchLayer qiskit.aer (pennylane-qiskit)            the same layer on pennylane-qiskit's Aer device, called
                                                      per sample (its parameter-shift gradient cannot take
                                                      broadcast inputs that require grad)
  qiskit-ml TorchConnector + EstimatorQNN             qiskit-machine-learning with qiskit-aer EstimatorV2
  pyqtorch (autograd)                                 pyqtorch, a torch-native state-vector simulator: the same
                                                      gates, a batch of states [2]*n + [N], torch autograd
  tensorcircuit-ng (pytorch, vmap)                    tensorcircuit-ng on its pytorch backend, vmapped over the batch

The torch-native peers (pyqtorch, tensorcircuit-ng) are the ``bench`` extra: ``pip install "qelm-lab[bench]"``.
``--batches 64,4096,65536`` runs the table at each batch size; entries too slow for a size (one simulator
job per sample) run only at the sizes they finish in (``max_batch`` in ``entries``).

The last two are slow (one simulator job per sample or per sample and observable), so they run a smaller
batch (``--slow-batch``, default 4) and their time is scaled per sample to the batch of 64; the table says
so. Every entry's forward output is checked against qelm default.qubit on the same inputs and weights.

Usage::

    python benchmarks/backends.py                 # the table, JSON to benchmarks/results/backends-cpu.json
    python benchmarks/backends.py --quick         # fewer repeats, for a smoke test
    python benchmarks/backends.py --batches 64,4096,65536 --label cpu-sizes   # the fused simulator's targets
    python benchmarks/backends.py --cuda-batch    # default.qubit per-sample cost at batch 65536, CUDA vs CPU
                                                  # (eager, and with cuda_graph=True)
    python benchmarks/backends.py --cuda-fused    # qelm.fused vs default.qubit on CUDA at N = 4,096 and 1,048,576
"""

from __future__ import annotations

import argparse
import importlib
import importlib.metadata
import json
import math
import os
import platform
import statistics
import sys
import time
import traceback
import warnings
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import pennylane as qml  # noqa: E402

from qelm.backends import BackendUnavailable, get_backend  # noqa: E402
from qelm.circuits import build_circuit  # noqa: E402

N_QUBITS, N_LAYERS = 4, 2
PACKAGES = ("torch", "numpy", "pennylane", "pennylane_lightning", "qiskit", "qiskit-aer",
            "pennylane-qiskit", "qiskit-machine-learning", "pyqtorch", "tensorcircuit-ng")


# --- environment -------------------------------------------------------------------------------------
def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _version(pkg: str) -> str:
    try:
        return importlib.metadata.version(pkg)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def versions(packages: tuple[str, ...] = PACKAGES) -> dict[str, str]:
    return {"python": platform.python_version(), **{pkg: _version(pkg) for pkg in packages}}


def sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def time_it(step, repeats: int, warmup: int, device: str = "cpu") -> float:
    """Median seconds of ``step()`` over ``repeats`` runs after ``warmup`` runs."""
    for _ in range(warmup):
        step()
    sync(device)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        step()
        sync(device)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


# --- the workload ------------------------------------------------------------------------------------
def make_data(batch: int, device: str = "cpu", seed: int = 0, n_qubits: int = N_QUBITS):
    circuit = build_circuit("angle", n_qubits, N_LAYERS)
    g = torch.Generator().manual_seed(seed)
    x = (torch.rand(batch, circuit.n_inputs, generator=g, dtype=torch.float64) * math.pi).to(device)
    w = (torch.rand(circuit.weight_shape, generator=g, dtype=torch.float64) * 2 * math.pi).to(device)
    return circuit, x, w


def qelm_entry(name: str, device: str, /, qnode: bool = False, split_rot: bool = True, **options):
    # device is positional-only: ``options`` may hold a backend's own ``device`` (qiskit.aer's "GPU")
    backend = get_backend(name, **options)
    if qnode:  # lightning.qubit through a PennyLane QNode instead of its kernels, to show what the kernels save
        backend.uses_kernels = False
    if not split_rot:  # default.qubit on CUDA with Rot applied through its matrix, to show what RZ RY RZ saves
        backend.split_rot = False

    def build(circuit, x, w):
        xs, ws = x.clone().requires_grad_(), w.clone().requires_grad_()

        def forward():
            return backend.run(circuit, xs, ws)  # what the layers call: inputs and weights apart

        def step():
            xs.grad = ws.grad = None
            forward().sum().backward()

        return forward, step

    return build


def _sel_gates(n: int, layers: int):
    """StronglyEntanglingLayers as (gate, qubits, weight index or None): Rot = RZ RY RZ, then a CNOT ring."""
    gates = []
    for layer in range(layers):
        for q in range(n):
            gates += [("RZ", (q,), (layer, q, 0)), ("RY", (q,), (layer, q, 1)), ("RZ", (q,), (layer, q, 2))]
        r = (layer % (n - 1)) + 1
        gates += [("CNOT", (q, (q + r) % n), None) for q in range(n)]
    return gates


def pyqtorch_entry():
    import pyqtorch as pyq

    def build(circuit, x, w):
        ops = [pyq.RY(q, f"x{q}") for q in range(N_QUBITS)]
        for name, qubits, index in _sel_gates(N_QUBITS, N_LAYERS):
            ops.append(pyq.CNOT(*qubits) if name == "CNOT" else getattr(pyq, name)(qubits[0], "w%d_%d_%d" % index))
        qc = pyq.QuantumCircuit(N_QUBITS, ops).to(x.device)
        xs, ws = x.clone().requires_grad_(), w.clone().requires_grad_()
        batch = x.shape[0]

        def forward():
            values = {f"x{q}": xs[:, q] for q in range(N_QUBITS)}
            values.update({"w%d_%d_%d" % idx: ws[idx].reshape(1) for idx in
                           ((layer, q, k) for layer in range(N_LAYERS) for q in range(N_QUBITS) for k in range(3))})
            state = pyq.run(qc, pyq.zero_state(N_QUBITS, batch, device=x.device), values)  # [2]*n + [N]
            probs = state.real.square() + state.imag.square()
            return torch.stack([(probs.select(q, 0) - probs.select(q, 1)).reshape(-1, batch).sum(0)
                                for q in range(N_QUBITS)], dim=-1)  # (N, n) <Z_q>, qubit 0 the first axis

        def step():
            xs.grad = ws.grad = None
            forward().sum().backward()

        return forward, step

    return build


def tensorcircuit_entry():
    import tensorcircuit as tc

    tc.set_backend("pytorch")
    tc.set_dtype("complex128")

    def build(circuit, x, w):
        def one(xi, wi):  # one sample: the same gates, <Z_q> of each qubit
            c = tc.Circuit(N_QUBITS)
            for q in range(N_QUBITS):
                c.ry(q, theta=xi[q])
            for name, qubits, index in _sel_gates(N_QUBITS, N_LAYERS):
                if name == "CNOT":
                    c.cnot(*qubits)
                else:
                    getattr(c, name.lower())(qubits[0], theta=wi[index])
            return torch.stack([c.expectation_ps(z=[q]).real for q in range(N_QUBITS)])

        batched = tc.backend.vmap(one, vectorized_argnums=0)
        xs, ws = x.clone().requires_grad_(), w.clone().requires_grad_()

        def forward():
            return batched(xs, ws)

        def step():
            xs.grad = ws.grad = None
            forward().sum().backward()

        return forward, step

    return build


def torchlayer_entry(device_name: str, per_sample: bool = False, **device_kwargs):
    """``per_sample``: call the layer once per sample (pennylane-qiskit's device differentiates with the
    parameter-shift transform, which cannot differentiate a broadcast tape w.r.t. its broadcast inputs)."""

    def build(circuit, x, w):
        dev = qml.device(device_name, wires=N_QUBITS, **device_kwargs)

        @qml.qnode(dev, interface="torch")
        def node(inputs, weights):
            qml.AngleEmbedding(inputs, wires=range(N_QUBITS), rotation="Y")
            qml.StronglyEntanglingLayers(weights, wires=range(N_QUBITS))
            return [qml.expval(qml.PauliZ(i)) for i in range(N_QUBITS)]

        layer = qml.qnn.TorchLayer(node, {"weights": tuple(circuit.weight_shape)})
        layer = layer.to(dtype=torch.float64, device=x.device)
        with torch.no_grad():
            layer.weights.copy_(w)
        xs = x.clone().requires_grad_()

        def forward():
            if per_sample:
                return torch.stack([layer(xs[i]) for i in range(xs.shape[0])])
            return layer(xs)

        def step():
            xs.grad = None
            layer.zero_grad()
            forward().sum().backward()

        return forward, step

    return build


def qiskit_ml_entry():
    from qiskit.quantum_info import SparsePauliOp
    from qiskit_aer.primitives import EstimatorV2
    from qiskit_machine_learning.connectors import TorchConnector
    from qiskit_machine_learning.neural_networks import EstimatorQNN

    def build(circuit, x, w):
        # the same gate sequence as qelm's angle circuit (qelm's own translation of it to qiskit):
        # parameters theta[0..3] are the inputs, theta[4..] the StronglyEntanglingLayers weights
        qc = get_backend("qiskit.aer").compile(circuit).qc
        params = list(qc.parameters)
        n_in = circuit.n_inputs
        # PennyLane wire i is qiskit qubit N-1-i
        obs = [SparsePauliOp.from_sparse_list([("Z", [N_QUBITS - 1 - i], 1.0)], num_qubits=N_QUBITS)
               for i in range(N_QUBITS)]
        estimator = EstimatorV2()  # aer EstimatorV2, precision 0 = exact expectations
        qnn = EstimatorQNN(circuit=qc, estimator=estimator, observables=obs, input_params=params[:n_in],
                           weight_params=params[n_in:], input_gradients=True, default_precision=0.0)
        model = TorchConnector(qnn, initial_weights=w.detach().cpu().numpy().reshape(-1))
        model = model.to(torch.float64)
        with torch.no_grad():  # TorchConnector stores initial_weights as float32: set them again in float64
            model.weight.copy_(w.detach().cpu().reshape(-1))
        xs = x.detach().cpu().clone().requires_grad_()

        def forward():
            return model(xs)

        def step():
            xs.grad = None
            model.zero_grad()
            forward().sum().backward()

        return forward, step

    return build


#: the largest batch each entry runs at (the table at other sizes says "not run": one job per sample is slow)
MAX_BATCH = {"qelm lightning.qubit": 4096, "qelm lightning.qubit via QNode (adjoint)": 64, "qelm qiskit.aer": 64,
             "TorchLayer lightning.qubit": 64, "TorchLayer qiskit.aer (pennylane-qiskit)": 64,
             "qiskit-ml TorchConnector+EstimatorQNN (aer EstimatorV2)": 64}


def entries(device: str):
    """(label, package needed, builder factory, slow?, runs on CUDA tensors?)"""
    return [
        ("qelm qelm.fused", "torch", lambda: qelm_entry("qelm.fused", device), False, True),
        ("qelm qelm.fused complex64", "torch", lambda: qelm_entry("qelm.fused", device, dtype="complex64"), False, True),
        ("qelm default.qubit", "pennylane", lambda: qelm_entry("default.qubit", device), False, True),
        ("qelm lightning.qubit", "pennylane_lightning", lambda: qelm_entry("lightning.qubit", device), False, False),
        ("qelm lightning.qubit via QNode (adjoint)", "pennylane_lightning",
         lambda: qelm_entry("lightning.qubit", device, qnode=True), False, False),
        ("qelm qiskit.aer", "qiskit_aer", lambda: qelm_entry("qiskit.aer", device), False, False),
        ("TorchLayer default.qubit", "pennylane", lambda: torchlayer_entry("default.qubit"), False, True),
        ("TorchLayer lightning.qubit", "pennylane_lightning", lambda: torchlayer_entry("lightning.qubit"), False, False),
        ("TorchLayer qiskit.aer (pennylane-qiskit)", "pennylane_qiskit",
         lambda: torchlayer_entry("qiskit.aer", per_sample=True, method="statevector"), True, False),
        ("qiskit-ml TorchConnector+EstimatorQNN (aer EstimatorV2)", "qiskit_machine_learning",
         qiskit_ml_entry, True, False),
        ("pyqtorch (autograd)", "pyqtorch", pyqtorch_entry, False, True),
        ("tensorcircuit-ng (pytorch, vmap)", "tensorcircuit", tensorcircuit_entry, False, False),
    ]


INSTALL = {"pyqtorch": "pip install 'qelm-lab[bench]' (pyqtorch)", "tensorcircuit": "pip install 'qelm-lab[bench]' (tensorcircuit-ng)",
           "pennylane_lightning": "pip install pennylane-lightning", "qiskit_aer": "pip install qiskit qiskit-aer",
           "pennylane_qiskit": "pip install pennylane-qiskit",
           "qiskit_machine_learning": "pip install qiskit-machine-learning", "pennylane": "pip install pennylane"}


def run_table(args) -> dict:
    device = args.device
    if device == "cuda" and not torch.cuda.is_available():
        sys.exit("--device cuda: torch sees no CUDA device here")
    repeats, warmup = args.repeats, 1
    slow_batch = min(args.slow_batch, args.batch)
    circuit, x_ref, w_ref = make_data(args.batch)
    reference = get_backend("default.qubit").expval(circuit, circuit.angles(x_ref, w_ref)).detach()

    rows = []
    for label, pkg, factory, slow, cuda_ok in entries(device):
        row = {"name": label, "batch": args.batch}
        if args.batch > MAX_BATCH.get(label, args.batch):
            row.update(device=device if cuda_ok else "cpu", status=f"not run above batch {MAX_BATCH[label]} (too slow)")
            rows.append(row)
            continue
        run_device = device if cuda_ok else "cpu"
        batch = slow_batch if slow else args.batch
        row.update(device=run_device, batch_measured=batch, scaled=batch != args.batch)
        if importlib.util.find_spec(pkg) is None:
            row["status"] = f"not installed ({INSTALL.get(pkg, 'pip install ' + pkg)})"
            rows.append(row)
            print(f"  {label}: {row['status']}", flush=True)
            continue
        if pkg == "pennylane_qiskit":
            row["note"] = ("pennylane-qiskit transpiles and runs every tape of the parameter-shift rule as its own "
                           "Aer job; a profile shows most of the time in rebuilding AerSimulator.target per job")
        try:
            circuit, x, w = make_data(args.batch, run_device)
            x = x[:batch]
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                forward, step = factory()(circuit, x, w)
                out = forward().detach().to("cpu", torch.float64)
                err = float((out - reference[:batch]).abs().max())
                seconds = time_it(step, min(repeats, args.slow_repeats) if slow else repeats, warmup, run_device)
        except BackendUnavailable as e:
            row["status"] = f"unavailable ({e})"
            rows.append(row)
            print(f"  {label}: {row['status']}", flush=True)
            continue
        except Exception as e:  # a peer that breaks is reported, not dropped
            row["status"] = f"failed ({type(e).__name__}: {e})"
            rows.append(row)
            print(f"  {label}: {row['status']}", flush=True)
            if args.verbose:
                traceback.print_exc()
            continue
        per_sample = seconds / batch
        row.update(status="ok", seconds_measured=seconds, us_per_sample=per_sample * 1e6,
                   ms_per_batch=per_sample * args.batch * 1e3, max_abs_diff_vs_default_qubit=err)
        rows.append(row)
        print(f"  {label}: {row['ms_per_batch']:.1f} ms / batch of {args.batch}"
              + (f" (measured at batch {batch}, scaled)" if row["scaled"] else ""), flush=True)

    for field, ref_name in (("peer_over_qelm_aer", "qelm qiskit.aer"), ("over_qelm_default_qubit", "qelm default.qubit"),
                            ("over_qelm_fused", "qelm qelm.fused")):
        ref = next((r for r in rows if r["name"] == ref_name and r["status"] == "ok"), None)
        for r in rows:
            if ref is not None and r["status"] == "ok":
                r[field] = r["ms_per_batch"] / ref["ms_per_batch"]
    return {"rows": rows, "batch": args.batch, "slow_batch": slow_batch, "repeats": repeats,
            "slow_repeats": min(repeats, args.slow_repeats), "warmup": warmup}


def print_table(result: dict) -> None:
    b = result["batch"]
    head = (f"{'entry':58s} {'dev':4s} {'ms/batch ' + str(b):>13s} {'us/sample':>10s} {'peer/qelm.aer':>14s} "
            f"{'x qelm.default':>14s} {'x qelm.fused':>13s} {'max|diff|':>9s}")
    print("\n" + head)
    print("-" * len(head))
    for r in result["rows"]:
        name = r["name"] + (" *" if r.get("scaled") else "")
        if r["status"] != "ok":
            print(f"{name:58s} {r['device']:4s} {r['status']}")
            continue
        ratios = [r.get("peer_over_qelm_aer"), r.get("over_qelm_default_qubit")]
        cells = " ".join(f"{(f'{x:.2f}x' if x is not None else '-'):>14s}" for x in ratios)
        fused = r.get("over_qelm_fused")
        print(f"{name:58s} {r['device']:4s} {r['ms_per_batch']:13.2f} {r['us_per_sample']:10.2f} "
              f"{cells} {(f'{fused:.2f}x' if fused is not None else '-'):>13s} {r['max_abs_diff_vs_default_qubit']:9.1e}")
    for r in result["rows"]:
        if r.get("note"):
            print(f"note, {r['name']}: {r['note']}")
    print(f"\n* measured at batch {result['slow_batch']} and scaled per sample to {b} (one simulator job per "
          "sample or per sample-observable: time grows linearly with the batch)")
    print("peer/qelm.aer: the entry's time over qelm qiskit.aer's (above 1: qelm qiskit.aer is faster); "
          "x qelm.default: over qelm default.qubit's (above 1: slower than default.qubit); "
          "x qelm.fused: over qelm.fused's (above 1: slower than qelm.fused)")
    print(f"forward + backward of sum(<Z>), median of {result['repeats']} ({result['slow_repeats']} for *) after "
          f"{result['warmup']} warm-up, "
          f"{N_QUBITS} qubits, AngleEmbedding + {N_LAYERS} StronglyEntanglingLayers")


def run_cuda_batch(args) -> dict:
    """default.qubit forward+backward per-sample cost at a large batch: CUDA (eager, eager with ``Rot`` applied
    as PennyLane's batched matrix, and ``cuda_graph=True``) against the CPU of the same machine."""
    batch = args.cuda_batch_size
    out = {"mode": "cuda-batch", "batch": batch}
    if not torch.cuda.is_available():
        print("--cuda-batch: torch sees no CUDA device here; skipped")
        out["status"] = "skipped: no CUDA device"
        return out
    out["gpu"] = torch.cuda.get_device_name(0)
    out["timings"] = {}
    repeats = max(1, args.repeats)
    runs = {  # label: (device, backend options, split Rot on CUDA)
        "cuda": ("cuda", {}, True),
        "cuda, cuda_graph=True": ("cuda", {"cuda_graph": True}, True),
        "cuda, Rot as one batched matrix": ("cuda", {}, False),
        "cpu": ("cpu", {}, True),
    }
    for label, (device, options, split) in runs.items():
        circuit, x, w = make_data(batch, device)
        _, step = qelm_entry("default.qubit", device, split_rot=split, **options)(circuit, x, w)
        seconds = time_it(step, repeats, 1, device)
        out["timings"][label] = {"seconds_per_batch": seconds, "us_per_sample": seconds / batch * 1e6}
        print(f"  default.qubit on {label}: {seconds * 1e3:.1f} ms per batch of {batch}, "
              f"{seconds / batch * 1e6:.3f} us per sample", flush=True)
    cpu = out["timings"]["cpu"]["seconds_per_batch"]
    out["cpu_over"] = {label: cpu / t["seconds_per_batch"] for label, t in out["timings"].items() if label != "cpu"}
    out["cpu_over_cuda"] = out["cpu_over"]["cuda"]
    out["status"] = "ok"
    for label, ratio in out["cpu_over"].items():
        print(f"  CPU / {label}: {ratio:.1f}x per sample (median of {repeats} after a warm-up)")
    out["where_the_cuda_time_goes"] = cuda_breakdown(batch)
    return out


def run_cuda_fused(args) -> dict:
    """qelm.fused against default.qubit (and pyqtorch) on CUDA, forward + backward, at each of
    ``--cuda-sizes``; the CPU of the same machine at the smallest size for scale."""
    out = {"mode": "cuda-fused", "sizes": args.cuda_sizes}
    if not torch.cuda.is_available():
        print("--cuda-fused: torch sees no CUDA device here; skipped")
        out["status"] = "skipped: no CUDA device"
        return out
    out["gpu"] = torch.cuda.get_device_name(0)
    runs = {  # label: (builder factory, device)
        "qelm.fused": (lambda: qelm_entry("qelm.fused", "cuda"), "cuda"),
        "qelm.fused complex64": (lambda: qelm_entry("qelm.fused", "cuda", dtype="complex64"), "cuda"),
        "qelm.fused cuda_graph=True": (lambda: qelm_entry("qelm.fused", "cuda", cuda_graph=True), "cuda"),
        "default.qubit": (lambda: qelm_entry("default.qubit", "cuda"), "cuda"),
        "default.qubit cuda_graph=True": (lambda: qelm_entry("default.qubit", "cuda", cuda_graph=True), "cuda"),
        "pyqtorch (autograd)": (pyqtorch_entry, "cuda"),
    }
    rows = []
    for size in args.cuda_sizes:
        reference = None
        for label, (factory, device) in runs.items():
            row = {"name": label, "batch": size, "device": device}
            try:
                circuit, x, w = make_data(size, device)
                forward, step = factory()(circuit, x, w)
                value = forward().detach().to("cpu", torch.float64)
                reference = value if reference is None else reference
                seconds = time_it(step, max(1, args.repeats), 2, device)
                row.update(status="ok", ms=seconds * 1e3, us_per_sample=seconds / size * 1e6,
                           max_abs_diff_vs_fused=float((value - reference).abs().max()))
                print(f"  {label} on {device}, N={size}: {seconds * 1e3:.3f} ms", flush=True)
            except Exception as e:  # a peer that breaks is reported, not dropped
                row["status"] = f"failed ({type(e).__name__}: {e})"
                print(f"  {label} N={size}: {row['status']}", flush=True)
            rows.append(row)
            torch.cuda.empty_cache()
    for size in args.cuda_sizes:
        fused = next((r for r in rows if r["batch"] == size and r["name"] == "qelm.fused" and r["status"] == "ok"), None)
        for r in rows:
            if fused is not None and r["batch"] == size and r["status"] == "ok":
                r["over_qelm_fused"] = r["ms"] / fused["ms"]
    out.update(rows=rows, status="ok", repeats=max(1, args.repeats), warmup=2,
               method="median of --repeats timed forward+backward steps after 2 warm-ups, torch.cuda.synchronize "
                      "before each clock read")
    return out


def cuda_breakdown(batch: int) -> dict:
    """Where the CUDA time of one eager forward + backward goes: ``torch.profiler``'s kernel count and GPU time
    by kernel (the rest of the wall time is the host: PennyLane's Python and kernel launches)."""
    from torch.profiler import ProfilerActivity, profile

    circuit, x, w = make_data(batch, "cuda")
    _, eager = qelm_entry("default.qubit", "cuda")(circuit, x, w)
    eager()
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        eager()
        torch.cuda.synchronize()
    kernels = [e for e in prof.events() if e.device_type == torch.autograd.DeviceType.CUDA]
    total_us = sum(e.device_time for e in kernels)
    by_name: dict[str, list[float]] = {}
    for e in kernels:
        by_name.setdefault(e.name, []).append(e.device_time)
    top = sorted(by_name.items(), key=lambda kv: -sum(kv[1]))[:5]
    out = {"kernels": len(kernels), "gpu_us": total_us,
           "top_kernels": [{"name": n[:120], "calls": len(t), "gpu_us": sum(t), "share": sum(t) / total_us}
                           for n, t in top]}
    print(f"  eager CUDA step, profiler: {len(kernels)} kernels, {total_us / 1e3:.1f} ms of GPU time", flush=True)
    for k in out["top_kernels"]:
        print(f"    {k['share']:5.1%} {k['calls']:4d} x {k['name'][:90]}")
    return out


def _command(argv: list[str]) -> str:
    """The command line that made the JSON, without where it was written (a path of that machine)."""
    kept, skip = [], False
    for a in argv:
        if skip or a.startswith("--json="):
            skip = False
            continue
        skip = a == "--json"
        if not skip:
            kept.append(a)
    return " ".join(["python benchmarks/backends.py", *kept])


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--batch", type=int, default=64, help="batch size of the table (default 64)")
    p.add_argument("--slow-batch", type=int, default=4, help="batch actually run by the slow peers (default 4)")
    p.add_argument("--repeats", type=int, default=5, help="timed repeats after one warm-up; the median is reported")
    p.add_argument("--slow-repeats", type=int, default=3, help="timed repeats of the slow peers (default 3)")
    p.add_argument("--device", choices=("cpu", "cuda"), default="cpu",
                   help="tensors' device for the entries that run on CUDA (default.qubit ones); others stay on CPU")
    p.add_argument("--json", type=Path, default=None, help="where to write the JSON (default benchmarks/results/backends-<label>.json)")
    p.add_argument("--label", default=None, help="file label (default: the --device, or cuda-batch)")
    p.add_argument("--quick", action="store_true", help="2 repeats, slow peers at batch 2: a smoke test")
    p.add_argument("--cuda-batch", action="store_true",
                   help="instead of the table: default.qubit forward+backward per-sample cost at a large batch, CUDA vs CPU")
    p.add_argument("--cuda-batch-size", type=int, default=65536)
    p.add_argument("--cuda-fused", action="store_true",
                   help="instead of the table: qelm.fused vs default.qubit (and pyqtorch) on CUDA at --cuda-sizes")
    p.add_argument("--cuda-sizes", type=lambda v: [int(x) for x in v.split(",")], default=[4096, 1048576])
    p.add_argument("--batches", type=lambda v: [int(x) for x in v.split(",")], default=None,
                   help="comma-separated batch sizes: the table at each (default: --batch)")
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's choice)")
    p.add_argument("--verbose", action="store_true", help="print tracebacks of failing entries")
    args = p.parse_args(argv)
    if args.quick:
        args.repeats, args.slow_batch, args.slow_repeats = min(args.repeats, 2), min(args.slow_batch, 2), 1
    if args.threads:
        torch.set_num_threads(args.threads)

    meta = {"workload": f"{N_QUBITS} qubits, AngleEmbedding(Y) + {N_LAYERS} StronglyEntanglingLayers, "
                        "forward + backward of sum(<Z>) w.r.t. inputs and weights",
            "cpu": cpu_model(), "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "versions": versions(), "quick": args.quick,
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "command": _command(argv if argv is not None else sys.argv[1:])}
    print(f"CPU: {meta['cpu']} ({meta['cpu_count']} logical CPUs, torch threads {meta['torch_threads']})")
    print("versions: " + ", ".join(f"{k} {v}" for k, v in meta["versions"].items()))
    if args.cuda_batch:
        result = run_cuda_batch(args)
        label = args.label or "cuda-batch"
    elif args.cuda_fused:
        result = run_cuda_fused(args)
        label = args.label or "cuda-fused"
    elif args.batches:
        tables = []
        for batch in args.batches:
            args.batch = batch
            print(f"\nbatch {batch}:", flush=True)
            tables.append(run_table(args))
            print_table(tables[-1])
        result = {"tables": tables}
        label = args.label or f"{args.device}-sizes"
    else:
        result = run_table(args)
        print_table(result)
        label = args.label or args.device
    path = args.json or Path(__file__).resolve().parent / "results" / f"backends-{label}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({**meta, **result}, indent=2) + "\n")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
