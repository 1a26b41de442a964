"""What ``qelm --help`` shows without importing any command: each command's name, its one-line help and the
module of :mod:`qelm.cli` that registers it, and the flag vocabulary (:data:`VOCABULARY`) every command
shares; and the two imports the command line makes by name: a command's module, and what ``--import`` names (a
module or a Python file that registers circuits). Importing a command module pulls torch and PennyLane (seconds), so
the command line imports only the one whose command runs; ``tests/test_cli_startup.py`` checks this table against what the modules register.
"""

from __future__ import annotations

import argparse
import importlib

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
    parser's choices and in ``qelm draw --list``): :func:`qelm.circuits.import_circuits` of each, a module or a
    Python file, either with ``:NAME``. Returns the one-line error of the first that fails, else None; an error
    raised inside a module that was found keeps its traceback (a bug of that module, shown as one)."""
    if not modules:
        return None
    from ..circuits import import_circuits  # torch and PennyLane: only when --import is used
    from ..errors import QelmError

    for given in modules:
        try:
            import_circuits(given)
        except QelmError as e:
            if not given:
                return "--import takes a module or a Python file (e.g. --import my_circuits or --import my_circuits.py)"
            return f"--import {given}: {e}"
    return None
