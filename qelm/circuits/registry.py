"""Circuits by name: the built-in ones, and those registered with :func:`register_circuit`; the contract a
circuit keeps to stand in a model's slot (:data:`SLOTS`, :func:`check_slot`)."""

from __future__ import annotations

import importlib
import importlib.util
import os
import sys
from pathlib import Path
from collections.abc import Iterable
from typing import TypeVar

import pennylane as qml
import torch

from ..errors import ConfigError
from .base import Circuit
from .embeddings import AmplitudeEmbeddingCircuit, AngleEmbeddingCircuit, PolarEmbeddingCircuit
from .variational import (Ansatz14Circuit, FeedForwardCircuit, FidelityStateCircuit, ReuploadingCircuit,
                          SwapTestCircuit)

__all__ = ["CIRCUITS", "SLOTS", "IMPORTED", "build_circuit", "register_circuit", "embedding_circuits", "slot_circuits",
           "check_slot", "slot_problem", "unknown_circuit", "import_circuits", "imports_for"]

CIRCUITS: dict[str, type[Circuit]] = {
    c.name: c
    for c in (
        AngleEmbeddingCircuit,
        PolarEmbeddingCircuit,
        AmplitudeEmbeddingCircuit,
        ReuploadingCircuit,
        FidelityStateCircuit,
        SwapTestCircuit,
        FeedForwardCircuit,
        Ansatz14Circuit,
    )
}
"""Every circuit class by name: the built-in ones (``angle``, ``polar``, ``amplitude``, ``attention``,
``fidelity``, ``swap_test``, ``feed_forward``, ``ansatz14``) and those added by :func:`register_circuit`.
Build one with :func:`build_circuit`."""


#: The slots a circuit can fill, each with the config field that names its circuit and the contract a circuit
#: of that slot keeps. Every slot circuit sets ``kind`` to the slot's name, returns expectations
#: (``returns = "expval"``: its readout features), takes one flat vector of ``n_inputs`` data numbers per
#: instance (``input_shape == (n_inputs,)``) and any ``weight_shape``; a layer reads ``n_outputs`` features
#: from each instance. :func:`check_slot` checks all of it, once per circuit size.
SLOTS: dict[str, tuple[str, str]] = {
    "embedding": ("embedding_circuit",
                  "inputs: a token's own learned vector of n_inputs numbers (the layer holds one per vocabulary "
                  "entry); weights: one weight_shape set shared by every token; outputs: n_outputs features per "
                  "token, widened to d_model by a linear layer (plus a learned position embedding)"),
    "attention": ("attention_circuit",
                  "inputs: one head's slice of the token, n_inputs numbers (a linear layer reduces d_model to "
                  "n_heads * n_inputs); weights: one weight_shape set per head and per query, key and value "
                  "circuit, (n_heads, 3, *weight_shape); outputs: n_outputs features each for the query, key and "
                  "value. Fidelity attention runs the same circuit for its state (exact) or inside a swap test, "
                  "with one weight set per head"),
    "feed_forward": ("feed_forward_circuit",
                     "inputs: the token reduced by a linear layer to n_inputs numbers; weights: one weight_shape set "
                     "per block; outputs: n_outputs features per token, widened back to d_model by a linear layer"),
}
"""Slot name -> (the :class:`~qelm.QELMConfig` field that names its circuit, the slot's contract in words)."""


def embedding_circuits() -> tuple[str, ...]:
    """Names of every registered embedding circuit (built-in and :func:`register_circuit`-ed)."""
    return slot_circuits("embedding")


def _fills_slot(cls: type[Circuit]) -> bool:
    """Whether a circuit class of a slot's kind keeps the slot's shape of contract: expectations out, one flat
    input vector in. The built-in ``fidelity`` and ``swap_test`` are of kind "attention" but are the fidelity
    mode's own circuits (a state; a pair of states), derived from the attention circuit, not choices of it."""
    if cls.returns != "expval":
        return False
    try:
        probe = cls(n_qubits=2, n_layers=1)
        return tuple(probe.input_shape) == (probe.n_inputs,)
    except Exception:  # a circuit of your own may refuse this size: its full check comes with the model's
        return True


