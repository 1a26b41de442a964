"""Noise models for the ``qiskit.aer`` backend, named by one line of text (``--noise``, ``noise=``).

A spec is one or more models joined by ``+``, each ``NAME`` or ``NAME:key=value,key=value``:

* ``depolarizing:p1=0.001,p2=0.01`` — a depolarizing channel of probability ``p1`` after every one-qubit
  gate and ``p2`` after every two-qubit gate;
* ``thermal:t1=50e-6,t2=70e-6,time1=50e-9,time2=300e-9`` — amplitude and phase damping (qiskit-aer's
  ``thermal_relaxation_error``) during every gate: T1 and T2 in seconds, ``time1``/``time2`` the duration
  of one- and two-qubit gates (T2 cannot exceed 2*T1);
* ``readout:p0to1=0.01,p1to0=0.03`` (or ``readout:p=0.02`` for both) — each measured bit flips with these
  probabilities (a prepared 0 read as 1, a prepared 1 read as 0);
* a device: the name of one of qiskit-ibm-runtime's fake backends (``fake_manila``, ``fake_sherbrooke``,
  ...: calibration snapshots of real IBM devices shipped in the package), through
  ``NoiseModel.from_backend``. Circuits are then transpiled to that device's basis gates and coupling map
  (:meth:`Noise.prepare`), so the noise acts on what the device would run. A device stands alone.

Named models may be combined (``depolarizing+readout``); parameters left out take the defaults in
:data:`NOISE_MODELS`. Every bad spec is a ``ValueError`` that names the bad part and the valid choices.

Noise needs shots (the backend samples measured bitstrings; readout errors only exist for them). The
backend simulates each circuit's noisy density matrix exactly, applies the readout errors to its outcome
probabilities and draws ``shots`` bitstrings from them (:mod:`qelm.backends.aer`).
"""

from __future__ import annotations

import functools
import warnings
from dataclasses import dataclass, field

import numpy as np

from ..errors import BackendError

__all__ = ["Noise", "NOISE_MODELS", "parse_noise", "parse_spec", "device_names", "readout_confusion",
           "NOISE_INSTALL"]

NOISE_INSTALL = 'pip install "qelm-lab[noise]"'

#: named models: parameter -> (default, what it is)
NOISE_MODELS: dict[str, dict[str, tuple[float | None, str]]] = {
    "depolarizing": {"p1": (1e-3, "depolarizing probability after each one-qubit gate"),
                     "p2": (1e-2, "depolarizing probability after each two-qubit gate")},
    "thermal": {"t1": (50e-6, "T1 in seconds (amplitude damping)"),
                "t2": (70e-6, "T2 in seconds (dephasing; at most 2*T1)"),
                "time1": (50e-9, "duration of a one-qubit gate in seconds"),
                "time2": (300e-9, "duration of a two-qubit gate in seconds")},
    "readout": {"p0to1": (1e-2, "probability that a prepared 0 is read as 1"),
                "p1to0": (3e-2, "probability that a prepared 1 is read as 0"),
                "p": (None, "sets p0to1 and p1to0 at once")},
}
_PROBABILITIES = ("p1", "p2", "p0to1", "p1to0", "p")
# the gate names the backend's circuits hold (translated, folded, twirled): named models act on all of them
_GATES_1Q = ["id", "x", "y", "z", "h", "s", "sdg", "t", "tdg", "sx", "sxdg", "rx", "ry", "rz", "p", "u", "u1",
             "u2", "u3", "r"]
_GATES_2Q = ["cx", "cy", "cz", "swap", "rxx", "ryy", "rzz", "ecr", "iswap", "cp", "crx", "cry", "crz"]


def parse_spec(spec: str, what: str) -> list[tuple[str, dict[str, str]]]:
    """``"a:k=v,k2=v2+b"`` -> ``[("a", {"k": "v", "k2": "v2"}), ("b", {})]``; ``what`` names the spec in errors."""
    if not isinstance(spec, str) or not spec.strip():
        raise BackendError(f"{what} {spec!r} is empty: give a model name")
    parts = []
    for part in spec.split("+"):
        name, _, params = part.strip().partition(":")
        name = name.strip().lower()
        if not name:
            raise BackendError(f"{what} {spec!r} has an empty part: join names with a single '+'")
        values: dict[str, str] = {}
        for item in filter(None, (p.strip() for p in params.split(","))):
            key, eq, value = item.partition("=")
            if not eq or not key.strip() or not value.strip():
                raise BackendError(f"{what} {spec!r}: {item!r} is not key=value (e.g. {name}:key=0.01)")
            key = key.strip().lower()
            if key in values:  # the last one silently winning hides a typo
                raise BackendError(f"{what} {spec!r}: {name} {key} is given twice ({key}={values[key]} and "
                                   f"{key}={value.strip()}): give it once")
            values[key] = value.strip()
        parts.append((name, values))
    return parts


