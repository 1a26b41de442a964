"""The ``qelm`` command line: thin. Each sub-module here registers its sub-commands, parses arguments,
calls the library and prints. User errors (every :class:`~qelm.errors.QelmError`: bad input, corrupt
folders, unavailable backends; and missing or unwritable files, a non-UTF-8 text, a diverged run) become
one line on stderr and exit code 2; anything else is a bug and keeps its traceback.

Every argument is checked before a command does any work: numbers by their argparse type (the types of
:mod:`.options`: finite, in range, named by their flag), files and folders by the command before its
first step.
"""

from __future__ import annotations

import argparse
import logging
import platform
import sys
from collections.abc import Iterable
from importlib import metadata

from ..disk import disk_full
from ..errors import QelmError
from ..redact import redact
from ..version import DISTRIBUTION, __version__
from .commands import COMMANDS, VOCABULARY, import_modules, register


#: what the command line prints as one line: qelm's user errors (a full disk among them, :mod:`qelm.disk`), the
#: file errors of the paths it was given, a file that is not UTF-8 text, and a training run that diverged (the
#: fix: a smaller learning rate)
USER_ERRORS = (QelmError, FileNotFoundError, FileExistsError, PermissionError, IsADirectoryError, NotADirectoryError,
               UnicodeDecodeError, FloatingPointError)


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors, like every other error of the command line."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def version_text() -> str:
    """``qelm --version``: qelm's version, the distribution that installs it, and the versions it runs on."""
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


def build_parser(commands: Iterable[str] | None = None) -> argparse.ArgumentParser:
    """The whole command line; with ``commands``, only their modules are imported and register their flags,
    and every other command is its name and one-line help (enough for ``qelm --help``, which loads no torch)."""
    full = set(COMMANDS) if commands is None else set(commands)
    parser = _Parser(prog="qelm", description="Build, train and honestly measure tiny quantum-enhanced language models.",
                     epilog=VOCABULARY, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action=_Version, help="print the version of qelm and of what it runs on, and exit")
    parser.add_argument("-v", "--verbose", action="count", default=0,
                        help="say what qelm does (-vv: every metrics record too); like -q, allowed anywhere")
    parser.add_argument("-q", "--quiet", action="store_true", help="errors only: no progress bars, notes or warnings")
    parser.add_argument("--import", dest="imports", action="append", metavar="MODULE|FILE.py[:NAME]",
                        help="import a module (from the current folder or the installed packages) or a Python file "
                             "first, where your circuits call qelm.circuits.register_circuit; with :NAME, register "
                             "that class of it (or list of classes). It must register a circuit. Repeatable, allowed "
                             "anywhere on the line; `qelm draw --list` lists what is registered. Checkpoints never "
                             "import code themselves: give --import again to load one that names your circuits")
    parser.set_defaults(whole_parser=build_parser)  # what `qelm completion` completes: every command, registered
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    registered: set[str] = set()
    for name, (module, help_text) in COMMANDS.items():
        if module in registered:
            continue
        if any(COMMANDS[c][0] == module for c in full):
            register(module, sub)
            registered.add(module)
        else:
            sub.add_parser(name, help=help_text)
    return parser


_VERBOSITY = {"-q": -1, "--quiet": -1, "-v": 1, "--verbose": 1, "-vv": 2}


def _take_global_flags(argv: list[str]) -> tuple[list[str], int, list[str]]:
    """``(modules, verbosity, the rest of argv)``: the flags every command takes anywhere on the line: each
    ``--import MODULE`` (or ``--import=MODULE``), and ``-q`` / ``-v`` / ``-vv`` (summed)."""
    modules, verbosity, rest = [], 0, []
    items = iter(argv)
    for item in items:
        if item == "--import":
            modules.append(next(items, ""))
        elif item.startswith("--import="):
            modules.append(item.partition("=")[2])
        elif item in _VERBOSITY:
            verbosity += _VERBOSITY[item]
        else:
            rest.append(item)
    return modules, verbosity, rest


def set_verbosity(verbosity: int) -> None:
    """qelm's log (the ``qelm`` logger) on stderr: warnings by default, info with ``-v``, debug with ``-vv``;
    ``-q`` errors only, and no progress bars or slow-step notes."""
    log = logging.getLogger("qelm")
    log.setLevel({-1: logging.ERROR, 0: logging.WARNING, 1: logging.INFO}.get(max(-1, verbosity), logging.DEBUG))
    if not any(isinstance(h, _Stderr) for h in log.handlers):
        handler = _Stderr()
        handler.setFormatter(logging.Formatter("%(name)s: %(message)s"))
        log.addHandler(handler)


class _Stderr(logging.StreamHandler):
    """Writes to whatever ``sys.stderr`` is when a record comes, not the one there when it was made."""

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, value) -> None:
        pass


def main(argv: list[str] | None = None) -> int:
    imports, verbosity, argv = _take_global_flags(sys.argv[1:] if argv is None else [str(a) for a in argv])
    set_verbosity(verbosity)
    failed = import_modules(imports)  # before the parser: a registered circuit is one of its choices
    if failed:
        print(f"qelm: error: {failed}", file=sys.stderr)
        return 2
    command = next((a for a in argv if not a.startswith("-")), None)  # the top-level flags take no value
    parser = build_parser([command] if command in COMMANDS else [])
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