def slot_circuits(slot: str) -> tuple[str, ...]:
    """Names of the registered circuits (built-in and :func:`register_circuit`-ed) that a slot can run.

    Args:
        slot: ``"embedding"``, ``"attention"`` or ``"feed_forward"`` (a key of :data:`SLOTS`).

    Returns:
        The names whose class has ``kind == slot`` and keeps the slot's contract, in registration order.

    Examples:
        >>> from qelm.circuits import slot_circuits
        >>> slot_circuits("embedding"), slot_circuits("attention"), slot_circuits("feed_forward")
        (('angle', 'polar', 'amplitude'), ('attention',), ('feed_forward',))
    """
    if slot not in SLOTS:
        raise ConfigError(f"slot {slot!r} is unknown: choose one of {', '.join(SLOTS)}")
    return tuple(n for n, c in CIRCUITS.items() if c.kind == slot and _fills_slot(c))


def unknown_circuit(name: str, slot: str | None = None) -> str:
    """The message for a circuit name that is not registered: what is, and how to register one (loading
    a checkpoint imports no code, so its circuits must be registered in the process that loads it)."""
    known = slot_circuits(slot) if slot else tuple(sorted(CIRCUITS))
    where = f"{slot} circuits" if slot else "circuits"
    return (f"no circuit named {name!r} is registered in this process (registered {where}: {', '.join(known)}); "
            f"register a circuit of your own with qelm.circuits.register_circuit before building or loading a model "
            f"that names it: import the module that registers it (on the command line: --import MODULE or "
            f"--import FILE.py)")


def slot_problem(name: object, slot: str) -> str | None:
    """Why a config cannot name circuit ``name`` in ``slot`` (not registered, of another kind, or one of the
    fidelity mode's own circuits), in words; None when it can."""
    if not isinstance(name, str) or name not in CIRCUITS:
        return unknown_circuit(str(name), slot)
    if name in slot_circuits(slot):
        return None
    kind = CIRCUITS[name].kind
    what = (f"circuit {name!r} is of kind {kind!r}" if kind != slot else
            f"circuit {name!r} is one of the fidelity mode's own circuits, built from attention_circuit")
    return f"{what}; the {slot} slot runs one of {', '.join(slot_circuits(slot))} (kind {slot!r})"


_CHECKED: dict[tuple, None] = {}  # (class, key, slot) of circuits that passed check_slot
_C = TypeVar("_C", bound=Circuit)


def check_slot(circuit: _C, slot: str) -> _C:
    """Check that ``circuit`` keeps the contract of ``slot`` (see :data:`SLOTS`) before a layer is built on it,
    so that a circuit of your own that cannot stand there is refused at once, in one line saying what is wrong,
    rather than deep inside its first forward pass. Checked once per class, size and readout.

    The checks: ``kind`` is the slot's name; ``returns`` is ``"expval"``; ``input_shape`` is ``(n_inputs,)`` with
    ``n_inputs >= 1``; ``weight_shape`` holds non-negative integers; ``n_outputs >= 1``; ``angles(inputs,
    weights)`` of two instances is ``(2, n_angles)``; ``apply`` runs on such a vector and places gates only on
    the circuit's ``n_wires`` wires. Whether a backend can run its gates is the backend's check
    (:meth:`qelm.backends.Backend.check_circuit`).

    Args:
        circuit: a built circuit (:func:`build_circuit`).
        slot: ``"embedding"``, ``"attention"`` or ``"feed_forward"``.

    Returns:
        ``circuit`` itself.

    Raises:
        ConfigError: the circuit breaks the contract; the message names the circuit and what is wrong.

    Examples:
        >>> from qelm.circuits import build_circuit, check_slot
        >>> check_slot(build_circuit("feed_forward", n_qubits=2, n_layers=1), "feed_forward").name
        'feed_forward'
        >>> check_slot(build_circuit("angle", n_qubits=2, n_layers=1), "attention")
        Traceback (most recent call last):
        ...
        qelm.errors.ConfigError: circuit 'angle' cannot fill the attention slot: its kind is 'embedding'; a circuit for this slot sets kind = 'attention'
    """
    if slot not in SLOTS:
        raise ConfigError(f"slot {slot!r} is unknown: choose one of {', '.join(SLOTS)}")
    key = (type(circuit), circuit.key, slot)
    if key in _CHECKED:
        return circuit

    def bad(why: str) -> ConfigError:
        return ConfigError(f"circuit {circuit.name!r} cannot fill the {slot} slot: {why}")

    if circuit.kind != slot:
        raise bad(f"its kind is {circuit.kind!r}; a circuit for this slot sets kind = {slot!r}")
    if circuit.returns != "expval":
        raise bad(f"it returns {circuit.returns!r}; a slot reads features, so set returns = 'expval' (the default)")
    try:
        n_inputs, input_shape = circuit.n_inputs, tuple(circuit.input_shape)
        weight_shape, n_outputs, n_angles = tuple(circuit.weight_shape), circuit.n_outputs, circuit.n_angles
    except NotImplementedError:
        raise bad("it does not define n_inputs (a property: the data numbers one instance takes)") from None
    if isinstance(n_inputs, bool) or not isinstance(n_inputs, int) or n_inputs < 1:
        raise bad(f"n_inputs={n_inputs!r}; it must be an integer >= 1")
    if input_shape != (n_inputs,):
        raise bad(f"input_shape={input_shape}; a slot gives each instance one flat vector, ({n_inputs},)")
    if not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in weight_shape):
        raise bad(f"weight_shape={weight_shape}; it must be a tuple of integers >= 0")
    if n_outputs < 1:
        raise bad(f"n_outputs={n_outputs}; it must read out at least one feature")
    inputs, weights = torch.zeros(2, n_inputs, dtype=torch.float64), torch.zeros(weight_shape, dtype=torch.float64)
    try:
        angles = circuit.angles(inputs, weights)
    except Exception as e:  # a circuit of your own: whatever it raises is reported in one line
        raise bad(f"angles(inputs of shape (2, {n_inputs}), weights of shape {weight_shape}) raised "
                  f"{type(e).__name__}: {e}") from None
    if tuple(angles.shape) != (2, n_angles):
        raise bad(f"angles() of 2 instances has shape {tuple(angles.shape)}, not (2, n_angles={n_angles})")
    try:
        tape = qml.tape.make_qscript(circuit.apply)(torch.arange(n_angles, dtype=torch.float64))
    except Exception as e:
        raise bad(f"apply() of an angle vector of n_angles={n_angles} raised {type(e).__name__}: {e}") from None
    if not tape.operations:
        raise bad("apply() places no gates")
    outside = sorted(set(tape.wires.tolist()) - set(circuit.wires), key=str)
    if outside:
        raise bad(f"apply() places gates on wire(s) {', '.join(map(str, outside))}, outside its n_wires="
                  f"{circuit.n_wires} wires 0..{circuit.n_wires - 1}")
    _CHECKED[key] = None
    return circuit


