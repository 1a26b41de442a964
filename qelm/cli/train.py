"""``qelm demo`` and ``qelm train``: thin wrappers that parse arguments, call :mod:`qelm.train` and print.

``demo`` trains the tiny QELM, its classical twin and the parameter-matched classical model on the bundled
corpus, shows their validation perplexities beside the unigram baseline's, says how the QELM compares with
each classical model, prints a sample from each, and leaves checkpoints, metrics, ``summary.json`` and
``loss_curve.png`` in ``--out``.
"""

from __future__ import annotations

import argparse
import dataclasses
import textwrap
import time
from pathlib import Path
from typing import Any

import torch.distributed as dist

from ..backends.spec import BACKEND_FIELDS
from ..config import QELMConfig
from ..data import TextDataset, bundled_config, bundled_corpus
from ..distributed import init_distributed
from ..evaluate import generate_text
from ..train import LABELS, TRAIN_DEFAULTS, load_run_config, train
from ..train.trackers import TRACKERS, callbacks, tracker
from .options import (UserError, add_model_flags, add_noise_flags, add_runtime_flags, assignment, flag, model_overrides,
                      noise_backend, nonnegative_float, nonnegative_int, positive_float, positive_int, seed, set_threads)
from .progress import Progress, duration, mib, number


def register(subparsers: argparse._SubParsersAction) -> None:
    _register_demo(subparsers)
    _register_train(subparsers)


def _register_demo(subparsers: argparse._SubParsersAction) -> None:
    tiny = load_run_config(None)[2]
    demo = subparsers.add_parser("demo", help="train a tiny QELM and two classical baselines on the bundled corpus "
                                              "and compare",
                                 description="Train the tiny demo QELM, its classical twin (same config, every slot "
                                             "classical) and a classical model of the QELM's parameter count on the "
                                             "bundled corpus (same seed, batches and steps); print their validation "
                                             "perplexities, the unigram baseline, how the QELM compares with each, and "
                                             "a sample from each.")
    demo.add_argument("--out", default="runs/demo", metavar="DIR",
                      help="run folder to write (default: runs/demo; replaced if it holds a run)")
    demo.add_argument("--steps", type=positive_int,
                      help=f"optimizer steps per model (default {tiny.get('steps', TRAIN_DEFAULTS['steps'])}: the "
                           f"bundled tiny config's [train])")
    demo.add_argument("--seed", type=seed, help="seed of initialisation, batches and samples (default 0)")
    demo.add_argument("--prompt", default="The ", help="text the samples continue (default 'The ')")
    demo.add_argument("--max-new-tokens", type=nonnegative_int, default=200, help="length of each sample (default 200)")
    demo.add_argument("--no-matched", dest="matched", action="store_const", const=False,
                      help="skip the parameter-matched classical model")
    add_runtime_flags(demo)
    demo.set_defaults(func=run_demo)


def _train_default(name: str, tiny: dict[str, Any]) -> str:
    """Where ``qelm train`` takes a setting from when its flag is left out, in words."""
    built_in = {"eval_every": "five evaluations over the run", "save_every": "five checkpoints over the run",
                "warmup_steps": "5%% of the steps", "min_lr": "lr / 10", "vocab_size": "none (char tokenizer)"}
    fallback = built_in.get(name, TRAIN_DEFAULTS[name])
    if name in tiny:
        return (f"default {tiny[name]}: the bundled tiny config's [train]; with --config, that file's [train], else "
                f"{fallback}")
    return f"default {fallback}: qelm's own; a --config file's [train] may set it"


