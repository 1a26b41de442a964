"""The command-line reference, written from the argument parser itself (``qelm.cli.build_parser``) at build
time: every command, its description and every option with its help and default, so the page cannot drift
from what ``qelm COMMAND --help`` prints."""

from __future__ import annotations

import argparse
import html
import os
import re

from mkdocs.structure.files import File, Files

PAGE = "reference/cli.md"


def _subcommands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def _cell(text: str) -> str:
    """Help text as one table cell of literal text: Markdown's brackets, emphasis and HTML characters escaped."""
    text = html.escape(" ".join(text.split()), quote=False)
    return re.sub(r"([\\\[\]*_|])", r"\\\1", text)


def _options(parser: argparse.ArgumentParser) -> list[str]:
    formatter = parser._get_formatter()
    rows = []
    for action in parser._actions:
        if action.help == argparse.SUPPRESS or isinstance(action, argparse._SubParsersAction):
            continue
        name = ", ".join(f"`{s}`" for s in action.option_strings) or f"`{action.dest}`"
        if action.option_strings and action.nargs != 0:
            name += f" `{formatter._format_args(action, formatter._get_default_metavar_for_optional(action))}`"
        rows.append(f"| {name} | {_cell(formatter._expand_help(action) if action.help else '')} |")
    if not rows:
        return []
    return ["| argument | what it does |", "|---|---|", *rows, ""]


def _command(name: str, parser: argparse.ArgumentParser, depth: int) -> list[str]:
    lines = [f"{'#' * depth} `{name}`", ""]
    if parser.description:
        lines += [_cell(parser.description), ""]
    lines += ["```text", parser.format_usage().strip(), "```", "", *_options(parser)]
    if parser.epilog:
        lines += ["```text", parser.epilog.strip(), "```", ""]
    for sub, subparser in _subcommands(parser).items():
        lines += _command(f"{name} {sub}", subparser, min(depth + 1, 4))
    return lines


def render() -> str:
    os.environ["COLUMNS"] = "100"  # argparse wraps usage lines to the terminal: one width for every build
    from qelm.cli import build_parser  # the package the site documents, imported at build time

    parser = build_parser()
    lines = ["# Command line", "",
             "Every `qelm` command, written from the argument parser at build time (what `qelm COMMAND --help` "
             "prints, as tables). Numbers are checked by their flag's type before a command does any work.", "",
             "```text", parser.format_usage().strip(), "```", ""]
    for name, sub in _subcommands(parser).items():
        lines += _command(f"qelm {name}", sub, 2)
    if parser.epilog:
        lines += ["## The vocabulary", "", "```text", parser.epilog.strip(), "```", ""]
    return "\n".join(lines)


def on_files(files: Files, config) -> Files:
    files.append(File.generated(config, PAGE, content=render()))
    return files