def register_circuit(cls: type[Circuit]) -> type[Circuit]:
    """Make a :class:`Circuit` subclass usable by name, in the slot its ``kind`` names (:data:`SLOTS`):
    ``QELMConfig(embedding_circuit=cls.name)`` for ``kind = "embedding"``, ``attention_circuit`` for
    ``"attention"``, ``feed_forward_circuit`` for ``"feed_forward"``; and let checkpoints that name it load.
    Usable as a class decorator. Registering the same class again is allowed (a module imported twice).

    Loading a checkpoint never imports code: it finds circuits only in this registry, so register the class
    (import the module that defines it; on the command line, ``--import``) before loading a model that uses
    it, or the load says which circuit is missing.

    Args:
        cls: the subclass; its ``name`` is the name it is registered under.

    Returns:
        ``cls`` itself, so the function works as a decorator.

    Raises:
        TypeError: ``cls`` is not a :class:`Circuit` subclass.
        ConfigError: another class is already registered under that name.
    """
    if not (isinstance(cls, type) and issubclass(cls, Circuit)):
        raise TypeError(f"register_circuit takes a Circuit subclass, got {cls!r}")
    if cls.name in CIRCUITS and CIRCUITS[cls.name] is not cls:
        raise ConfigError(f"a circuit named {cls.name!r} is already registered ({CIRCUITS[cls.name].__qualname__}): "
                         "give yours another name")
    CIRCUITS[cls.name] = cls
    return cls


def build_circuit(name: str, n_qubits: int = 4, n_layers: int = 2, readout: str = "z") -> Circuit:
    """Build a circuit by name: one of ``CIRCUITS`` (angle, polar, amplitude, attention, fidelity,
    swap_test, feed_forward, ansatz14, or one registered with :func:`register_circuit`).

    Args:
        name: the circuit's name.
        n_qubits: data qubits.
        n_layers: variational layers.
        readout: ``"z"``, ``"zz"`` or ``"probs"`` (for circuits whose outputs are features).

    Returns:
        The circuit, which knows its own sizes (``n_inputs``, ``weight_shape``, ``n_angles``, ``n_outputs``).

    Raises:
        ConfigError: the name is not registered, or a size or the readout is invalid.

    Examples:
        >>> from qelm import build_circuit
        >>> circuit = build_circuit("angle", n_qubits=2, n_layers=1)
        >>> circuit.n_inputs, circuit.weight_shape, circuit.n_angles, circuit.n_outputs
        (2, (1, 2, 3), 8, 2)
        >>> build_circuit("angle", 2, 1, readout="zz").n_outputs  # <Z_0>, <Z_1>, <Z_0 Z_1>
        3
    """
    if name not in CIRCUITS:
        raise ConfigError(f"unknown circuit {name!r}: valid circuits are {', '.join(sorted(CIRCUITS))}; a circuit of "
                          "your own must be registered first with qelm.circuits.register_circuit (import the module "
                          "that registers it; on the command line, --import MODULE or --import FILE.py)")
    return CIRCUITS[name](n_qubits=n_qubits, n_layers=n_layers, readout=readout)


