"""The ``qelm`` command line: thin. Each sub-module here registers its sub-commands, parses arguments,
calls the library and prints. User errors (bad input, missing files, unavailable backends) become one
line on stderr and a non-zero exit; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from ..backends import BackendUnavailable
from ..files import FolderInUse

# sub-modules that register commands, in the order `qelm --help` lists them
_COMMAND_MODULES = ("train", "compare", "draw", "bench")


class UserError(Exception):
    """An error the user can fix; the CLI prints its message only."""


USER_ERRORS = (UserError, ValueError, BackendUnavailable, FileNotFoundError, FileExistsError, PermissionError,
               IsADirectoryError, NotADirectoryError, UnicodeDecodeError, FolderInUse, FloatingPointError)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="qelm", description="Build, train and honestly measure tiny quantum-enhanced language models.")
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
        print(f"qelm {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"qelm {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
