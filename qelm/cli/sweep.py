"""``qelm sweep``: run, resume or join a sweep over QELM configurations (:mod:`qelm.sweep`), and report it."""

from __future__ import annotations

import argparse
import json
import textwrap
import time
from pathlib import Path

from ..files import atomic_write
from ..folders import check_folder
from ..plot import figure_format
from ..redact import redact
from ..sweep import open_study, plot_pareto, report_text, run_sweep, sweep_table
from ..sweep.folder import sweep_layout
from ..sweep.storage import import_optuna
from .options import UserError, add_json_flag, check_output_file, check_output_folder, json_to_stdout, positive_int, threads

_DESCRIPTION = """\
Train many QELM configurations, each at several seeds beside its classical twin and its
parameter-matched classical model, on one corpus; record every trial in an Optuna study;
print the Pareto frontier (parameters vs validation perplexity) and whether any quantum
configuration beats the classical model of equal parameters.

The search space is a TOML file (example: examples/sweep.toml):
  [sweep]          trials, seeds (list or count), sampler (tpe | random | grid),
                   sampler_seed, sample_tokens, name
  [model]          QELMConfig fields every trial shares
  [train]          training settings every trial shares (steps, or tokens: a budget)
  [search.model]   QELMConfig fields to search: a list of choices, or a range
                   { low = .., high = .. [, step = ..] [, log = true] }
  [search.train]   steps, tokens, batch_size, lr, lr_schedule, warmup_steps, min_lr,
                   grad_clip, weight_decay to search
Every combination of model choices must be a valid model; the space is refused, naming the
field, before any trial otherwise.

Per model and seed the sweep records validation perplexity, parameters, circuit
parameters, train tokens/s, training seconds, bits per character (per byte for BPE),
top-1/top-5 next-token accuracy and, on sampled text, distinct-1/2 and the repetition rate
(defined in qelm eval --help); per trial its wall time, or the reason it failed.

The study lives in OUT/sweep.db (SQLite) unless --storage names a database URL; with one
URL, processes on several machines can work on the same sweep (each runs this command
with --resume once the sweep exists). A killed sweep continues with --resume and loses at
most the trials that were in flight."""


def register(subparsers: argparse._SubParsersAction) -> None:
    sw = subparsers.add_parser("sweep", help="search QELM configurations against classical models of equal parameters",
                               description=_DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter)
    sw.add_argument("--space", metavar="FILE", help="search space TOML file (no default: required for a new "
                                                    "sweep, see examples/sweep.toml; on --resume the sweep's own)")
    sw.add_argument("--data", metavar="FILE", help="UTF-8 text every trial trains on (default: the bundled corpus; on "
                                                   "--resume the sweep's own)")
    sw.add_argument("--out", default="runs/sweep", metavar="DIR",
                    help="sweep folder: study database, trial runs, sweep.json, pareto.png (default runs/sweep)")
    sw.add_argument("--storage", metavar="URL", help="Optuna database URL (default: OUT/sweep.db, SQLite), "
                                                     "e.g. postgresql://user@host/db: several machines share one sweep")
    sw.add_argument("--study", metavar="NAME", help="the sweep's name in the storage (default: [sweep] name, else the "
                                                    "space file's name; with --report, the storage's only sweep)")
    sw.add_argument("--workers", type=positive_int, default=1, metavar="N",
                    help="processes that run trials at once on this machine (default 1)")
    sw.add_argument("--trials", type=positive_int, metavar="N",
                    help="total trials to reach (default: the space's [sweep] trials); with --resume, raise it to "
                         "extend a finished sweep")
    sw.add_argument("--resume", action="store_true", help="continue (or join) the sweep in OUT / --storage")
    sw.add_argument("--report", action="store_true", help="run nothing: print the frontier and the verdict of the "
                                                          "sweep in OUT / --storage and write its JSON and plot")
    add_json_flag(sw, "the table of all trials (default: into OUT/sweep.json, beside the text)")
    sw.add_argument("--plot", metavar="FILE", help="the Pareto plot (.png, .svg or .pdf; default OUT/pareto.png)")
    sw.add_argument("--threads", type=threads, default=1, metavar="N", help="torch CPU threads per worker (default 1)")
    sw.set_defaults(func=run_sweep_command)


