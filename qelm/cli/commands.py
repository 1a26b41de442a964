"""What ``qelm --help`` shows without importing any command: each command's name, its one-line help and the
module of :mod:`qelm.cli` that registers it, and the flag vocabulary (:data:`VOCABULARY`) every command
shares; and the two imports the command line makes by name: a command's module, and what ``--import`` names (a
module or a Python file that registers circuits). Importing a command module pulls torch and PennyLane (seconds), so
the command line imports only the one whose command runs; ``tests/test_cli_startup.py`` checks this table against what the modules register.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from pathlib import Path

#: command name -> (module of qelm.cli that registers it, its one-line help), in the order ``qelm --help`` lists them
COMMANDS: dict[str, tuple[str, str]] = {
    "demo": ("train", "train a tiny QELM and two classical baselines on the bundled corpus and compare"),
    "train": ("train", "train a QELM and its classical baselines on a text file"),
    "eval": ("evaluate", "perplexity and the other comparison metrics of a checkpoint on a text file"),
    "generate": ("generate", "sample text from a checkpoint"),
    "chat": ("generate", "talk with a checkpoint: each line you type, the model continues"),
    "compare": ("compare", "parameters, measured sizes, FLOPs and circuit cost: QELM vs classical twins"),
    "sweep": ("sweep", "search QELM configurations against classical models of equal parameters"),
    "draw": ("draw", "draw a circuit, export it to OpenQASM, summarise its resources, or list the circuits"),
    "gallery": ("draw", "regenerate (or check) the gallery of every built-in circuit"),
    "plot": ("draw", "plot attention maps of checkpoints or training curves of runs"),
    "bench": ("bench", "speed and memory across sequence lengths and backends, beside the classical twin"),
    "data": ("ptb", "fetch a benchmark data set (Penn Treebank)"),
    "ptb": ("ptb", "train and test a row of the Quixer Penn Treebank table"),
    "completion": ("completion", "print a shell completion script (bash or zsh)"),
}

VOCABULARY = """\
one vocabulary, every command:
  a config file's field is a flag: [model] n_qubits is --n-qubits, [train] batch_size is --batch-size;
  --set FIELD=VALUE sets any field (repeatable; VALUE is read as TOML: 4, 0.01, true, "fidelity")
  model size:  --vocab-size --d-model --n-heads --d-hidden --n-layers (transformer blocks) --context-len
               --n-qubits (qubits per circuit) --circuit-layers (variational layers per circuit)
  model slots: --embedding --embedding-circuit --attention --attention-circuit --fidelity-method
               --feed-forward --feed-forward-circuit --readout
  --import MODULE|FILE.py[:NAME]  circuits of your own, registered first (qelm draw --list lists them)
  --config FILE     a TOML file: [model] fields and, for train, [train] settings
  --checkpoint DIR  a checkpoint folder (repeatable where a command compares several)
  --backend NAME    one simulator (repeat the flag where a command measures several: bench)
  --data FILE       a UTF-8 text file      --prompt TEXT  the text a model continues
  --out PATH        where a command writes (a run folder for train and demo, else a file)
  --json [FILE]     every figure as JSON: into FILE, or without FILE onto stdout
  --plot FILE       a figure (.png, .svg or .pdf)
  --seed S, --threads N, --device cpu|cuda, --batch-size B: the same meaning everywhere
sampling (generate, chat): --max-new-tokens --temperature --top-k --top-p --min-p --repetition-penalty --stop
Every --help shows each flag's default and where it comes from."""


def register(module: str, subparsers: argparse._SubParsersAction) -> None:
    """Import the command module ``module`` (a value of :data:`COMMANDS`) and register its commands."""
    importlib.import_module(f"{__package__}.{module}").register(subparsers)


def import_modules(modules: list[str]) -> str | None:
    """Import what each ``--import`` names, before the parser is built (a circuit it registers is then one of the
    parser's choices and in ``qelm draw --list``): a module as ``python -m`` would find it (the current folder
    first), or a Python file by its path (``my_circuits.py``); either may end in ``:NAME``, a class of it to
    register (or a list of classes), for a module that defines circuits without registering them. Each must leave
    at least one circuit registered by it. Returns the one-line error of the first that fails, else None; an error
    raised inside a module that was found keeps its traceback (it is a bug of that module, shown as one)."""
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    for given in modules:
        if not given:
            return "--import takes a module or a Python file (e.g. --import my_circuits or --import my_circuits.py)"
        failed = _import_circuits(given)
        if failed:
            return f"--import {given}: {failed}"
    return None


def _import_circuits(given: str) -> str | None:
    """Import ``given`` (``MODULE``, ``FILE.py``, either with ``:NAME``); the reason it fails, else None."""
    from ..circuits import CIRCUITS, Circuit, register_circuit  # torch and PennyLane: only when --import is used

    target, _, attribute = given.partition(":")
    before = dict(CIRCUITS)
    if target.endswith(".py") or os.sep in target or "/" in target:
        path = Path(target)
        if not path.is_file():
            return ("no such Python file" if not path.exists() else "not a Python file") + \
                " (give a module name, or the path of a .py file that registers circuits)"
        module = _import_file(path)
    else:
        try:
            module = importlib.import_module(target)
        except ModuleNotFoundError as e:
            if e.name is None or not (target == e.name or target.startswith(e.name + ".")):
                raise  # the module was found; something it imports is missing: its own error, with its traceback
            return f"{e} (a module in the current folder, or an installed package)"
    if attribute:
        if not hasattr(module, attribute):
            return f"{target} has no attribute {attribute!r}"
        found = getattr(module, attribute)
        classes = list(found) if isinstance(found, (list, tuple)) else [found]
        for cls in classes:
            if not (isinstance(cls, type) and issubclass(cls, Circuit)):
                return f"{attribute} is {cls!r}, not a qelm.circuits.Circuit subclass (or a list of them)"
            register_circuit(cls)
    mine = [n for n, c in CIRCUITS.items() if n not in before or c.__module__ == module.__name__]
    if not mine:
        return ("it registers no circuit: decorate your Circuit subclasses with @qelm.circuits.register_circuit, or "
                f"name one to register: --import {target}:MyCircuit")
    return None


def _import_file(path: Path):
    """Import the Python file ``path`` as the module named by its stem (so its classes pickle by that name)."""
    import importlib.util

    name = path.stem
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:  # pragma: no cover - a .py file always has a loader
        raise ImportError(f"cannot import {str(path)!r}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        sys.modules.pop(name, None)
        raise
    return module
