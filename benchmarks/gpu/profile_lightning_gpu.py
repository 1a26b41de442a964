"""Where lightning.gpu's time per sample goes, call by call, for qelm's angle circuit (2 layers).

qelm runs lightning.gpu through Lightning's own bindings, one state vector per sample (``qelm.backends.
lightning``). This times each binding call that path makes, per sample, on 64 samples: what bounds the
per-sample cost, and what the alternatives the backend does not take would cost (a state vector made per
sample, Lightning's expvals instead of the host readout, one adjoint pass per observable).

    python benchmarks/gpu/profile_lightning_gpu.py [--qubits 4,8]   # on a machine where lightning.gpu runs
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from qelm.backends.lightning import _Kernels, load_gpu_ops  # noqa: E402
from qelm.circuits import build_circuit  # noqa: E402


def per_sample(f, n: int, label: str) -> float:
    """Milliseconds per call of ``f(s)`` over ``n`` calls, after one warm-up call; printed."""
    f(0)
    t = time.perf_counter()
    for s in range(n):
        f(s)
    ms = (time.perf_counter() - t) / n * 1e3
    print(f"  {label:44s} {ms:8.4f} ms")
    return ms


def profile(ops, n_qubits: int, samples: int = 64) -> None:
    circuit = build_circuit("angle", n_qubits, 2)
    k = _Kernels(circuit, ops, gpu=torch.cuda.current_device())
    values = np.random.default_rng(0).uniform(-3, 3, (samples, circuit.n_angles))
    params = k.params(values).tolist()
    print(f"{n_qubits} qubits: {len(k.names)} gates, {len(k.trainable)} trainable angles, "
          f"{len(k.observables)} observables; per sample:")
    sv, gate_params = k._simulate(params[0])
    per_sample(lambda s: ops.StateVectorC128(n_qubits), 16, "a new state vector (not taken: reused)")
    per_sample(lambda s: k._simulate(params[s]), samples, "reset + every gate")
    per_sample(lambda s: ops.MeasurementsC128(sv), samples, "MeasurementsC128(sv) (not taken)")
    m = ops.MeasurementsC128(sv)
    per_sample(lambda s: [m.expval(o) for o in k.observables], samples, "Lightning expvals, all (not taken)")
    state = np.empty(2**n_qubits, dtype=np.complex128)
    per_sample(lambda s: sv.getState(state), samples, "state to host (host readout)")
    mats = [np.zeros(0, dtype=np.complex128)] * len(k.names)
    none = [[] for _ in k.names]
    create = ops.algorithms.create_ops_listC128
    per_sample(lambda s: create(k.names, gate_params, k.wires, k.inverses, mats, none, none), samples,
               "create_ops_list")
    ops_list = create(k.names, gate_params, k.wires, k.inverses, mats, none, none)
    cotangent = ops.observables.HamiltonianC128(np.linspace(-1, 1, len(k.observables)).tolist(), k.observables)
    adjoint = ops.algorithms.AdjointJacobianC128()
    per_sample(lambda s: adjoint(sv, [cotangent], ops_list, k.trainable), samples, "adjoint pass, one Hamiltonian")
    per_sample(lambda s: adjoint(sv, k.observables, ops_list, k.trainable), samples,
               "adjoint pass per observable (not taken)")
    fwd = per_sample(lambda s: k.expval(values[s:s + 1]), samples, "qelm forward (kernels.expval)")
    bwd = per_sample(lambda s: k.vjp(values[s:s + 1], np.ones((1, len(k.observables)))), samples,
                     "qelm backward (kernels.vjp)")
    print(f"  {'forward + backward':44s} {fwd + bwd:8.4f} ms")


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--qubits", default="4,8", help="comma-separated circuit sizes (default 4,8)")
    args = p.parse_args(argv)
    ops = load_gpu_ops()
    print(f"GPU {torch.cuda.get_device_name()}")
    for n in (int(q) for q in args.qubits.split(",")):
        profile(ops, n)


if __name__ == "__main__":
    main()
