"""The ``qiskit.aer`` backend's noisy path: circuits as hardware would run them, sampled, and mitigated.

For each circuit structure a *program* is built once: the circuit as it would run (:meth:`Noise.prepare`:
transpiled to the device for a device model), its folded copies at each ZNE scale and, with twirling,
the twirled copies of each; every copy saves the outcome probabilities of the measured qubits.

For a batch of ``M`` angle vectors, one ``AerSimulator.run`` (density matrix, the noise model) takes
every copy with all ``M`` parameter sets. The exact noisy probabilities ``(copies, M, 2**n)`` then get
the readout errors (per measured qubit, from the noise model), and ``shots`` bitstrings are drawn per
sample and scale (shared among the twirled copies). Outcome frequencies, corrected by the inverse
confusion matrix when readout mitigation is on, give every Z string of the readout; ZNE weights combine
the scales. Outcome index bit ``k`` is the circuit's qubit ``k`` wherever routing put it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .mitigation import Mitigation, confusion_from_frequencies, fold, inverse_confusion, twirl
from .noise import readout_confusion

__all__ = ["NoisySampler"]


@dataclass
class _Program:
    circuits: list  # every copy to run (scales x twirls), each saving its outcome probabilities
    scale_of: np.ndarray  # (P,) the ZNE scale index of each copy
    twirl_of: np.ndarray  # (P,) its index among the twirled copies of its scale
    cols: list  # (P,) each copy's parameters as columns of the angle values
    measured: tuple  # the qubits holding the circuit's qubits 0..n-1 at the end
    width: int  # qubits of the prepared circuit (a device's width)
    signs: np.ndarray  # (2**n, n_obs): +-1, the value of each Z string on each outcome
    readout: np.ndarray | None  # (2**n, 2**n) readout errors P(measured | true outcome), None when perfect
    inverse: np.ndarray | None = field(default=None)  # readout mitigation, calibrated on first use


def _signs(z_qubits, n: int) -> np.ndarray:
    bits = (np.arange(2**n)[:, None] >> np.arange(n)[None, :]) & 1  # (2**n, n)
    parity = np.stack([bits[:, list(z)].sum(axis=1) % 2 for z in z_qubits], axis=1)  # (2**n, n_obs)
    return 1.0 - 2.0 * parity


def _kron(confusions: np.ndarray) -> np.ndarray | None:
    """Per-qubit ``A[measured, prepared]`` (qubit k = bit k) -> the full matrix, None if all perfect."""
    if np.allclose(confusions, np.eye(2)):
        return None
    out = np.ones((1, 1))
    for a in confusions[::-1]:  # qubit n-1 is the most significant bit: the first kron factor
        out = np.kron(out, a)
    return out


class NoisySampler:
    """Prepared programs and readout calibrations for one backend; :meth:`estimate` runs a batch."""

    def __init__(self, noise, noise_model, mitigation: Mitigation | None, device: str, seed: int | None) -> None:
        from qiskit_aer import AerSimulator  # lazy: qiskit-aer is slow to import; only this backend needs it

        self.noise = noise
        self.mitigation = mitigation or Mitigation(spec="")
        self.model = noise.build() if noise is not None else noise_model
        self.sim = AerSimulator(method="density_matrix", device=device, noise_model=self.model)
        self.seed = 0 if seed is None else int(seed)
        self.programs: dict = {}
        self.calibrations: dict = {}

    def program(self, compiled) -> _Program:
        if compiled.key in self.programs:
            return self.programs[compiled.key]
        n = compiled.qc.num_qubits
        if self.noise is not None:
            base, measured = self.noise.prepare(compiled.qc, seed=self.seed)
            basis = self.noise.basis()
        else:
            base, measured, basis = compiled.qc, list(range(n)), None
        mit = self.mitigation
        scales = mit.scales if mit.fit else (1.0,)
        index = {p: j for j, p in enumerate(compiled.qc.parameters)}
        circuits, scale_of, twirl_of = [], [], []
        for si, scale in enumerate(scales):
            folded = fold(base, scale, mit.fold, seed=self.seed + si, basis=basis)
            copies = twirl(folded, mit.twirls, seed=self.seed + si, basis=basis) if mit.twirls else [folded]
            for k, c in enumerate(copies):
                c = c.copy()
                c.save_probabilities(qubits=measured)
                circuits.append(c)
                scale_of.append(si)
                twirl_of.append(k)
        cols = [np.array([index[p] for p in c.parameters], dtype=np.int64) for c in circuits]
        prog = _Program(circuits, np.array(scale_of), np.array(twirl_of), cols, tuple(measured), base.num_qubits,
                        _signs(compiled.z_qubits, n), _kron(readout_confusion(self.model, measured)))
        self.programs[compiled.key] = prog
        return prog

    def _probabilities(self, circuits, cols, values: np.ndarray) -> np.ndarray:
        """``(len(circuits), M, 2**n)`` exact noisy outcome probabilities, one Aer run."""
        m = values.shape[0]
        if values.shape[1] == 0:
            result = self.sim.run(circuits, shots=1).result()
            probs = np.array([result.data(i)["probabilities"] for i in range(len(circuits))], dtype=np.float64)
            return np.broadcast_to(probs[:, None], (len(circuits), m, probs.shape[-1]))
        binds = [{p: values[:, j].tolist() for p, j in zip(c.parameters, col)} for c, col in zip(circuits, cols)]
        result = self.sim.run(circuits, parameter_binds=binds, shots=1, runtime_parameter_bind_enable=True).result()
        probs = np.array([result.data(i)["probabilities"] for i in range(len(circuits) * m)], dtype=np.float64)
        return probs.reshape(len(circuits), m, -1)  # experiments come circuit by circuit, each with all M sets

    @staticmethod
    def _measure(probs: np.ndarray, readout: np.ndarray | None) -> np.ndarray:
        """Probabilities of the bitstrings read out: the true outcomes through the readout errors."""
        if readout is not None:
            probs = probs @ readout.T
        probs = np.clip(probs, 0.0, None)
        return probs / probs.sum(axis=-1, keepdims=True)

    def _inverse(self, prog: _Program, shots: int, rng: np.random.Generator, usage: dict) -> np.ndarray:
        """The inverse confusion matrix of ``prog``'s measured qubits, from two calibration circuits."""
        key = (prog.measured, prog.width)
        if key not in self.calibrations:
            from qiskit import QuantumCircuit  # lazy: qiskit is slow to import; only qiskit.aer and the exports use it

            cal_shots = self.mitigation.readout_shots or shots
            zeros, ones = QuantumCircuit(prog.width), QuantumCircuit(prog.width)
            for q in prog.measured:
                ones.x(q)
            for c in (zeros, ones):
                c.save_probabilities(qubits=list(prog.measured))
            probs = self._measure(self._probabilities([zeros, ones], [[], []], np.zeros((1, 0))), prog.readout)
            freq = rng.multinomial(cal_shots, probs[:, 0]) / cal_shots  # (2, 2**n)
            confusions = confusion_from_frequencies(freq[0], freq[1], len(prog.measured))
            self.calibrations[key] = inverse_confusion(confusions)
            usage["circuits"] += 2
            usage["shots"] += 2 * cal_shots
        return self.calibrations[key]

    def estimate(self, compiled, values: np.ndarray, shots: int, rng: np.random.Generator, usage: dict) -> np.ndarray:
        """``values`` (M, U) -> (M, n_obs) expectation values as noisy hardware sampled with ``shots``
        per circuit and scale would give them, mitigated as asked."""
        prog = self.program(compiled)
        mit = self.mitigation
        m = values.shape[0]
        probs = self._measure(self._probabilities(prog.circuits, prog.cols, values), prog.readout)  # (P, M, K)
        n_scales = int(prog.scale_of.max()) + 1
        copies = max(1, mit.twirls)
        counts = np.zeros((n_scales, m, probs.shape[-1]))
        for p in range(len(prog.circuits)):  # the shots of a scale are shared among its twirled copies
            k = int(prog.twirl_of[p])
            share = shots // copies + (1 if k < shots % copies else 0)
            counts[prog.scale_of[p]] += rng.multinomial(share, probs[p])
        freq = counts / shots  # (S, M, K)
        if mit.readout:
            freq = freq @ self._inverse(prog, shots, rng, usage).T
        ev = np.tensordot(mit.weights, freq @ prog.signs, axes=1)  # (M, n_obs)
        usage["circuits"] += len(prog.circuits) * m
        usage["shots"] += n_scales * shots * m
        if mit.fit or mit.readout:
            ev = np.clip(ev, -1.0, 1.0)
        return ev
