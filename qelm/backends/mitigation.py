"""Error mitigation for the ``qiskit.aer`` backend's noisy circuits, named by one line (``--mitigate``,
``mitigation=``): one or more of these joined by ``+``, each ``NAME`` or ``NAME:key=value,...``.

* ``zne`` — zero-noise extrapolation (mitiq): every circuit runs at several noise scales made by unitary
  folding (``G -> G (G^dag G)^k``: the same unitary, ``scale`` times the gates, so about ``scale`` times
  the noise), and each output is extrapolated to scale 0. ``fit=richardson`` (default) or ``linear``;
  ``scales=1/3/5`` (default); ``fold=global`` (default: the whole circuit) or ``random`` (gates picked at
  random, mitiq's local folding). Each scale gets the backend's full ``shots``: the shot cost is
  ``len(scales)`` times. Folding runs on the circuit as it would run (after transpiling to a device), and
  folded gates are translated back to the device's basis gates without any optimisation, so no fold is
  cancelled.
* ``readout`` — readout-error mitigation (mitiq's tensored inverse confusion matrix): two calibration
  circuits (all qubits prepared in 0, all in 1) measured with ``shots`` (default: the backend's shots)
  give each measured qubit's confusion matrix; its inverse is applied to every circuit's outcome
  frequencies. Cost: the calibration shots, once per circuit structure.
* ``twirl`` — Pauli twirling of the two-qubit Clifford gates (qiskit's ``pauli_twirl_2q_gates``): ``n``
  (default 4) random twirled copies of each circuit share its shots (no extra shots), which turns
  coherent two-qubit errors into Pauli noise that extrapolates better.

The extrapolations are linear in the measured values, so each is a fixed weight per scale (computed once
by mitiq's factories) applied to the whole batch at once. Mitigated expectation values are clipped to
[-1, 1], the range of a Pauli expectation.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np

from ..errors import BackendError
from .base import BackendUnavailable
from .noise import NOISE_INSTALL, parse_spec

__all__ = ["Mitigation", "MITIGATIONS", "parse_mitigation", "fold", "zne_weights", "twirl", "inverse_confusion",
           "confusion_from_frequencies"]

#: options of each mitigation: key -> (default, what it is)
MITIGATIONS: dict[str, dict[str, tuple[str | int | None, str]]] = {
    "zne": {"fit": ("richardson", "extrapolation: richardson or linear"),
            "scales": ("1/3/5", "noise scale factors >= 1, joined by '/'"),
            "fold": ("global", "unitary folding: global (whole circuit) or random (gates at random)")},
    "readout": {"shots": (None, "calibration shots per prepared state (default: the backend's shots)")},
    "twirl": {"n": (4, "twirled copies of each circuit, sharing its shots")},
}
FITS = ("richardson", "linear")
FOLDS = ("global", "random")


@dataclass(frozen=True)
class Mitigation:
    """A parsed, validated mitigation spec."""

    spec: str
    fit: str | None = None  # ZNE extrapolation, None: no ZNE
    scales: tuple[float, ...] = (1.0,)
    fold: str = "global"
    readout: bool = False
    readout_shots: int | None = None
    twirls: int = 0  # twirled copies per circuit, 0: no twirling

    def describe(self) -> str:
        parts = []
        if self.fit:
            parts.append(f"ZNE ({self.fit}, {self.fold} folding, scales {'/'.join(f'{s:g}' for s in self.scales)})")
        if self.readout:
            parts.append("readout-error mitigation" + (f" ({self.readout_shots} calibration shots)"
                                                       if self.readout_shots else ""))
        if self.twirls:
            parts.append(f"Pauli twirling ({self.twirls} copies)")
        return " + ".join(parts)

    @property
    def weights(self) -> np.ndarray:
        """``(len(scales),)``: the zero-noise estimate is ``weights @ values_at_scales`` (1.0 without ZNE)."""
        return zne_weights(self.fit, self.scales) if self.fit else np.ones(1)


def _needs_mitiq(what: str) -> None:
    try:  # lazy: mitiq is optional (the noise extra)
        import mitiq  # noqa: F401
    except ImportError:
        raise BackendUnavailable(f"mitigation {what} needs mitiq: {NOISE_INSTALL}") from None


def parse_mitigation(spec: str | Mitigation) -> Mitigation:
    """Parse and validate a mitigation spec (see the module docstring); ``ValueError`` names the problem,
    ``BackendUnavailable`` says what to install when mitiq is missing."""
    if isinstance(spec, Mitigation):
        return spec
    what = f"mitigation {spec!r}"
    fields: dict = {}
    names = []
    for name, values in parse_spec(spec, "mitigation"):
        if name not in MITIGATIONS:
            raise BackendError(f"{what}: unknown mitigation {name!r}; valid are {', '.join(MITIGATIONS)} "
                             f"(join them with '+', e.g. zne+readout)")
        if name in names:
            raise BackendError(f"{what}: {name!r} appears twice")
        names.append(name)
        unknown = sorted(set(values) - set(MITIGATIONS[name]))
        if unknown:
            raise BackendError(f"{what}: unknown option(s) {', '.join(unknown)} of {name}; valid: "
                             + "; ".join(f"{k} ({d})" for k, (_, d) in MITIGATIONS[name].items()))
        opts = {k: values.get(k, default) for k, (default, _) in MITIGATIONS[name].items()}
        if name == "zne":
            if opts["fit"] not in FITS:
                raise BackendError(f"{what}: zne fit={opts['fit']!r} is invalid: use {' or '.join(FITS)}")
            if opts["fold"] not in FOLDS:
                raise BackendError(f"{what}: zne fold={opts['fold']!r} is invalid: use {' or '.join(FOLDS)}")
            try:
                scales = tuple(float(s) for s in str(opts["scales"]).split("/"))
            except ValueError:
                raise BackendError(f"{what}: zne scales={opts['scales']!r} is invalid: use numbers >= 1 joined by '/', "
                                 f"e.g. 1/3/5") from None
            if len(scales) < 2 or len(set(scales)) != len(scales) or min(scales) < 1 or not all(np.isfinite(scales)):
                raise BackendError(f"{what}: zne scales={opts['scales']!r} is invalid: use two or more distinct numbers "
                                 f">= 1 joined by '/', e.g. 1/3/5")
            _needs_mitiq("zne")
            fields.update(fit=opts["fit"], scales=scales, fold=opts["fold"])
        elif name == "readout":
            shots = opts["shots"]
            if shots is not None:
                try:
                    shots = int(shots)
                except ValueError:
                    shots = 0
                if shots < 1:
                    raise BackendError(f"{what}: readout shots={opts['shots']!r} is invalid: use an integer >= 1")
            _needs_mitiq("readout")
            fields.update(readout=True, readout_shots=shots)
        else:
            try:
                n = int(opts["n"] or 0)
            except ValueError:
                n = 0
            if n < 1:
                raise BackendError(f"{what}: twirl n={opts['n']!r} is invalid: use an integer >= 1")
            fields.update(twirls=n)
    return Mitigation(spec=spec.strip(), **fields)


@functools.lru_cache(maxsize=32)
def zne_weights(fit: str, scales: tuple[float, ...]) -> np.ndarray:
    """``w`` with ``w @ y`` equal to mitiq's extrapolation to zero noise of values ``y`` at ``scales``.
    Richardson and linear (least-squares) extrapolation are linear in ``y``, so the weights are the
    extrapolations of the unit vectors; a whole batch is then one matrix product."""
    from mitiq.zne.inference import LinearFactory, RichardsonFactory  # lazy: optional (the noise extra)

    factory = {"richardson": RichardsonFactory, "linear": LinearFactory}[fit]
    eye = np.eye(len(scales))
    return np.array([factory.extrapolate(list(scales), list(e)) for e in eye], dtype=np.float64)


@functools.lru_cache(maxsize=1)
def _slot_gate():
    """A cirq gate standing for instruction ``index`` of a qiskit circuit (or its inverse): mitiq folds a
    circuit of these, and the folded order is read back into qiskit instructions, parameters intact."""
    import cirq  # lazy: optional (mitiq's, the noise extra)

    class Slot(cirq.Gate):
        def __init__(self, index: int, n: int, inverse: bool = False) -> None:
            self.index, self.n, self.inverse = index, n, inverse

        def _num_qubits_(self) -> int:
            return self.n

        def __pow__(self, power):
            if power == 1:
                return self
            if power == -1:
                return Slot(self.index, self.n, not self.inverse)
            return NotImplemented

        def _circuit_diagram_info_(self, args):
            return (f"{'~' if self.inverse else ''}g{self.index}",) * self.n

    return Slot


def fold(qc, scale: float, method: str = "global", seed: int = 0, basis: list[str] | None = None):
    """``qc`` folded to ``scale`` times its gates by mitiq (``fold_global`` or ``fold_gates_at_random``),
    parameters kept symbolic; with ``basis``, inverted gates are translated back to those gate names
    (optimisation level 0: nothing is merged or cancelled)."""
    if scale == 1:
        return qc
    import cirq  # lazy: cirq and mitiq are optional (the noise extra)
    from mitiq.zne.scaling import fold_gates_at_random, fold_global

    slot = _slot_gate()
    ops = [inst for inst in qc.data if inst.operation.name != "barrier"]
    qubits = cirq.LineQubit.range(qc.num_qubits)
    proxy = cirq.Circuit(slot(i, len(inst.qubits)).on(*(qubits[qc.find_bit(q).index] for q in inst.qubits))
                         for i, inst in enumerate(ops))
    folded = fold_global(proxy, scale) if method == "global" else fold_gates_at_random(proxy, scale, seed=seed)
    out = qc.copy_empty_like()
    for op in folded.all_operations():
        inst = ops[op.gate.index]
        out.append(inst.operation.inverse() if op.gate.inverse else inst.operation, inst.qubits, inst.clbits)
    return _to_basis(out, basis)


def twirl(qc, n: int, seed: int = 0, basis: list[str] | None = None) -> list:
    """``n`` Pauli-twirled copies of ``qc`` (qiskit's ``pauli_twirl_2q_gates`` on cx, cz, ecr, iswap),
    translated to ``basis`` when given."""
    # lazy: qiskit is slow to import; only qiskit.aer and the exports use it
    from qiskit.circuit import pauli_twirl_2q_gates

    copies = pauli_twirl_2q_gates(qc, seed=seed, num_twirls=n)
    return [_to_basis(c, basis) for c in copies]


def _to_basis(qc, basis: list[str] | None):
    if basis is None:
        return qc
    from qiskit import transpile  # lazy: qiskit is slow to import; only qiskit.aer and the exports use it

    return transpile(qc, basis_gates=basis, optimization_level=0)


def confusion_from_frequencies(zeros: np.ndarray, ones: np.ndarray, n: int) -> np.ndarray:
    """``(n, 2, 2)`` confusion matrices ``A[measured, prepared]`` of n qubits from the outcome frequencies
    ``(2**n,)`` of the all-0 and all-1 calibration circuits (bit k of an outcome index is qubit k)."""
    bits = (np.arange(2**n)[:, None] >> np.arange(n)[None, :]) & 1  # (2**n, n)
    p0to1 = zeros @ bits  # P(read 1 | prepared 0) per qubit
    p1to0 = ones @ (1 - bits)  # P(read 0 | prepared 1)
    return np.stack([np.array([[1 - a, b], [a, 1 - b]]) for a, b in zip(p0to1, p1to0)])


def inverse_confusion(confusions: np.ndarray) -> np.ndarray:
    """``(2**n, 2**n)``: mitiq's tensored inverse of per-qubit confusion matrices ``(n, 2, 2)``, for
    outcome indices whose bit k is qubit k (so qubit n-1 is the first kron factor)."""
    # lazy: mitiq is optional (the noise extra)
    from mitiq.rem.inverse_confusion_matrix import generate_tensored_inverse_confusion_matrix

    n = len(confusions)
    return generate_tensored_inverse_confusion_matrix(n, [np.asarray(c) for c in confusions[::-1]])