def _register_train(subparsers: argparse._SubParsersAction) -> None:
    tiny_model, _, tiny = load_run_config(None)
    tr = subparsers.add_parser(
        "train", help="train a QELM and its classical baselines on a text file",
        description="Train a QELM, its classical twin and the parameter-matched classical model on any UTF-8 text "
                    "file. Each setting comes from, in order: its flag (or --set); on --resume, the run's own; the "
                    "[train] table of --config FILE (without --config: of the bundled tiny config, qelm/data/tiny.toml); "
                    "qelm's own default. The model is --config FILE's [model] table (default: the tiny config's), "
                    "changed by the model flags. The learning rate warms up linearly, then decays on a cosine "
                    "(--lr-schedule constant keeps it). Each model's folder keeps its last checkpoint, and its best by "
                    "validation loss in best/. Run with torchrun --nproc-per-node N for data-parallel training.")
    tr.add_argument("--data", metavar="FILE", help="UTF-8 text file to train on (no default: required unless --resume, which rereads "
                                   "the run's own)")
    tr.add_argument("--config", metavar="FILE", help="TOML config: [model] and optional [train] tables (default: the bundled tiny "
                                     "config, qelm/data/tiny.toml)")
    tr.add_argument("--out", metavar="DIR", help="run folder to write (default: runs/train)")
    tr.add_argument("--resume", metavar="DIR",
                    help="continue the run in DIR from its last checkpoint (--steps is the total; default: start a "
                         "new run)")
    tr.add_argument("--overwrite", action="store_true", help="replace a run already in --out")
    tr.add_argument("--report-to", action="append", choices=tuple(TRACKERS), metavar="TRACKER",
                    help="also report every metrics record to tensorboard (OUT/tensorboard) or wandb; repeatable "
                         "(default: none; each needs its extra: pip install 'qelm-lab[tensorboard]' or "
                         "'qelm-lab[wandb]')")
    settings = tr.add_argument_group("training (a config file's [train] settings)")
    for name, kind, metavar, what in (
            ("steps", positive_int, "N", "total optimizer steps per model"),
            ("batch_size", positive_int, "B", "global batch size (split over processes)"),
            ("lr", positive_float, "LR", "AdamW peak learning rate"),
            ("lr_schedule", None, None, "cosine: linear warm-up, then cosine decay to --min-lr; constant: --lr "
                                        "throughout"),
            ("warmup_steps", nonnegative_int, "N", "steps of linear warm-up from 0 to --lr"),
            ("min_lr", nonnegative_float, "LR", "learning rate the cosine reaches at the last step"),
            ("weight_decay", nonnegative_float, "W", "AdamW weight decay"),
            ("grad_clip", nonnegative_float, "G", "gradient-norm clip; 0 turns it off"),
            ("seed", seed, "S", "seed of initialisation and batches"),
            ("tokenizer", None, None, "char or byte-level BPE"),
            ("vocab_size", positive_int, "V", "BPE vocabulary size, e.g. 100 (a char vocabulary has one token per "
                                              "distinct character, and the unknown token)"),
            ("eval_every", positive_int, "N", "steps between validation evaluations"),
            ("save_every", positive_int, "N", "steps between checkpoints"),
            ("log_every", positive_int, "N", "steps between metrics records")):
        extra = {"choices": {"lr_schedule": ("cosine", "constant"), "tokenizer": ("char", "bpe")}[name]} \
            if kind is None else {"type": kind, "metavar": metavar}
        settings.add_argument(flag(name), dest=name, help=f"{what} ({_train_default(name, tiny)})", **extra)
    settings.add_argument("--no-twin", dest="twin", action="store_const", const=False,
                          help="skip the classical twin (the same config with every slot classical)")
    settings.add_argument("--no-matched", dest="matched", action="store_const", const=False,
                          help="skip the parameter-matched classical model (ClassicalLM.matched_to(qelm))")
    add_model_flags(tr, tiny_model.to_dict(), "the bundled tiny config; with --config, that file's [model]",
                    fields=tuple(n for n in _MODEL_FIELDS if n != "vocab_size"))
    tr.add_argument("--set", dest="set", action="append", type=assignment, default=[], metavar="FIELD=VALUE",
                    help="set any [model] field or [train] setting (repeatable; default: none), e.g. --set "
                         "readout=zz --set weight_decay=0.1")
    tr.add_argument("--device", default="cpu", metavar="DEVICE", help="cpu or cuda (default cpu)")
    add_runtime_flags(tr)
    add_noise_flags(tr, train=True)
    tr.set_defaults(func=run_train)