#: circuit name -> (what :func:`import_circuits` was given when that import registered it, the class it registered),
#: so that a process of its own (a benchmark's, a sweep worker's) can import it again: :func:`imports_for`
IMPORTED: dict[str, tuple[str, type[Circuit]]] = {}


def imports_for(names: Iterable[str] | None = None) -> list[str]:
    """What a new process must give :func:`import_circuits` to register the circuits ``names`` (default: every
    registered one) as this process has them: the imports that registered them, for those still registered as
    those imports left them. Sorted, each once."""
    chosen = CIRCUITS if names is None else names
    return sorted({given for name, (given, cls) in IMPORTED.items() if name in chosen and CIRCUITS.get(name) is cls})


def import_circuits(given: str) -> tuple[str, ...]:
    """Import a module or a Python file that registers circuits (what the command line's ``--import`` does).

    Args:
        given: a module as ``python -m`` finds it (the current folder first: ``my_circuits``, ``pkg.circuits``),
            or the path of a Python file (``my_circuits.py``, imported as the module named by its stem); either
            may end in ``:NAME``, a :class:`Circuit` subclass of it (or a list or tuple of them) to register, for a
            module that defines circuits without registering them.

    Returns:
        The names of the circuits it registered (those of its classes, already registered, included).

    Raises:
        ConfigError: no such module or file, no such ``NAME`` or not a circuit class, or the import registered no
            circuit; one line. An error raised by the module's own code is not caught: it keeps its traceback.
    """
    target, _, attribute = given.partition(":")
    if not target:
        raise ConfigError("give a module or a Python file (e.g. my_circuits or my_circuits.py)")
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    before = dict(CIRCUITS)
    if target.endswith(".py") or "/" in target or os.sep in target:
        path = Path(target)
        if not path.is_file():
            raise ConfigError(("no such Python file" if not path.exists() else "not a Python file") +
                              " (give a module name, or the path of a .py file that registers circuits)")
        module = _import_file(path)
    else:
        try:
            module = importlib.import_module(target)
        except ModuleNotFoundError as e:
            if e.name is None or not (target == e.name or target.startswith(e.name + ".")):
                raise  # the module was found; something it imports is missing: its own error, with its traceback
            raise ConfigError(f"{e} (a module in the current folder, or an installed package)") from None
    if attribute:
        if not hasattr(module, attribute):
            raise ConfigError(f"{target} has no attribute {attribute!r}")
        found = getattr(module, attribute)
        classes = list(found) if isinstance(found, (list, tuple)) else [found]
        for cls in classes:
            if not (isinstance(cls, type) and issubclass(cls, Circuit)):
                raise ConfigError(f"{attribute} is {cls!r}, not a qelm.circuits.Circuit subclass (or a list of them)")
            register_circuit(cls)
    mine = tuple(n for n, c in CIRCUITS.items() if n not in before or c.__module__ == module.__name__)
    if not mine:
        raise ConfigError("it registers no circuit: decorate your Circuit subclasses with "
                          f"@qelm.circuits.register_circuit, or name one to register: {target}:MyCircuit")
    for name in mine:
        if IMPORTED.get(name, (None, None))[1] is not CIRCUITS[name]:
            IMPORTED[name] = (given, CIRCUITS[name])
    return mine


def _import_file(path: Path):
    """Import the Python file ``path`` as the module named by its stem (so its classes pickle by that name)."""
    spec = importlib.util.spec_from_file_location(path.stem, path)
    if spec is None or spec.loader is None:  # pragma: no cover - a .py file always has a loader
        raise ConfigError(f"cannot import {str(path)!r}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[path.stem] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        sys.modules.pop(path.stem, None)
        raise
    return module
