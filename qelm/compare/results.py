"""What :func:`~qelm.compare.compare` hands back: a :class:`ModelReport` per model (with a
:class:`CircuitCost` per circuit it runs) inside one :class:`Comparison`, the constants that name what is
measured, and the method behind each figure.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ..files import atomic_write

__all__ = ["PUBLISHED_SETTING", "PUBLISHED_CLAIM", "COMPONENTS", "SIZE_FORMATS", "BASIS_GATES", "METHOD",
           "CircuitCost", "ModelReport", "Comparison"]

#: the setting of a published QELM claim: vocab 100, embedding dim 128, 4 heads, hidden 256 (once called
#: the "classic" setting, a word too close to "classical", which means every slot classical)
PUBLISHED_SETTING: dict[str, int] = {"vocab_size": 100, "d_model": 128, "n_heads": 4, "d_hidden": 256}

#: the published claim the published setting lets users check (quoted, not measured: compare() measures)
PUBLISHED_CLAIM: dict[str, Any] = {
    "source": "a public QELM project",
    "text": "2,165 KB for the QELM against 15-20 MB for a classical model of similar configuration",
    # KB / MB are read both ways (decimal and binary), so a unit convention cannot decide the verdict
    "qelm_bytes": (2165 * 1000, 2165 * 1024),
    "classical_bytes": (15 * 1000**2, 20 * 1024**2),
}

COMPONENTS = ("embedding", "attention", "feed_forward", "norms", "lm_head")
SIZE_FORMATS = ("safetensors_float32", "safetensors_float16", "safetensors_bfloat16", "torch_save", "checkpoint")
#: gate set for the hardware-style gate counts and depth (single-qubit rotations, CNOT, H, T, T^dagger)
BASIS_GATES = frozenset({"RX", "RY", "RZ", "CNOT", "Hadamard", "T", "Adjoint(T)"})

METHOD = {
    "parameters": "sum of p.numel() over model.named_parameters(), grouped by the top-level module that owns "
                  "each tensor; circuit weights = the variational gate angles of quantum layers; circuit "
                  "inputs = learned per-token angles fed to the embedding circuit",
    "sizes": "bytes of files written here (safetensors.torch.save_file of the state_dict cast to each dtype; "
             "torch.save of the state_dict; qelm.checkpoint.save_checkpoint folder, all files summed)",
    "flops": "torch.utils.flop_counter.FlopCounterMode on one forward pass (no grad) of batch x context_len "
             "random tokens, divided by the tokens; it counts matmul-family ops (mm, addmm, bmm, sdpa) as "
             "2*m*n*k and no elementwise ops; torch work inside the circuit simulator is subtracted from the "
             "classical figure and shown as simulator FLOPs (complex products counted like real ones)",
    "executions": "backend expval/state calls wrapped during the same forward pass; a call on (N, P) angles "
                  "is N circuit executions; the embedding simulates each distinct token id of a batch once",
    "gates": "qml.specs(level='device') on default.qubit for simulator gates; depth and basis gates after "
             "qml.transforms.decompose to {RX, RY, RZ, CNOT, H, T, T^dagger}",
    "simulation": "state-vector cost per execution = 2**n_wires amplitudes x simulator gates (each gate "
                  "touches every amplitude of a dense state vector); memory = 16 bytes x 2**n_wires (complex128)",
    "shots": "a Pauli-Z measurement has variance 1 - <Z>**2, so standard error eps needs (1 - <Z>**2)/eps**2 "
             "<= 1/eps**2 shots; the <Z> of one execution are on distinct wires, commute and come from the "
             "same shots, so shots/token = sum over circuits of executions/token x shots per execution "
             "(x observables if each were measured separately); worst case uses 1/eps**2, 'at measured <Z>' "
             "uses max over the execution's observables of (1 - <Z>**2)/eps**2 at these weights",
    "perplexity": "qelm.evaluate.evaluate on the token ids of the --data text (each model's own tokenizer)",
}


@dataclass
class CircuitCost:
    """One circuit structure as a model's forward pass runs it, and what it costs per token."""

    name: str  # circuit name (qelm.circuits.CIRCUITS)
    returns: str  # "expval" (Pauli-Z expectations) or "state" (state vector: simulator only)
    n_wires: int
    observables: int  # Pauli-Z expectations per execution (0 for state readout)
    executions: int  # executions in the measured forward pass
    executions_per_token: float
    simulator_gates: dict[str, int]  # gate counts as default.qubit applies them
    basis_gates: dict[str, int]  # gate counts after decomposition to BASIS_GATES
    depth: int  # circuit depth in BASIS_GATES
    amplitude_updates_per_token: float  # 2**n_wires x simulator gates x executions/token
    statevector_bytes: int  # memory of one complex128 state vector
    shots_per_token_worst: float | None  # executions/token x ceil(1/eps**2); None: not measurable by shots
    shots_per_token_measured: float | None  # same, at the <Z> measured in this forward pass
    shots_per_token_separate: float | None  # worst case if every observable were measured on its own

    @property
    def simulator_gate_count(self) -> int:
        return sum(self.simulator_gates.values())

    @property
    def basis_gate_count(self) -> int:
        return sum(self.basis_gates.values())


