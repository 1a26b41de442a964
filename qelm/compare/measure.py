"""The measurements behind a comparison: parameters per component, bytes of files actually written,
FLOPs counted on a real forward pass, and the circuits that pass runs (executions, gates, depth, shots).
:func:`measure_models` measures built models side by side.
"""

from __future__ import annotations

import contextlib
import math
import os
import tempfile
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pennylane as qml
import torch
import torch.nn as nn
from safetensors.torch import save_file
from torch.utils.flop_counter import FlopCounterMode

from ..checkpoint import save_checkpoint
from ..errors import ConfigError
from ..files import atomic_path
from ..folders import claim_folder
from ..layers import QuantumLayer
from ..memory import state_vector_bytes
from ..model import QELM
from ..tokenizer import CharTokenizer
from .report import verdict
from .results import BASIS_GATES, COMPONENTS, CircuitCost, Comparison, ModelReport

__all__ = ["count_flops", "serialized_sizes", "measure_model", "measure_models", "model_kind"]

_DTYPES = {"safetensors_float32": torch.float32, "safetensors_float16": torch.float16,
           "safetensors_bfloat16": torch.bfloat16}


def count_flops(module: Callable[..., Any], *inputs: Any) -> int:
    """FLOPs of ``module(*inputs)`` counted by ``FlopCounterMode`` (matmul-family ops, 2*m*n*k), no grad.
    An ``nn.Linear(i, o)`` on ``(B, T, i)`` counts ``2*i*o*B*T``."""
    counter = FlopCounterMode(display=False)
    with torch.no_grad(), counter:
        module(*inputs)
    return int(counter.get_total_flops())


def _component(name: str) -> str:
    """The component a parameter name belongs to (``blocks.0.attention.qkv.weight`` -> ``attention``)."""
    parts = name.split(".")
    if parts[0] == "blocks" and len(parts) > 2:
        return {"attention": "attention", "feed_forward": "feed_forward", "ln1": "norms", "ln2": "norms"}.get(parts[2], "other")
    return {"embedding": "embedding", "ln_f": "norms", "lm_head": "lm_head"}.get(parts[0], "other")


def _parameter_groups(model: nn.Module) -> tuple[dict[str, int], dict[str, int], dict[str, int]]:
    """(all parameters, circuit weights, circuit inputs) per component."""
    params = dict.fromkeys(COMPONENTS, 0)
    weights = dict.fromkeys(COMPONENTS, 0)
    inputs = dict.fromkeys(COMPONENTS, 0)
    angle_ids: dict[int, dict[str, int]] = {}
    for _, mod in model.named_modules():
        if isinstance(mod, QuantumLayer):
            for pname, p in mod.named_parameters(recurse=False):
                if pname == "weights":
                    angle_ids[id(p)] = weights
                elif pname == "token_inputs":
                    angle_ids[id(p)] = inputs
    for name, p in model.named_parameters():
        comp = _component(name)
        for table in (params, weights, inputs):
            table.setdefault(comp, 0)
        params[comp] += p.numel()
        if id(p) in angle_ids:
            angle_ids[id(p)][comp] += p.numel()
    for table in (params, weights, inputs):  # "other" only when something falls outside the five parts
        if not params.get("other"):
            table.pop("other", None)
    return params, weights, inputs


def _folder_bytes(directory: Path) -> int:
    return sum(p.stat().st_size for p in directory.rglob("*") if p.is_file())


def _checkpoint_tokenizer(vocab_size: int):
    """A character tokenizer of exactly ``vocab_size`` printable characters, for a checkpoint written from a
    bare config (a real corpus of that vocabulary would give a tokenizer file of about this size)."""
    chars = (chr(c) for c in range(0x20, 0x110000) if not 0xD800 <= c <= 0xDFFF and chr(c).isprintable())
    return CharTokenizer([next(chars) for _ in range(vocab_size)])