def _number(what: str, name: str, key: str, text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise BackendError(f"{what}: {name} {key}={text!r} is not a number") from None
    if not np.isfinite(value):
        raise BackendError(f"{what}: {name} {key}={text!r} is not a finite number")
    return value


@functools.lru_cache(maxsize=1)
def device_names() -> tuple[str, ...]:
    """The fake backends of qiskit-ibm-runtime (device calibration snapshots), by name; empty if the
    package is not installed."""
    try:  # lazy: qiskit-ibm-runtime is optional (the noise extra)
        from qiskit_ibm_runtime.fake_provider import FakeProviderForBackendV2
    except ImportError:
        return ()
    with warnings.catch_warnings():  # some snapshots warn that their error values are not typical
        warnings.simplefilter("ignore")
        return tuple(sorted(b.name for b in FakeProviderForBackendV2().backends()))


@functools.lru_cache(maxsize=8)
def _device(name: str):
    from qiskit_ibm_runtime.fake_provider import FakeProviderForBackendV2  # lazy: optional (the noise extra)

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return FakeProviderForBackendV2().backend(name)


def _valid_models() -> str:
    return (f"valid models are {', '.join(NOISE_MODELS)} (join them with '+'), or a device: one of "
            f"qiskit-ibm-runtime's fake backends such as fake_manila, fake_lima, fake_sherbrooke")


@dataclass(frozen=True)
class Noise:
    """A parsed, validated noise spec. ``models`` maps each named model to its parameters (defaults filled
    in); ``device`` is a fake backend's name or None. :meth:`build` gives the ``NoiseModel``."""

    spec: str
    models: dict[str, dict[str, float]] = field(default_factory=dict)
    device: str | None = None

    def describe(self) -> str:
        if self.device:
            return f"device {self.device} (calibration snapshot)"
        return " + ".join(f"{name}({', '.join(f'{k}={v:g}' for k, v in params.items())})"
                          for name, params in self.models.items())

    @property
    def backend(self):
        """The fake backend of ``device`` (its target: basis gates, coupling map, calibration), or None."""
        return _device(self.device) if self.device else None

    def build(self):
        """The ``qiskit_aer.noise.NoiseModel`` of this spec (built on first use, then kept)."""
        return _build(self)

    def prepare(self, qc, seed: int = 0):
        """``(circuit, measured)``: ``qc`` as it would run (transpiled to the device's basis gates and
        coupling map, or as is for named models) and the qubits of the result that carry ``qc``'s qubits
        0, 1, ... at the end (after routing)."""
        if self.backend is None:
            return _split_wide_gates(qc), list(range(qc.num_qubits))
        from qiskit import transpile  # lazy: qiskit is slow to import; only qiskit.aer and the exports use it

        if qc.num_qubits > self.backend.num_qubits:
            raise BackendError(f"noise {self.spec!r}: the circuit has {qc.num_qubits} qubits, device {self.device} "
                             f"only {self.backend.num_qubits}: pick a larger device")
        out = transpile(qc, backend=self.backend, optimization_level=1, seed_transpiler=seed)
        return out, list(out.layout.final_index_layout())

    def basis(self) -> list[str] | None:
        """The device's basis gate names (what folded and twirled circuits are translated back to), or None."""
        if self.backend is None:
            return None
        return sorted(set(self.backend.operation_names) - {"measure", "delay", "reset", "if_else", "for_loop",
                                                           "switch_case", "while_loop", "barrier"})


@functools.lru_cache(maxsize=16)
def _build_cached(spec: str):  # by canonical spec: a device's model takes seconds to build
    return _make_model(parse_noise(spec))


def _build(noise: Noise):
    return _build_cached(noise.spec)


def _make_model(noise: Noise):
    # lazy: qiskit-aer is slow to import and only the qiskit.aer backend needs it
    from qiskit_aer.noise import NoiseModel, ReadoutError, depolarizing_error, thermal_relaxation_error

    if noise.device:
        return NoiseModel.from_backend(noise.backend)
    model = NoiseModel()
    one = two = None
    if "depolarizing" in noise.models:
        p = noise.models["depolarizing"]
        one, two = depolarizing_error(p["p1"], 1), depolarizing_error(p["p2"], 2)
    if "thermal" in noise.models:
        p = noise.models["thermal"]
        t1 = thermal_relaxation_error(p["t1"], p["t2"], p["time1"])
        t2q = thermal_relaxation_error(p["t1"], p["t2"], p["time2"])
        t2 = t2q.expand(t2q)  # both qubits relax for the length of the two-qubit gate
        one = t1 if one is None else one.compose(t1)
        two = t2 if two is None else two.compose(t2)
    if one is not None:
        model.add_all_qubit_quantum_error(one, _GATES_1Q)
        model.add_all_qubit_quantum_error(two, _GATES_2Q)
    if "readout" in noise.models:
        p = noise.models["readout"]
        model.add_all_qubit_readout_error(ReadoutError([[1 - p["p0to1"], p["p0to1"]], [p["p1to0"], 1 - p["p1to0"]]]))
    return model


def _split_wide_gates(qc):
    """Gates on three or more qubits (the swap test's CSWAP) split into one- and two-qubit gates, so the
    named models' errors act on all of the circuit."""
    if all(len(inst.qubits) <= 2 for inst in qc.data):
        return qc
    from qiskit import transpile  # lazy: qiskit is slow to import; only qiskit.aer and the exports use it

    names = {inst.operation.name for inst in qc.data if len(inst.qubits) <= 2} | {"cx", "h", "t", "tdg"}
    return transpile(qc, basis_gates=sorted(names), optimization_level=0)


def parse_noise(spec: str | Noise) -> Noise:
    """Parse and validate a noise spec (see the module docstring); raises ``ValueError`` naming the problem."""
    if isinstance(spec, Noise):
        return spec
    what = f"noise {spec!r}"
    parts = parse_spec(spec, "noise")
    models: dict[str, dict[str, float]] = {}
    device = None
    for name, values in parts:
        if name not in NOISE_MODELS:
            if name.startswith("fake_"):
                if not device_names():
                    raise BackendError(f"{what}: device models need qiskit-ibm-runtime's calibration snapshots: "
                                     f"{NOISE_INSTALL}")
                if name not in device_names():
                    raise BackendError(f"{what}: unknown device {name!r}; devices are {', '.join(device_names())}")
                if values:
                    raise BackendError(f"{what}: device {name} takes no parameters (its calibration sets them)")
                device = name
                continue
            raise BackendError(f"{what}: unknown model {name!r}; {_valid_models()}")
        if name in models:
            raise BackendError(f"{what}: model {name!r} appears twice")
        known = NOISE_MODELS[name]
        unknown = sorted(set(values) - set(known))
        if unknown:
            raise BackendError(f"{what}: unknown parameter(s) {', '.join(unknown)} of {name}; valid: "
                             + "; ".join(f"{k} ({d})" for k, (_, d) in known.items()))
        params = {k: _number(what, name, k, v) for k, v in values.items()}
        for key, value in params.items():
            if key in _PROBABILITIES and not 0.0 <= value <= 1.0:
                raise BackendError(f"{what}: {name} {key}={value:g} is not a probability: use a number in [0, 1]")
        if "p" in params:
            both = sorted(set(params) & {"p0to1", "p1to0"})
            if both:
                raise BackendError(f"{what}: {name} p sets p0to1 and p1to0 both, and {', '.join(both)} is given too: "
                                   f"give p alone, or p0to1 and p1to0")
            p = params.pop("p")
            params = {"p0to1": p, "p1to0": p, **params}
        # every parameter but p (None: it only sets p0to1 and p1to0, popped above)
        full = {k: params.get(k, default) for k, (default, _) in known.items() if default is not None}
        if name == "thermal":
            for key in ("t1", "t2"):
                if full[key] <= 0:
                    raise BackendError(f"{what}: thermal {key}={full[key]:g} is invalid: use a time > 0 in seconds")
            for key in ("time1", "time2"):
                if full[key] < 0:
                    raise BackendError(f"{what}: thermal {key}={full[key]:g} is invalid: use a duration >= 0 in seconds")
            if full["t2"] > 2 * full["t1"]:
                raise BackendError(f"{what}: thermal t2={full['t2']:g} > 2*t1={2 * full['t1']:g} is not physical: "
                                 f"use t2 <= 2*t1")
        models[name] = full
    if device and models:
        raise BackendError(f"{what}: a device ({device}) carries its own calibrated gate, relaxation and readout "
                         f"errors: use it alone, or named models ({', '.join(NOISE_MODELS)}) without it")
    canonical = device or "+".join(f"{n}:" + ",".join(f"{k}={v!r}" for k, v in p.items()) for n, p in models.items())
    return Noise(spec=canonical, models=models, device=device)


def readout_confusion(noise_model, qubits: list[int]) -> np.ndarray:
    """``(len(qubits), 2, 2)``: for each qubit, ``A[measured, prepared]``, the probability of reading
    ``measured`` when ``prepared`` is the state; identity where ``noise_model`` has no readout error.
    Only per-qubit readout errors are supported (what named models and ``NoiseModel.from_backend`` give)."""
    default, local = None, {}
    if noise_model is not None:
        for error in noise_model.to_dict().get("errors", []):
            if error.get("type") != "roerror":
                continue
            probs = np.asarray(error["probabilities"], dtype=np.float64)
            if probs.shape != (2, 2):
                raise BackendError("readout errors on several qubits at once are not supported: use one error per qubit")
            if error.get("gate_qubits"):
                for q in error["gate_qubits"]:
                    local[int(q[0])] = probs.T
            else:
                default = probs.T
    eye = np.eye(2)
    return np.stack([local.get(q, default if default is not None else eye) for q in qubits])