@dataclass
class ModelReport:
    """Everything measured about one model."""

    name: str
    kind: str  # "quantum" (runs circuits) or "classical"
    config: dict[str, Any]
    parameters: dict[str, int]  # per component, from named_parameters
    circuit_weights: dict[str, int]  # per component: variational gate angles
    circuit_inputs: dict[str, int]  # per component: learned per-token circuit input angles
    sizes: dict[str, int | None]  # bytes per SIZE_FORMATS entry, None where it could not be written
    size_notes: dict[str, str]  # why a size is None
    tokens_measured: int  # tokens of the forward pass behind the per-token figures
    flops_per_token: float  # classical FLOPs (FlopCounterMode), simulator work excluded
    simulator_flops_per_token: float | None  # torch FLOPs inside the simulator (None: not visible to torch)
    circuits: list[CircuitCost] = field(default_factory=list)
    backend: str | None = None
    perplexity: dict[str, float] | None = None  # evaluate() result on --data
    path: str | None = None  # checkpoint folder it was loaded from

    @property
    def total_parameters(self) -> int:
        return sum(self.parameters.values())

    @property
    def total_circuit_weights(self) -> int:
        return sum(self.circuit_weights.values())

    @property
    def total_circuit_inputs(self) -> int:
        return sum(self.circuit_inputs.values())

    @property
    def executions_per_token(self) -> float:
        return sum(c.executions_per_token for c in self.circuits)

    @property
    def amplitude_updates_per_token(self) -> float:
        return sum(c.amplitude_updates_per_token for c in self.circuits)

    @property
    def max_wires(self) -> int:
        return max((c.n_wires for c in self.circuits), default=0)

    def size(self, fmt: str) -> int:
        """Bytes in the SIZE_FORMATS entry ``fmt``; a format that could not be written has no size to use."""
        size = self.sizes[fmt]
        if size is None:
            raise ValueError(f"{self.name} has no {fmt} size: {self.size_notes.get(fmt, 'it could not be written')}")
        return size

    def shots_per_token(self, which: str = "worst") -> float | None:
        """Summed over circuits; None if any circuit reads a state vector (no shot equivalent)."""
        values = [getattr(c, f"shots_per_token_{which}") for c in self.circuits]
        if any(v is None for v in values):
            return None
        return float(sum(values))

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["parameters"]["total"] = self.total_parameters
        d["circuit_weights"]["total"] = self.total_circuit_weights
        d["circuit_inputs"]["total"] = self.total_circuit_inputs
        for c, cd in zip(self.circuits, d["circuits"]):
            cd["simulator_gate_count"] = c.simulator_gate_count
            cd["basis_gate_count"] = c.basis_gate_count
        d["executions_per_token"] = self.executions_per_token
        d["amplitude_updates_per_token"] = self.amplitude_updates_per_token
        d["shots_per_token_worst"] = self.shots_per_token("worst")
        d["shots_per_token_measured"] = self.shots_per_token("measured")
        return d


@dataclass
class Comparison:
    """The side-by-side result of :func:`compare`. ``reference`` names the model ratios are taken to."""

    models: list[ModelReport]
    reference: str | None
    eps: float
    batch_size: int
    setting: str  # "config", "published", "checkpoints" or "models"
    verdict: str
    claim_verdict: str | None = None  # only for the published setting
    method: dict[str, str] = field(default_factory=lambda: dict(METHOD))

    def __getitem__(self, name: str) -> ModelReport:
        for m in self.models:
            if m.name == name:
                return m
        raise KeyError(f"no model named {name!r} in this comparison: {', '.join(m.name for m in self.models)}")

    def ratio(self, value: Callable[[ModelReport], float | None], model: ModelReport) -> float | None:
        """``value(model) / value(reference)``, None without a reference or a value."""
        if self.reference is None:
            return None
        a, b = value(model), value(self[self.reference])
        return None if a is None or not b else a / b

    def to_dict(self) -> dict[str, Any]:
        models = []
        for m in self.models:
            d = m.to_dict()
            d["ratio_to_reference"] = None if self.reference is None else {
                "parameters": self.ratio(lambda r: r.total_parameters, m),
                **{f: self.ratio(_size_of(f), m) for f in SIZE_FORMATS},
                "flops_per_token": self.ratio(lambda r: r.flops_per_token, m),
            }
            models.append(d)
        out = {"setting": self.setting, "reference": self.reference, "eps": self.eps, "batch_size": self.batch_size,
               "models": models, "verdict": self.verdict, "method": self.method}
        if self.claim_verdict is not None:
            out["claim"] = dict(PUBLISHED_CLAIM)
            out["claim_verdict"] = self.claim_verdict
        return out

    def save_json(self, path: str | os.PathLike) -> Path:
        """Write :meth:`to_dict` as JSON, atomically."""
        text = json.dumps(self.to_dict(), indent=2) + "\n"
        return atomic_write(path, text, make_parents=True)


def _size_of(fmt: str) -> Callable[[ModelReport], float | None]:
    """A model's bytes in format ``fmt``, None where it could not be written."""
    return lambda m: m.sizes.get(fmt)
