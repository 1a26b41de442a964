"""``qelm compare``: a QELM next to its classical twins (or trained checkpoints next to each other):
parameters, measured file sizes, FLOPs and circuit cost per token, perplexity. Prints a Markdown table;
``--json`` and ``--plot`` write the same numbers to files."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from tqdm import tqdm

from ..compare import PUBLISHED_SETTING, compare, markdown, plot_comparison
from ..config import QELMConfig
from ..folders import check_folder
from ..plot import figure_format
from .options import (UserError, add_json_flag, add_model_flags, check_output_file, check_output_folder, flag, json_to_stdout,
                      model_overrides, positive_float, positive_int, seed)
from .progress import show_progress

def register(subparsers) -> None:
    p = subparsers.add_parser(
        "compare", help="parameters, measured sizes, FLOPs and circuit cost: QELM vs classical twins",
        description="Measure a QELM, its full-size classical twin and the parameter-matched classical baseline "
                    "side by side (or trained checkpoints): parameters per component, bytes of files actually "
                    "written, FLOPs per token, circuit executions, gates, simulation cost and hardware shots.")
    group = add_model_flags(p, QELMConfig().to_dict(), "QELMConfig's; with --config, that file's [model]")
    group.add_argument("--config", metavar="FILE", help="QELMConfig TOML file; the flags above override its fields "
                                                        "(default: QELMConfig's defaults)")
    group.add_argument("--published", action="store_true",
                       help="the setting of a published QELM claim: "
                       + ", ".join(f"{k}={v}" for k, v in PUBLISHED_SETTING.items())
                       + " (checks the published 2,165 KB vs 15-20 MB claim); other flags still override")
    p.add_argument("--checkpoint", action="append", default=[], metavar="DIR",
                   help="compare trained checkpoint folders instead (repeatable; a training run folder counts as "
                        "its qelm/, twin/ and matched/; default: none, a model of the flags above)")
    p.add_argument("--data", metavar="FILE", help="text file: validation perplexity of each --checkpoint on it "
                                                  "(default: none, no perplexity)")
    p.add_argument("--backend", metavar="NAME", help="run the circuits on this backend while measuring (default: "
                                                     "the config's)")
    p.add_argument("--batch-size", type=positive_int, default=2,
                   help="rows of context_len tokens in the measuring forward pass (default 2)")
    p.add_argument("--eval-batch-size", type=positive_int, default=16, help="batch size for the perplexity pass (default 16)")
    p.add_argument("--eps", type=positive_float, default=0.01,
                   help="target standard error of each <Z> on hardware, for the shot counts (default 0.01)")
    p.add_argument("--seed", type=seed, default=0, help="seed for weights and measuring tokens (default 0)")
    p.add_argument("--keep-files", metavar="DIR", help="keep the written model files here (default: a temp dir)")
    add_json_flag(p, "every number")
    p.add_argument("--plot", metavar="FILE", help="grouped bar chart (log scale) of parameters and bytes (default: "
                                                  "none)")
    p.set_defaults(func=run)


def _config(args: argparse.Namespace) -> QELMConfig | None:
    overrides = model_overrides(args)
    if args.config is None and not args.published and not overrides:
        return None if args.checkpoint else QELMConfig()
    if args.checkpoint:
        raise UserError("--checkpoint compares the checkpoints' own configs; drop --config, --published and the "
                        "model flags, or drop --checkpoint")
    if args.config is not None and args.published:
        raise UserError("use either --config FILE or --published, not both")
    if args.config is not None:
        if not Path(args.config).exists() and not Path(args.config).is_symlink():  # the wrong kind: from_toml says
            raise FileNotFoundError(f"config file {args.config!r} does not exist")
        base = QELMConfig.from_toml(args.config)
    else:
        base = QELMConfig()
    fields = base.to_dict()
    if args.published:
        fixed = {k: v for k, v in overrides.items() if k in PUBLISHED_SETTING and v != PUBLISHED_SETTING[k]}
        if fixed:
            raise UserError(f"--published fixes {', '.join(f'{k}={PUBLISHED_SETTING[k]}' for k in fixed)}; drop "
                            f"{', '.join(flag(k) for k in fixed)} or drop --published")
        fields.update(PUBLISHED_SETTING)
    fields.update(overrides)
    return QELMConfig.from_dict(fields)  # validates: a bad flag value names its field and the fix


def run(args: argparse.Namespace) -> int:
    config = _config(args)
    for name in ("plot", "json"):  # every output is checked before the measurement, not after it
        target = getattr(args, name)
        if target and target != "-":
            check_output_file(target, f"--{name}", make_parents=True)
    if args.plot:
        figure_format(args.plot)  # a bad suffix fails now, not after the measurement
    if args.keep_files:
        if Path(args.keep_files).exists() and not Path(args.keep_files).is_dir():
            raise UserError(f"--keep-files {args.keep_files!r} is a file; give a folder to keep the model files in")
        check_output_folder(args.keep_files, "--keep-files")
        check_folder(args.keep_files, what="folder to keep the model files in (--keep-files)")  # new or empty
    if args.eps >= 1:
        raise UserError(f"--eps {args.eps} is invalid: use a target standard error between 0 and 1, e.g. 0.01")
    with tqdm(unit="model", file=sys.stderr, dynamic_ncols=True, leave=False, disable=not show_progress()) as bar:
        def progress(label: str, done: int, total: int) -> None:
            bar.total = total
            bar.set_postfix_str(label, refresh=False)
            bar.update(done - bar.n)

        result = compare(config, checkpoints=args.checkpoint, data=args.data, batch_size=args.batch_size,
                         seed=args.seed, eps=args.eps, backend=args.backend, keep_dir=args.keep_files,
                         eval_batch_size=args.eval_batch_size, published=args.published, progress=progress)
    if json_to_stdout(args):
        print(json.dumps(result.to_dict(), indent=2))
    else:
        print(markdown(result))
    if args.json and not json_to_stdout(args):
        print(f"\nwrote {result.save_json(args.json)}")
    if args.plot:
        print(f"wrote {plot_comparison(result, args.plot)}")
    return 0