_MODEL_FIELDS = ("vocab_size", "d_model", "n_heads", "d_hidden", "n_layers", "context_len", "n_qubits", "circuit_layers",
                 "embedding", "embedding_circuit", "attention", "attention_circuit", "fidelity_method", "feed_forward",
                 "feed_forward_circuit", "readout")


# --- tables --------------------------------------------------------------------------------------------------
def _print_results(result) -> None:
    """The comparison table, the verdict and the method, from ``result.summary``."""
    s = result.summary
    rows = [("model", "params", "circuit", "val loss", "val ppl", "train tok/s", "train time", "peak mem")]
    for name in ("qelm", "twin", "matched"):
        m = s["models"].get(name)
        if m is None:
            continue
        rows.append((LABELS[name], str(m["parameters"]), str(m["circuit_parameters"]), number(m["val_loss"], ".4f"),
                     number(m["val_perplexity"], ".3f"), number(m["tokens_per_s"], ".0f"),
                     f"{m['train_seconds']:.1f} s", mib(m["peak_memory_bytes"])))
    u = s["unigram"]
    rows.append((LABELS["unigram"], "-", "-", f"{u['val_loss']:.4f}", f"{u['val_perplexity']:.3f}", "-", "-", "-"))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for r in rows:
        print("  " + "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths))))
    print()
    print(textwrap.fill(f"Result: {s['verdict']}.", width=110, subsequent_indent="  "))
    print(textwrap.fill(f"Method: {s['method']}", width=110, subsequent_indent="  "))


def _describe_run(s: dict) -> str:
    d, r = s["data"], s["run"]
    procs = f", {r['world_size']} processes" if r["world_size"] > 1 else ""
    return (f"{r['steps']} steps of {r['batch_size']} x {r['context_len']} tokens, AdamW lr {r['lr']}, seed {r['seed']}, "
            f"backend {r['backend']}{procs}; corpus {d['source']} ({d['chars']} characters, {d['tokenizer']} tokenizer, "
            f"{d['vocab_size']} tokens, {d['train_tokens']} train / {d['val_tokens']} validation tokens)")


def _train_call(*, report_to: tuple[str, ...] = (), **kwargs):
    progress = kwargs.get("callback")
    if progress is not None:  # rank 0 (the one process with a progress bar) reports to the trackers too
        kwargs["callback"] = callbacks(progress, *(tracker(name, kwargs["out"]) for name in report_to))
    try:
        return train(**kwargs)
    except FloatingPointError as e:  # a diverged run: the user fixes it with a smaller learning rate
        raise UserError(str(e)) from None
    finally:
        if progress is not None:  # an open bar would run into the error line
            progress.close()


def _runs(result) -> list:
    """The trained models of a run, QELM first."""
    return [run for run in (result.qelm, result.twin, result.matched) if run is not None]


def _wrote(result, out: Path) -> str:
    folders = [str(out / run.name) for run in _runs(result)]
    listed = folders[0] if len(folders) == 1 else ", ".join(folders[:-1]) + " and " + folders[-1]
    return f"Wrote {listed} (checkpoints + metrics.jsonl), {out / 'summary.json'}, {out / 'loss_curve.png'}"


# --- commands ---------------------------------------------------------------------------------------------------
def run_demo(args: argparse.Namespace) -> int:
    start = time.perf_counter()
    set_threads(args)
    settings = load_run_config(bundled_config())[2]
    dataset = TextDataset.from_file(bundled_corpus(), tokenizer=settings.get("tokenizer", "char"),
                                    vocab_size=settings.get("vocab_size"))
    try:  # before training: the samples continue the prompt
        dataset.tokenizer.encode(args.prompt)
    except ValueError as e:
        raise UserError(f"--prompt {args.prompt!r}: {e}") from None
    if not args.prompt:
        raise UserError("--prompt is empty: give at least one character for the samples to continue")
    models = ["the tiny QELM", "its classical twin (the same config with every slot classical)"]
    if args.matched is not False:
        models.append("a classical model of the QELM's parameter count")
    announce = (f"qelm demo: training {', '.join(models[:-1])} and {models[-1]} on the same batches of the bundled "
                f"corpus")  # printed once the inputs are checked (Progress)
    result = _train_call(config=bundled_config(), data=dataset, steps=args.steps, seed=args.seed, out=args.out,
                         backend=args.backend, overwrite=True, matched=args.matched,
                         callback=Progress(announce=announce))
    s = result.summary
    print(f"\nTrained: {_describe_run(s)}\n")
    _print_results(result)
    for run in _runs(result):
        sample = generate_text(run.model, result.dataset.tokenizer, args.prompt, max_new_tokens=args.max_new_tokens,
                               seed=0 if args.seed is None else args.seed)
        print(f"\nSample from the {LABELS[run.name]} model (temperature 1, seed "
              f"{0 if args.seed is None else args.seed}):\n{args.prompt}{sample}")
    print(f"\n{_wrote(result, Path(args.out))}")
    print(f"Demo wall time: {duration(time.perf_counter() - start)}")
    return 0


_SETTING_FLAGS = ("steps", "batch_size", "lr", "lr_schedule", "warmup_steps", "min_lr", "weight_decay", "grad_clip",
                  "seed", "tokenizer", "vocab_size", "eval_every", "save_every", "log_every", "twin", "matched")


def _train_options(args: argparse.Namespace) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    """``(model field changes, training settings, runtime)`` from the flags and ``--set`` (a name that is both,
    as vocab_size, is the training setting: the model's vocabulary is the tokenizer's; ``--set`` backend, shots
    or backend_options is how the circuits run: ``runtime``, as the ``[runtime]`` table names them)."""
    runtime = {n: v for n, v in args.set if n in BACKEND_FIELDS}
    args.set = [(n, v) for n, v in args.set if n not in BACKEND_FIELDS]
    if not isinstance(runtime.get("backend_options", {}), dict):
        raise UserError(f"--set backend_options={runtime['backend_options']!r} is invalid: give a table, e.g. "
                        f"--set 'backend_options={{seed=3}}'")
    settings = {name: getattr(args, name) for name in _SETTING_FLAGS}
    model_fields = {f.name for f in dataclasses.fields(QELMConfig)} - set(TRAIN_DEFAULTS)
    sets = [(n, v) for n, v in args.set if n in TRAIN_DEFAULTS]
    args.set = [(n, v) for n, v in args.set if n not in TRAIN_DEFAULTS]
    for name, value in sets:
        if settings.get(name) is not None and settings[name] != value:
            raise UserError(f"{name} is given twice ({settings[name]!r} and {value!r}): give it once")
        settings[name] = value
    changes = model_overrides(args, set(TRAIN_DEFAULTS))
    return {k: v for k, v in changes.items() if k in model_fields}, settings, runtime


def run_train(args: argparse.Namespace) -> int:
    start = time.perf_counter()
    set_threads(args)
    if args.resume and args.out and Path(args.out) != Path(args.resume):
        raise UserError(f"--resume {args.resume} continues the run in that folder; drop --out {args.out} "
                        f"(or make it the same folder)")
    if not args.resume and not args.data:
        raise UserError("--data is required: a UTF-8 text file to train on (or --resume DIR to continue a run)")
    out = args.resume or args.out or "runs/train"
    changes, settings, runtime = _train_options(args)
    backend, backend_options = noise_backend(args)
    backend = backend or runtime.get("backend")  # the flags win over --set
    shots = {"shots": runtime["shots"]} if "shots" in runtime else {}
    backend_options = {**runtime.get("backend_options", {}), **shots, **backend_options}
    if backend_options:
        settings["backend_options"] = backend_options
    rank, world = init_distributed(args.device)
    try:
        result = _train_call(config=args.config, data=args.data, out=out, backend=backend, resume=bool(args.resume),
                             overwrite=args.overwrite, device=args.device, config_changes=changes,
                             callback=Progress() if rank == 0 else None, report_to=tuple(args.report_to or ()),
                             **settings)
    finally:
        if world > 1 and dist.is_initialized():
            dist.destroy_process_group()
    if rank == 0:
        print(f"\nTrained: {_describe_run(result.summary)}\n")
        _print_results(result)
        print(f"\n{_wrote(result, Path(out))}")
        print(f"Wall time: {duration(time.perf_counter() - start)}")
    return 0