def serialized_sizes(model: QELM, directory: str | os.PathLike, *, tokenizer: Any = None,
                     name: str = "model") -> tuple[dict[str, int | None], dict[str, str]]:
    """Write ``model`` in every format of ``SIZE_FORMATS`` under ``directory`` and return the byte size of
    each file (the checkpoint: the whole folder) plus notes on formats that could not be written. The
    sizes also hold ``safetensors_float32_header``: the bytes of that file that are not tensor data.

    Files: ``{name}.float32.safetensors`` (and float16, bfloat16), ``{name}.pt`` (``torch.save`` of the
    state_dict), ``{name}.checkpoint/`` (``qelm.checkpoint.save_checkpoint``; a character tokenizer of the
    model's vocabulary is made when none is given)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    state = model.state_dict()
    sizes: dict[str, int | None] = {}
    notes: dict[str, str] = {}
    for fmt, dtype in _DTYPES.items():
        tensors = {k: (v.detach().to(dtype) if v.is_floating_point() else v.detach()).contiguous().cpu()
                   for k, v in state.items()}
        path = directory / f"{name}.{str(dtype).removeprefix('torch.')}.safetensors"
        with atomic_path(path, make_parents=True) as tmp:
            save_file(tensors, str(tmp))
        sizes[fmt] = os.path.getsize(path)
        if dtype == torch.float32:  # 8-byte length + JSON header (tensor names, dtypes, offsets)
            with open(path, "rb") as fh:
                sizes["safetensors_float32_header"] = 8 + int.from_bytes(fh.read(8), "little")
    path = directory / f"{name}.pt"
    with atomic_path(path, make_parents=True) as tmp:
        torch.save(state, tmp)
    sizes["torch_save"] = os.path.getsize(path)
    if tokenizer is None:
        tokenizer = _checkpoint_tokenizer(model.config.vocab_size)
    folder = Path(save_checkpoint(directory / f"{name}.checkpoint", model, tokenizer))
    sizes["checkpoint"] = _folder_bytes(folder)
    return sizes, notes


@dataclass
class _Record:
    circuit: Any
    kind: str  # "expval" or "state"
    executions: int = 0
    shots_measured: float = 0.0  # sum over executions of the shots that execution needs


@contextlib.contextmanager
def _recording(model: nn.Module, counter: FlopCounterMode | None, eps: float) -> Iterator[tuple[dict, list]]:
    """Observe every backend the model uses: count executions per circuit structure, the shots each needs
    at its measured <Z>, and the torch FLOPs the simulator spends."""
    records: dict[tuple, _Record] = {}
    sim_flops = [0]
    backends = {id(layer.backend): layer.backend for layer in model.modules() if isinstance(layer, QuantumLayer)}

    class Observer:
        def before(self, circuit, kind):
            self.flops = counter.get_total_flops() if counter is not None else 0

        def after(self, circuit, kind, executions, out):
            if counter is not None:
                sim_flops[0] += counter.get_total_flops() - self.flops
            rec = records.setdefault((circuit.key, kind), _Record(circuit, kind))
            rec.executions += executions
            if kind == "expval":
                z = out.detach().to(torch.float64).reshape(-1, out.shape[-1])  # (N, n_obs)
                need = ((1 - z.square()).amax(dim=-1) / eps**2).ceil().clamp_min(1)  # (N,) shots per execution
                rec.shots_measured += float(need.sum())

    with contextlib.ExitStack() as stack:
        for backend in backends.values():
            stack.enter_context(backend.observe(Observer()))
        yield records, sim_flops


def _gate_counts(circuit) -> tuple[dict[str, int], dict[str, int], int]:
    """(simulator gates, basis gates, basis depth) of one circuit execution, from ``qml.specs``."""
    dev = qml.device("default.qubit", wires=circuit.n_wires)
    node = qml.QNode(circuit.qfunc, dev)
    angles = torch.full((circuit.n_angles,), 0.5, dtype=torch.float64)
    sim = qml.specs(node, level="device")(angles).resources
    basis = qml.specs(qml.transforms.decompose(node, gate_set=set(BASIS_GATES)), level="device")(angles).resources
    return dict(sim.gate_types), dict(basis.gate_types), int(basis.depth)


def _circuit_costs(records: dict, tokens: int, eps: float) -> list[CircuitCost]:
    worst = math.ceil(1 / eps**2)
    costs = []
    for rec in records.values():
        c = rec.circuit
        sim, basis, depth = _gate_counts(c)
        per_token = rec.executions / tokens
        n_obs = len(c.z_strings) if rec.kind == "expval" else 0
        shot_based = rec.kind == "expval"
        costs.append(CircuitCost(
            name=c.name, returns=rec.kind, n_wires=c.n_wires, observables=n_obs, executions=rec.executions,
            executions_per_token=per_token, simulator_gates=sim, basis_gates=basis, depth=depth,
            amplitude_updates_per_token=per_token * 2**c.n_wires * sum(sim.values()),
            statevector_bytes=state_vector_bytes(c.n_wires),
            shots_per_token_worst=per_token * worst if shot_based else None,
            shots_per_token_measured=rec.shots_measured / tokens if shot_based else None,
            shots_per_token_separate=per_token * worst * n_obs if shot_based else None,
        ))
    return costs


def model_kind(model: nn.Module) -> str:
    """"quantum" when ``model`` runs circuits, else "classical"."""
    return "quantum" if any(isinstance(m, QuantumLayer) for m in model.modules()) else "classical"


def measure_model(name: str, model: QELM, idx: torch.Tensor, directory: Path, eps: float,
             tokenizer: Any = None) -> ModelReport:
    """Measure one model: parameters, file sizes (written under ``directory``), and one forward pass of
    ``idx`` for FLOPs, circuit executions and shots at standard error ``eps``."""
    params, weights, inputs = _parameter_groups(model)
    sizes, notes = serialized_sizes(model, directory, tokenizer=tokenizer, name=name)
    model.eval()
    counter = FlopCounterMode(display=False)
    with _recording(model, counter, eps) as (records, sim_flops), torch.no_grad(), counter:
        model(idx)
    tokens = idx.numel()
    backend = getattr(model, "backend", None)
    # torch FLOPs inside the simulator are only visible when the simulator is torch (default.qubit, qelm.fused)
    sim_visible = backend is not None and getattr(backend, "name", "") in ("default.qubit", "qelm.fused")
    total = counter.get_total_flops()
    return ModelReport(
        name=name, kind=model_kind(model), config=model.config.to_dict(), parameters=params, circuit_weights=weights,
        circuit_inputs=inputs, sizes=sizes, size_notes=notes, tokens_measured=tokens,
        flops_per_token=(total - sim_flops[0]) / tokens,
        simulator_flops_per_token=sim_flops[0] / tokens if sim_visible else None,
        circuits=_circuit_costs(records, tokens, eps),
        backend=backend.describe() if backend is not None else None,
    )


def measure_models(models: Mapping[str, QELM], *, reference: str | None = None, batch_size: int = 2,
                   seed: int = 0, eps: float = 0.01, idx: torch.Tensor | None = None,
                   keep_dir: str | os.PathLike | None = None, tokenizers: Mapping[str, Any] | None = None,
                   setting: str = "models", progress: Callable[[str, int, int], None] | None = None) -> Comparison:
    """Measure already-built models (QELM or ClassicalLM, sharing vocab and context) side by side.

    ``idx``: the ``(B, T)`` token ids of the measuring forward pass; by default ``batch_size`` rows of
    ``context_len`` random ids drawn with ``seed``. ``keep_dir``: keep the written files there (else a
    temp dir is removed; it must be new or empty: :mod:`qelm.folders`). ``reference``: the model that ratios
    are taken to. ``progress(label, done, total)`` is called as each model's measurement starts and when
    all are done."""
    if not models:
        raise ConfigError("nothing to compare: give at least one model")
    if not (isinstance(eps, (int, float)) and 0 < eps < 1):
        raise ConfigError(f"eps={eps!r} is invalid: use a target standard error between 0 and 1, e.g. 0.01")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ConfigError(f"batch_size={batch_size!r} is invalid: use an integer >= 1")
    if reference is not None and reference not in models:
        raise ConfigError(f"reference={reference!r} is not one of the models: {', '.join(models)}")
    first = next(iter(models.values())).config
    if idx is None:
        gen = torch.Generator().manual_seed(seed)
        idx = torch.randint(0, first.vocab_size, (batch_size, first.context_len), generator=gen)  # (B, T)
    for name, model in models.items():
        if model.config.vocab_size != first.vocab_size or model.config.context_len < idx.shape[1]:
            raise ConfigError(f"model {name!r} (vocab_size={model.config.vocab_size}, context_len="
                             f"{model.config.context_len}) cannot read the same tokens as the others "
                             f"(vocab_size={first.vocab_size}, {idx.shape[1]} tokens); compare models of one vocabulary")
    tokenizers = tokenizers or {}
    with contextlib.ExitStack() as stack:
        directory = claim_folder(keep_dir, what="folder to keep the model files in (--keep-files)") \
            if keep_dir is not None else Path(stack.enter_context(tempfile.TemporaryDirectory()))
        reports = []
        for i, (name, model) in enumerate(models.items()):
            if progress is not None:
                progress(f"measuring {name}", i, len(models))
            reports.append(measure_model(name, model, idx, directory, eps, tokenizers.get(name)))
        if progress is not None:
            progress("done", len(models), len(models))
    comp = Comparison(models=reports, reference=reference, eps=float(eps), batch_size=int(idx.shape[0]),
                      setting=setting, verdict="")
    comp.verdict = verdict(comp)
    return comp
