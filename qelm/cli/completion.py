"""``qelm completion bash|zsh``: the shell completion script of the whole command line, written by shtab (the
``completion`` extra) from the argument parser itself, so it knows every command and flag there is."""

from __future__ import annotations

import argparse

from .options import UserError

SHELLS = ("bash", "zsh")


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "completion", help="print a shell completion script (bash or zsh)",
        description="Print the completion script of every qelm command and flag for SHELL. Load it with\n"
                    "  bash: eval \"$(qelm completion bash)\"  (or save it into ~/.local/share/bash-completion/"
                    "completions/qelm)\n"
                    "  zsh:  qelm completion zsh > \"${fpath[1]}/_qelm\"\n"
                    "Needs shtab: pip install 'qelm-lab[completion]'.",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("shell", choices=SHELLS, help="the shell to complete in")
    p.set_defaults(func=run)


def script(parser: argparse.ArgumentParser, shell: str) -> str:
    """The completion script of ``parser`` for ``shell``; a :class:`UserError` naming the install command when
    shtab is missing."""
    try:
        import shtab  # the completion extra: needed by this command alone
    except ImportError:
        raise UserError("shell completion needs shtab, which is not installed: pip install 'qelm-lab[completion]' "
                        "(or pip install shtab)") from None
    return shtab.complete(parser, shell=shell)


def run(args) -> int:
    print(script(args.whole_parser(), args.shell))
    return 0
