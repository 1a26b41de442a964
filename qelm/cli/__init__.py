"""The ``qelm`` command line: thin. Each sub-module here registers its sub-commands, parses arguments,
calls the library and prints. User errors (bad input, missing files, unavailable backends) become one
line on stderr and exit code 2; anything else is a bug and keeps its traceback.

Every argument is checked before a command does any work: numbers by their argparse type (the types
below: finite, in range, named by their flag), files and folders by the command before its first step.
"""

from __future__ import annotations

import argparse
import importlib
import math
import os
import sys
from pathlib import Path

from ..backends import BackendUnavailable
from ..data import MAX_SEED
from ..disk import DiskFull, disk_full
from ..files import FolderInUse
from ..redact import redact

# sub-modules that register commands, in the order `qelm --help` lists them
_COMMAND_MODULES = ("train", "compare", "sweep", "draw", "bench")


MAX_THREADS = 1024  # torch threads per process: more only queue for the same cores


class UserError(Exception):
    """An error the user can fix; the CLI prints its message only."""


USER_ERRORS = (UserError, DiskFull, ValueError, BackendUnavailable, FileNotFoundError, FileExistsError, PermissionError,
               IsADirectoryError, NotADirectoryError, UnicodeDecodeError, FolderInUse, FloatingPointError)


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors, like every other error of the command line."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


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
    import tempfile

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


def show_progress() -> bool:
    """Progress bars on a terminal only: a pipe or a log file gets none."""
    return sys.stderr.isatty()


def version_text() -> str:
    """``qelm --version``: qelm's version, the distribution that installs it, and the versions it runs on."""
    import platform
    from importlib import metadata

    from .. import DISTRIBUTION, __version__

    def installed(name: str) -> str:
        try:
            return metadata.version(name)
        except metadata.PackageNotFoundError:
            return "not installed"

    return (f"qelm {__version__} (pip install {DISTRIBUTION}; python {platform.python_version()}, torch "
            f"{installed('torch')}, pennylane {installed('pennylane')}, qiskit {installed('qiskit')})")


class _Version(argparse.Action):
    """``--version``: print :func:`version_text` and exit (computed only when asked)."""

    def __init__(self, option_strings, dest=argparse.SUPPRESS, default=argparse.SUPPRESS, help=None):
        super().__init__(option_strings, dest=dest, default=default, nargs=0, help=help)

    def __call__(self, parser, namespace, values, option_string=None):
        print(version_text())
        parser.exit(0)


def build_parser() -> argparse.ArgumentParser:
    from .options import VOCABULARY

    parser = _Parser(prog="qelm", description="Build, train and honestly measure tiny quantum-enhanced language models.",
                     epilog=VOCABULARY, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action=_Version, help="print the version of qelm and of what it runs on, and exit")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in _COMMAND_MODULES:
        try:
            module = importlib.import_module(f"{__name__}.{name}")
        except ModuleNotFoundError as e:  # a command module not shipped in this build: skip only that one
            if e.name != f"{__name__}.{name}":
                raise
            continue
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except USER_ERRORS as e:
        print(f"qelm {args.command}: error: {redact(str(e))}", file=sys.stderr)  # never a URL's password
        return 2
    except KeyboardInterrupt:
        print(f"qelm {args.command}: interrupted", file=sys.stderr)
        return 130
    except Exception as e:  # a full disk is the user's to fix, whatever library said it; anything else is a bug
        full = disk_full(e)
        if full is None:
            raise
        print(f"qelm {args.command}: error: {full}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
