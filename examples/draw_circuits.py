"""Draw every built-in circuit, export it to OpenQASM and check qiskit runs the same circuit.

For each circuit of ``qelm.CIRCUITS``: the text drawing (``qml.draw``, templates decomposed, each gate
labelled with the index of its angle), the resource summary (``qml.specs`` and qiskit), and an OpenQASM 2
export loaded back with ``qiskit.qasm2.loads`` whose state vector is compared with PennyLane's for random
angles. With ``--out DIR`` each circuit's PNG (``qml.draw_mpl``) and QASM file are written there too.

    python examples/draw_circuits.py
    python examples/draw_circuits.py --n-qubits 3 --circuit-layers 1 --out drawings

The same drawings come from the command line: ``qelm draw angle --format png --out angle.png``.
"""

import argparse
import math
from pathlib import Path

import numpy as np
import pennylane as qml
import torch
from qiskit import qasm2
from qiskit.quantum_info import Statevector

from qelm import CIRCUITS, build_circuit
from qelm.draw import render
from qelm.export import resources, to_qasm
from qelm.files import atomic_write


def pennylane_state(circuit, angles):
    @qml.qnode(qml.device("default.qubit", wires=circuit.n_wires))
    def node(a):
        circuit.apply(a)
        return qml.state()

    return node(angles).numpy()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-qubits", type=int, default=2, help="data qubits per circuit (default 2)")
    parser.add_argument("--circuit-layers", type=int, default=2, help="variational layers per circuit (default 2)")
    parser.add_argument("--out", type=Path, help="also write NAME.png and NAME.qasm into this folder")
    args = parser.parse_args()
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)

    torch.manual_seed(0)
    rows = []
    for name in CIRCUITS:
        circuit = build_circuit(name, args.n_qubits, args.circuit_layers)
        print(render(circuit, "text"))

        # the OpenQASM export runs the same circuit in qiskit: compare state vectors at random angles
        angles = (torch.rand(circuit.n_angles, dtype=torch.float64) * 2 - 1) * math.pi
        qc = qasm2.loads(to_qasm(circuit, angles)).remove_final_measurements(inplace=False)
        # PennyLane wire 0 is the most significant bit; qiskit qubit 0 the least
        error = np.abs(Statevector(qc.reverse_bits()).data - pennylane_state(circuit, angles)).max()

        r = resources(circuit)
        rows.append((name, r["wires"], r["parameters"]["gate_angles"], r["pennylane_device"]["gates"],
                     r["pennylane_device"]["depth"], r["openqasm"]["gate_types"].get("cx", 0), error))
        if args.out:
            atomic_write(args.out / f"{name}.png", render(circuit, "png"))
            atomic_write(args.out / f"{name}.qasm", render(circuit, "qasm"))

    print(f"n_qubits={args.n_qubits}, n_layers={args.circuit_layers}; gates and depth by qml.specs (level='device'), CNOTs "
          "counted by qiskit in the OpenQASM export; last column: max |amplitude difference| qiskit vs PennyLane")
    print(f"{'circuit':<13}{'wires':>6}{'angles':>8}{'gates':>7}{'depth':>7}{'CNOTs':>7}{'max |diff|':>12}")
    for name, wires, angles, gates, depth, cx, error in rows:
        print(f"{name:<13}{wires:>6}{angles:>8}{gates:>7}{depth:>7}{cx:>7}{error:>12.1e}")
    if args.out:
        print(f"wrote {2 * len(rows)} files to {args.out}/")


if __name__ == "__main__":
    main()