def _print_trial(row: dict) -> None:
    """One line per finished trial (called in the worker that ran it)."""
    wall = f" in {row['wall_seconds']:.1f} s" if row.get("wall_seconds") is not None else ""
    params = " ".join(f"{k.split('.', 1)[1]}={v:g}" if isinstance(v, float) else f"{k.split('.', 1)[1]}={v}"
                      for k, v in row["params"].items())
    if row["state"] == "complete":
        line = (f"trial {row['number']}{wall}: {params}: {row['parameters']:,} params, val ppl "
                f"{row['val_perplexity']:.3f} vs matched {row['matched_val_perplexity']:.3f} (ratio {row['value']:.3f}, "
                f"{len(row['ratio_to_matched'])} seeds)")
    else:
        line = f"trial {row['number']} {row['state']}{wall}: {params}: {row.get('error', '')}"
    print(line, flush=True)


def _rounded(x):
    """Measured floats to 6 significant digits (they carry no more), recursively; a trial's parameters and
    a model's config and settings stay exact, so a run can be repeated from them."""
    if isinstance(x, float):
        return float(f"{x:.6g}")
    if isinstance(x, dict):
        return {k: v if k in ("params", "config", "settings") else _rounded(v) for k, v in x.items()}
    if isinstance(x, list):
        return [_rounded(v) for v in x]
    return x


def _dumps(table: dict) -> str:
    """The table as JSON, one line per trial and per model, so the file reads (and diffs) by row."""
    table = _rounded(table)
    head = {k: v for k, v in table.items() if k not in ("models", "trials")}
    lines = json.dumps(head, indent=1)[:-2].splitlines()  # without the closing brace
    for key in ("models", "trials"):
        rows = ",\n".join("  " + json.dumps(row) for row in table[key])
        lines.append(f' ,"{key}": [\n{rows}\n ]')
    return "\n".join(lines) + "\n}\n"


def _write_outputs(table: dict, args: argparse.Namespace) -> tuple[Path, Path]:
    to_stdout = json_to_stdout(args)
    json_path = Path(args.json if args.json and not to_stdout else Path(args.out) / "sweep.json")
    plot_path = Path(args.plot or Path(args.out) / "pareto.png")
    figure_format(plot_path)
    text = _dumps(table)
    atomic_write(json_path, text, make_parents=True)
    plot_pareto(table, plot_path)
    if to_stdout:
        print(text, end="")
    return json_path, plot_path


def run_sweep_command(args: argparse.Namespace) -> int:
    try:
        import_optuna()
    except ModuleNotFoundError as e:
        if e.name != "optuna":
            raise
        raise UserError(str(e)) from None
    if args.plot:  # bad output names fail before the sweep, not after it
        figure_format(args.plot)
        check_output_file(args.plot, "--plot", make_parents=True)
    if args.json and not json_to_stdout(args):
        check_output_file(args.json, "--json", make_parents=True)
    if not args.report:
        check_output_folder(args.out, "--out")
    elif not (args.plot and args.json):  # the report writes into the sweep's folder: its own files only
        check_folder(args.out, sweep_layout, what="sweep folder", owner="a qelm sweep", hint=" with --out")
    start = time.perf_counter()
    if args.report:
        if args.space or args.resume or args.data:
            raise UserError("--report runs nothing: drop --space, --data and --resume")
        study, _ = open_study(args.out, args.storage, args.study)
        table = sweep_table(study)
    else:
        if not args.resume and not args.space:
            raise UserError("--space is required for a new sweep (see examples/sweep.toml), or --resume to continue one")
        quiet = json_to_stdout(args)  # stdout carries the JSON only

        def started() -> None:  # once the inputs are checked: an error comes before any announcement
            if not quiet:
                print(f"qelm sweep: {'resuming' if args.resume else 'starting'} the sweep in "
                      f"{redact(args.storage or args.out)} with {args.workers} worker(s)", flush=True)

        table = run_sweep(args.space, args.data, out=args.out, storage=args.storage, study=args.study, workers=args.workers,
                          resume=args.resume, trials=args.trials, threads=args.threads,
                          progress=None if quiet else _print_trial, started=started)
        if not quiet:
            print()
    json_path, plot_path = _write_outputs(table, args)
    if json_to_stdout(args):
        return 0
    text = report_text(table)
    for line in text.splitlines():
        print(textwrap.fill(line, width=120, subsequent_indent="  ") if not line.startswith("  ") else line)
    print(f"\nWrote {json_path} and {plot_path}")
    if not args.report:
        print(f"Wall time: {time.perf_counter() - start:.1f} s")
    return 0
