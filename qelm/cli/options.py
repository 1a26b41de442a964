"""The flag vocabulary every command shares: one spelling and one meaning per flag (:data:`VOCABULARY`,
printed by ``qelm --help``). A model field or training setting ``foo_bar`` of a config file is the flag
``--foo-bar`` wherever a command takes it, and ``--set foo_bar=VALUE`` sets any of them.

Renamed flags keep working for one release: :func:`deprecated` prints a note naming the new spelling.
"""

from __future__ import annotations

import argparse
import math
import sys
import tomllib
from typing import Any

from . import nonnegative_float, positive_float, positive_int, seed

VOCABULARY = """\
one vocabulary, every command:
  a config file's field is a flag: [model] n_qubits is --n-qubits, [train] batch_size is --batch-size;
  --set FIELD=VALUE sets any field (repeatable; VALUE is read as TOML: 4, 0.01, true, "fidelity")
  model size:  --vocab-size --d-model --n-heads --d-hidden --n-layers (transformer blocks) --context-len
               --n-qubits (qubits per circuit) --circuit-layers (variational layers per circuit)
  model slots: --embedding --embedding-circuit --attention --fidelity-method --feed-forward --readout
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


# --- renamed flags ----------------------------------------------------------------------------------------------
def deprecated(new: str) -> type[argparse.Action]:
    """An action for an old flag spelling: stores like the new one (``dest`` is set to the new flag's)
    and prints a note naming ``new``. Hidden from ``--help``."""

    class _Deprecated(argparse.Action):
        def __call__(self, parser, namespace, values, option_string=None):
            print(f"{parser.prog}: note: {option_string} is now {new}; the old name goes in the next release",
                  file=sys.stderr)
            setattr(namespace, self.dest, values)

    return _Deprecated


# --- value types ------------------------------------------------------------------------------------------------
def probability(text: str) -> float:
    """A number in (0, 1] (top-p)."""
    value = positive_float(text)
    if value > 1:
        raise argparse.ArgumentTypeError(f"{text} is invalid: use a number in (0, 1]")
    return value


def fraction(text: str) -> float:
    """A number in [0, 1] (min-p)."""
    value = nonnegative_float(text)
    if value > 1:
        raise argparse.ArgumentTypeError(f"{text} is invalid: use a number in [0, 1]")
    return value


def assignment(text: str) -> tuple[str, Any]:
    """``FIELD=VALUE`` of ``--set``: the value read as TOML (``4``, ``0.01``, ``true``, ``"x"``), or as text."""
    name, sep, raw = text.partition("=")
    name = name.strip().replace("-", "_")
    if not sep or not name:
        raise argparse.ArgumentTypeError(f"{text!r} is not FIELD=VALUE (e.g. n_qubits=4)")
    try:
        value = tomllib.loads(f"v = {raw.strip()}")["v"]
    except tomllib.TOMLDecodeError:
        value = raw.strip()  # a bare word: quantum, fidelity, default.mixed
    if isinstance(value, float) and not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"{text!r}: {value} is not a finite number")
    return name, value


# --- model fields -------------------------------------------------------------------------------------------------
#: config field -> (metavar, type, what it is); the flag is the field with dashes
MODEL_FLAGS: dict[str, tuple[str, Any, str]] = {
    "vocab_size": ("V", positive_int, "tokens in the vocabulary"),
    "d_model": ("D", positive_int, "width of the residual stream"),
    "n_heads": ("H", positive_int, "attention heads per block"),
    "d_hidden": ("F", positive_int, "hidden width of the classical feed-forward"),
    "n_layers": ("L", positive_int, "transformer blocks"),
    "context_len": ("C", positive_int, "longest sequence the model reads, in tokens"),
    "n_qubits": ("N", positive_int, "data qubits per circuit"),
    "circuit_layers": ("K", positive_int, "variational layers per circuit"),
    "embedding": ("SLOT", str, "embedding slot: quantum | classical"),
    "embedding_circuit": ("NAME", str, "embedding circuit: angle | polar | amplitude | one registered"),
    "attention": ("SLOT", str, "attention slot: quantum | fidelity | classical"),
    "fidelity_method": ("M", str, "fidelity attention: exact | swap_test"),
    "feed_forward": ("SLOT", str, "feed-forward slot: quantum | classical"),
    "readout": ("R", str, "feature circuits read out: z | zz | probs"),
}


def flag(name: str) -> str:
    """The flag of a config field or setting: ``n_qubits`` -> ``--n-qubits``."""
    return "--" + name.replace("_", "-")


def add_model_flags(parser: argparse.ArgumentParser, defaults: dict[str, Any], source: str, *,
                    fields: tuple[str, ...] | None = None, title: str = "model (a config file's [model] fields)",
                    renamed: dict[str, str] | None = None) -> argparse._ArgumentGroup:
    """Add ``--FIELD`` for each model field (all of :data:`MODEL_FLAGS`, or ``fields``) and ``--set``, each
    help showing the default (``defaults[field]``) and its ``source``. ``renamed``: old flag -> field,
    accepted with a note (:func:`deprecated`)."""
    group = parser.add_argument_group(title)
    for name in fields or tuple(MODEL_FLAGS):
        metavar, kind, what = MODEL_FLAGS[name]
        group.add_argument(flag(name), dest=name, type=kind, metavar=metavar,
                           help=f"{what} (default {defaults.get(name)!s}: {source})")
    for old, name in (renamed or {}).items():
        group.add_argument(old, dest=name, type=MODEL_FLAGS[name][1], action=deprecated(flag(name)),
                           help=argparse.SUPPRESS)
    if fields is None:
        group.add_argument("--set", dest="set", action="append", type=assignment, default=[], metavar="FIELD=VALUE",
                           help="set any config field (repeatable; default: none), e.g. --set readout=zz "
                                "--set adaptive_threshold=true")
    return group


def model_overrides(args: argparse.Namespace, allowed: set[str] | None = None) -> dict[str, Any]:
    """The model fields the flags and ``--set`` give (``--set`` may name any field; ``allowed`` also
    takes the names it may set besides :class:`~qelm.config.QELMConfig`'s, e.g. training settings).
    A field given twice with two values is an error naming both."""
    import dataclasses

    from ..config import QELMConfig

    fields = {f.name for f in dataclasses.fields(QELMConfig)}
    valid = fields | (allowed or set())
    given = {name: getattr(args, name) for name in MODEL_FLAGS if getattr(args, name, None) is not None}
    for name, value in getattr(args, "set", None) or []:
        if name not in valid:
            from . import UserError

            raise UserError(f"--set {name}=...: {name!r} is not a config field; valid fields are "
                            f"{', '.join(sorted(valid))}")
        if name in given and given[name] != value:
            from . import UserError

            raise UserError(f"{name} is given twice ({given[name]!r} and {value!r}): give it once")
        given[name] = value
    return given


# --- sampling -----------------------------------------------------------------------------------------------------
def add_sampling_flags(parser: argparse.ArgumentParser, *, stop: tuple[str, ...] = (), max_new_tokens: int = 200
                       ) -> None:
    """The sampling flags of ``generate`` and ``chat`` (as Hugging Face's ``generate`` names them)."""
    from . import nonnegative_int

    g = parser.add_argument_group("sampling")
    g.add_argument("--max-new-tokens", type=nonnegative_int, default=max_new_tokens, metavar="N",
                   help=f"tokens to sample (default {max_new_tokens})")
    g.add_argument("--temperature", type=positive_float, default=1.0, metavar="T",
                   help="divide the logits by T > 0: smaller is greedier (default 1.0: the model as trained)")
    g.add_argument("--top-k", type=positive_int, metavar="K",
                   help="sample among the K most likely tokens only (default: all)")
    g.add_argument("--top-p", type=probability, metavar="P",
                   help="nucleus: sample among the fewest tokens whose probability reaches P, in (0, 1] "
                        "(default: all)")
    g.add_argument("--min-p", type=fraction, metavar="P",
                   help="drop tokens less likely than P times the most likely one, P in [0, 1] (default: none)")
    g.add_argument("--repetition-penalty", type=positive_float, default=1.0, metavar="R",
                   help="divide the logit of every token already in the text by R (multiply a negative one); "
                        "R > 1 discourages repeats (default 1.0: none)")
    shown = " ".join(repr(s) for s in stop) or "none"
    g.add_argument("--stop", action="append", metavar="TEXT",
                   help=f"end the text where TEXT is sampled, TEXT left out (repeatable; default {shown})")
    g.add_argument("--seed", type=seed, default=0, help="sampling seed: the same seed gives the same text (default 0)")


def sampling_kwargs(args: argparse.Namespace, default_stop: tuple[str, ...] = ()) -> dict[str, Any]:
    """The keyword arguments of :func:`qelm.evaluate.stream_text` the sampling flags give."""
    return {"max_new_tokens": args.max_new_tokens, "temperature": args.temperature, "top_k": args.top_k,
            "top_p": args.top_p, "min_p": args.min_p, "repetition_penalty": args.repetition_penalty,
            "stop": tuple(args.stop) if args.stop is not None else default_stop}


# --- output -------------------------------------------------------------------------------------------------------
def add_json_flag(parser: argparse.ArgumentParser, what: str) -> None:
    """``--json [FILE]``: ``what`` as JSON into FILE, or onto stdout without one."""
    parser.add_argument("--json", nargs="?", const="-", metavar="FILE",
                        help=f"{what} as JSON: into FILE, or without FILE onto stdout instead of the text "
                             f"(default: text only)")


def json_to_stdout(args: argparse.Namespace) -> bool:
    return getattr(args, "json", None) == "-"
