"""The flag vocabulary every command shares: one spelling and one meaning per flag (:data:`.commands.VOCABULARY`,
printed by ``qelm --help``). A model field or training setting ``foo_bar`` of a config file is the flag
``--foo-bar`` wherever a command takes it, and ``--set foo_bar=VALUE`` sets any of them. Here too: the
argument types that refuse a bad value naming its flag, the checks of output paths made before any work,
and the runtime flags (backend, threads, noise and shots).
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import os
import tempfile
import tomllib
from pathlib import Path
from typing import Any

import torch

from ..backends import MAX_SHOTS
from ..backends.mitigation import parse_mitigation
from ..backends.noise import parse_noise
from ..config import QELMConfig
from ..data import MAX_SEED
from ..errors import QelmError

MAX_THREADS = 1024  # torch threads per process: more only queue for the same cores


class UserError(QelmError):
    """An error in what the command line was given; like every :class:`~qelm.errors.QelmError`, printed as its
    message only."""


# --- argument types: a bad value is refused by argparse, naming its flag -----------------------------------
def _integer(text: str, low: int, high: int | None, what: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value < low or (high is not None and value > high):
        raise argparse.ArgumentTypeError(f"{text} is invalid: use {what}")
    return value


def _number(text: str, low: float, inclusive: bool, what: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not math.isfinite(value) or value < low or (value == low and not inclusive):
        raise argparse.ArgumentTypeError(f"{text} is invalid: use {what}")
    return value


def positive_int(text: str) -> int:
    return _integer(text, 1, None, "an integer >= 1")


def nonnegative_int(text: str) -> int:
    return _integer(text, 0, None, "an integer >= 0")


def threads(text: str) -> int:
    return _integer(text, 1, MAX_THREADS, f"an integer from 1 to {MAX_THREADS}")


def seed(text: str) -> int:
    return _integer(text, 0, MAX_SEED, f"an integer from 0 to {MAX_SEED} (2**63 - 1)")


def positive_float(text: str) -> float:
    return _number(text, 0.0, False, "a finite number > 0")


def nonnegative_float(text: str) -> float:
    return _number(text, 0.0, True, "a finite number >= 0")


def check_output_file(path: str | os.PathLike, flag: str, *, make_parents: bool = False) -> None:
    """Before any work: refuse an output file that cannot be written (a folder; a read-only parent folder;
    a missing one unless ``make_parents``), naming the flag and the file."""
    target = Path(path)
    if target.is_dir():
        raise UserError(f"{flag} {str(path)!r} is a folder; give a file name")
    if not make_parents and not target.parent.is_dir():
        raise UserError(f"{flag} {str(path)!r}: its folder {str(target.parent)!r} does not exist; create it first")
    _check_folder_takes_files(target.parent, flag, path)


def check_output_folder(path: str | os.PathLike, flag: str) -> None:
    """Before any work: refuse an output folder that cannot be made or written, naming the flag."""
    if Path(path).exists() and not Path(path).is_dir():
        raise UserError(f"{flag} {str(path)!r} is a file; give a folder")
    _check_folder_takes_files(Path(path), flag, path)


def _check_folder_takes_files(folder: Path, flag: str, given: str | os.PathLike) -> None:
    """``folder``, or the one it would be made in, takes new files (probed with a temporary file)."""
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    try:
        if not folder.is_dir():
            raise NotADirectoryError(f"{str(folder)!r} is a file, not a folder")
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as e:
        why = (str(e) if isinstance(e, NotADirectoryError)
               else f"folder {str(folder)!r} is not writable ({e.strerror or e})")
        raise UserError(f"{flag} {str(given)!r}: {why}; choose another path") from None


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
    "attention_circuit": ("NAME", str, "attention heads' circuit: attention | one registered"),
    "fidelity_method": ("M", str, "fidelity attention: exact | swap_test"),
    "feed_forward": ("SLOT", str, "feed-forward slot: quantum | classical"),
    "feed_forward_circuit": ("NAME", str, "feed-forward circuit: feed_forward | one registered"),
    "readout": ("R", str, "feature circuits read out: z | zz | probs"),
}


def flag(name: str) -> str:
    """The flag of a config field or setting: ``n_qubits`` -> ``--n-qubits``."""
    return "--" + name.replace("_", "-")


def add_model_flags(parser: argparse.ArgumentParser, defaults: dict[str, Any], source: str, *,
                    fields: tuple[str, ...] | None = None, title: str = "model (a config file's [model] fields)"
                    ) -> argparse._ArgumentGroup:
    """Add ``--FIELD`` for each model field (all of :data:`MODEL_FLAGS`, or ``fields``) and ``--set``, each
    help showing the default (``defaults[field]``) and its ``source``."""
    group = parser.add_argument_group(title)
    for name in fields or tuple(MODEL_FLAGS):
        metavar, kind, what = MODEL_FLAGS[name]
        group.add_argument(flag(name), dest=name, type=kind, metavar=metavar,
                           help=f"{what} (default {defaults.get(name)!s}: {source})")
    if fields is None:
        group.add_argument("--set", dest="set", action="append", type=assignment, default=[], metavar="FIELD=VALUE",
                           help="set any config field (repeatable; default: none), e.g. --set readout=zz "
                                "--set adaptive_threshold=true")
    return group


def model_overrides(args: argparse.Namespace, allowed: set[str] | None = None) -> dict[str, Any]:
    """The model fields the flags and ``--set`` give (``--set`` may name any field; ``allowed`` also
    takes the names it may set besides :class:`~qelm.config.QELMConfig`'s, e.g. training settings).
    A field given twice with two values is an error naming both."""
    fields = {f.name for f in dataclasses.fields(QELMConfig)}
    valid = fields | (allowed or set())
    given = {name: getattr(args, name) for name in MODEL_FLAGS if getattr(args, name, None) is not None}
    for name, value in getattr(args, "set", None) or []:
        if name not in valid:
            raise UserError(f"--set {name}=...: {name!r} is not a config field; valid fields are "
                            f"{', '.join(sorted(valid))}")
        if name in given and given[name] != value:
            raise UserError(f"{name} is given twice ({given[name]!r} and {value!r}): give it once")
        given[name] = value
    return given


# --- sampling -----------------------------------------------------------------------------------------------------
def add_sampling_flags(parser: argparse.ArgumentParser, *, stop: tuple[str, ...] = (), max_new_tokens: int = 200
                       ) -> None:
    """The sampling flags of ``generate`` and ``chat`` (as Hugging Face's ``generate`` names them)."""
    g = parser.add_argument_group("sampling")
    g.add_argument("--max-new-tokens", type=nonnegative_int, default=max_new_tokens, metavar="N",
                   help=f"tokens to sample (default {max_new_tokens})")
    g.add_argument("--temperature", type=nonnegative_float, default=1.0, metavar="T",
                   help="divide the logits by T: smaller is greedier, 0 is greedy (default 1.0: the model as trained)")
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


# --- runtime: backend, threads, noise -------------------------------------------------------------------------
DEFAULT_THREADS = 1  # see --threads
_THREADS_HELP = ("torch CPU threads per process (default 1: these models' tensors are too small to gain from "
                 "intra-op threads, and on a busy 2-core machine 2 threads made a QELM step ~10x slower than 1)")


def add_runtime_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--backend", metavar="NAME", help="simulator for the circuits (default: the config's; weights are unchanged)")
    parser.add_argument("--threads", type=threads, default=DEFAULT_THREADS, metavar="N", help=_THREADS_HELP)


def add_noise_flags(parser: argparse.ArgumentParser, *, train: bool) -> None:
    group = parser.add_argument_group("noise and shots (backend qiskit.aer)")
    group.add_argument("--noise", metavar="SPEC",
                       help="noise model: depolarizing[:p1=P,p2=P], thermal[:t1=S,t2=S,time1=S,time2=S], "
                            "readout[:p0to1=P,p1to0=P], joined with '+', or a device's calibration (fake_manila, "
                            "fake_sherbrooke, ...: circuits are transpiled to it); needs --shots (default: none, exact)")
    group.add_argument("--shots", type=int, help="measurements per circuit (default: exact expectations)")
    if train:
        group.add_argument("--grad", choices=("parameter-shift", "spsa"),
                           help="circuit gradients on qiskit.aer: parameter-shift (2 circuits per angle, the default) "
                                "or spsa (2 circuits per sample)")
    else:
        group.add_argument("--mitigate", metavar="SPEC",
                           help="error mitigation: zne[:fit=richardson|linear,scales=1/3/5,fold=global|random], "
                                "readout[:shots=N], twirl[:n=4], joined with '+'; needs --noise (default: none)")


def noise_backend(args: argparse.Namespace) -> tuple[str | None, dict[str, Any]]:
    """``(backend, options)`` from --noise, --shots, --mitigate and --grad, every one checked before any work;
    ``(args.backend, {})`` when none is given."""
    noise, shots = args.noise, args.shots
    mitigation, grad = getattr(args, "mitigate", None), getattr(args, "grad", None)
    if noise is None and shots is None and mitigation is None and grad is None:
        return args.backend, {}
    if shots is not None and not 1 <= shots <= MAX_SHOTS:
        raise UserError(f"--shots {shots} is invalid: use an integer from 1 to {MAX_SHOTS} (2**31 - 1)")
    backend = args.backend or "qiskit.aer"
    for flag, value in (("--noise", noise), ("--mitigate", mitigation), ("--grad", grad)):
        if value is not None and backend != "qiskit.aer":
            raise UserError(f"{flag} runs on backend qiskit.aer only (noise models, shots, batched parameter shift); "
                            f"--backend {backend} cannot: use --backend qiskit.aer or drop --backend")
    if noise is not None:
        try:
            noise = parse_noise(noise).spec
        except ValueError as e:
            raise UserError(f"--noise {args.noise!r} is invalid: {str(e).split(': ', 1)[-1]}") from None
        if shots is None:
            raise UserError("--noise needs --shots: noisy hardware answers with measured bitstrings, and readout "
                            "errors and mitigation act on them (e.g. --shots 8192)")
    if mitigation is not None:
        if noise is None:
            raise UserError("--mitigate needs --noise (a noise model to mitigate) and --shots")
        try:
            parse_mitigation(mitigation)
        except ValueError as e:
            raise UserError(f"--mitigate {mitigation!r} is invalid: {str(e).split(': ', 1)[-1]}") from None
    options = {"shots": shots, "noise": noise, "mitigation": mitigation,
               "gradient": grad.replace("-", "_") if grad else None,
               "seed": (getattr(args, "seed", None) or 0) if (shots is not None or grad) else None}
    return backend, {k: v for k, v in options.items() if v is not None}


def set_threads(args: argparse.Namespace) -> None:
    torch.set_num_threads(args.threads)
