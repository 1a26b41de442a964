"""``qelm eval``: a checkpoint's perplexity on a text file, and the other metrics models are compared by."""

from __future__ import annotations

import argparse
import json
import math
import textwrap
import time
from typing import Any

import torch

from ..checkpoint import load_checkpoint
from ..data import read_corpus, split_text
from ..evaluate import MAX_SAMPLE_TOKENS, bits_per_unit, evaluate, next_token_accuracy, sample_diversity
from ..files import atomic_write
from ..model_files import BEST
from ..tokenizer import describe_chars
from .options import (UserError, add_json_flag, add_noise_flags, add_runtime_flags, check_output_file, json_to_stdout,
                      noise_backend, nonnegative_int, positive_int, seed, set_threads)
from .progress import duration, number, progress_bar


def register(subparsers: argparse._SubParsersAction) -> None:
    ev = subparsers.add_parser("eval", help="perplexity and the other comparison metrics of a checkpoint on a text file",
                               description=textwrap.fill(
                                   "Validation loss and perplexity of a checkpoint on a text file, by default its last "
                                   "10% (the split training validates on), and the other metrics models are compared "
                                   "by, over the same tokens. Characters outside the checkpoint's vocabulary become its "
                                   "unknown token, and the result says how many tokens did.", 90) + "\n" + _METRICS_HELP,
                               formatter_class=argparse.RawDescriptionHelpFormatter)
    ev.add_argument("--checkpoint", required=True, metavar="DIR",
                    help="checkpoint folder (e.g. runs/demo/qelm: the last step's; runs/demo/qelm/best: the best by "
                         "validation)")
    ev.add_argument("--data", required=True, metavar="FILE", help="UTF-8 text file (no default)")
    ev.add_argument("--split", choices=("val", "train", "all"), default="val",
                    help="val: the last 10%% (default); train: the first 90%%; all: the whole text")
    ev.add_argument("--batch-size", type=positive_int, default=64, help="windows per forward pass (default 64)")
    ev.add_argument("--sample-tokens", type=nonnegative_int, default=400, metavar="N",
                    help="tokens to sample for distinct-1/2 and the repetition rate (default 400, at most 100000; 0 "
                         "skips them)")
    ev.add_argument("--seed", type=seed, default=0, help="sampling seed of those tokens (default 0)")
    add_json_flag(ev, "the result")
    add_runtime_flags(ev)
    add_noise_flags(ev, train=False)
    ev.set_defaults(func=run_eval)


_METRICS_HELP = """
metrics:
  perplexity       exp(mean next-token cross-entropy); lower is better
  bits per char    the cross-entropy in bits per character of the scored text (per UTF-8
                   byte for a BPE tokenizer): comparable across tokenizers; lower is better
  top-1 / top-5    share of tokens that are the model's most likely next token / among its
                   5 most likely
  distinct-1/-2    on text sampled from the model (temperature 1, --seed, after the first
                   token of the split): distinct words / all words, distinct word pairs / all
                   word pairs; low values mean the model reuses few words
  repetition rate  on the same sample: share of its word 4-grams that already occurred
                   earlier in it (a sampler stuck in a loop approaches 1)
"""


def run_eval(args: argparse.Namespace) -> int:
    set_threads(args)
    if args.sample_tokens > MAX_SAMPLE_TOKENS:  # before the checkpoint loads
        raise UserError(f"--sample-tokens {args.sample_tokens} is too many: use at most {MAX_SAMPLE_TOKENS} (0 skips "
                        f"the sampled metrics)")
    if args.json and not json_to_stdout(args):
        check_output_file(args.json, "--json", make_parents=True)
    backend, options = noise_backend(args)
    ck = load_checkpoint(args.checkpoint, backend=backend, **options)
    if ck.kind == "classical" and options:  # a classical model runs no circuit: the flags would be ignored
        given = " and ".join(f for f, v in (("--noise", args.noise), ("--shots", args.shots),
                                             ("--mitigate", getattr(args, "mitigate", None))) if v is not None)
        raise UserError(f"{given} do not apply to {ck.path}: it is a classical model, which runs no circuit; drop "
                        f"{given} (or evaluate a QELM checkpoint)")
    text = read_corpus(args.data)
    train_text, val_text = split_text(text)
    part = {"val": val_text, "train": train_text, "all": text}[args.split]
    ids = torch.tensor(ck.tokenizer.encode(part), dtype=torch.long)  # unknown characters: the unknown token
    if ids.numel() < 2:
        raise UserError(f"the {args.split} split of {args.data} has {ids.numel()} token(s); scoring needs at least 2: "
                        f"use a longer text")
    unknown = ck.tokenizer.count_unknown(part)
    # more windows than the text holds changes nothing: cap it (a huge --batch-size overflowed in torch)
    args.batch_size = min(args.batch_size, max(1, ids.numel()))
    begun = time.perf_counter()
    with progress_bar(ids.numel() - 1, "token") as bar:
        res = evaluate(ck.model, ids, batch_size=args.batch_size, context_len=ck.config.context_len,
                       progress=lambda done, total: bar.update(done - bar.n))
    seconds = time.perf_counter() - begun
    if not math.isfinite(res["loss"]):
        raise UserError(f"the model of {ck.path} gives a cross-entropy of {res['loss']} on this text: its outputs are "
                        f"not finite numbers, so it has no perplexity")
    engine = ck.model.backend if ck.kind == "qelm" else None
    usage = dict(getattr(engine, "usage", None) or {})  # circuits and shots the perplexity took (qiskit.aer)
    more = _comparison_metrics(ck, ids, res["loss"], args)
    spec = ck.model.spec
    backend = spec.name if ck.kind == "qelm" else "none (classical)"
    options = spec.options if ck.kind == "qelm" else {}
    record = {"checkpoint": str(ck.path), "kind": ck.kind, "step": ck.step, "which": _which(ck), "data": args.data,
              "split": args.split, "loss": res["loss"], "perplexity": res["perplexity"], "tokens": res["tokens"],
              "unknown_tokens": unknown, "backend": backend, "shots": spec.shots,
              "noise": options.get("noise"), "mitigation": options.get("mitigation"),
              "circuits_run": usage.get("circuits"), "shots_taken": usage.get("shots"), "seconds": seconds, **more}
    if json_to_stdout(args):
        print(json.dumps(record))
        return 0
    fell_back = ""
    if unknown:
        fell_back = (f"; {unknown} of the {ids.numel()} tokens fell back to the unknown token (characters outside the "
                     f"vocabulary: {describe_chars(ck.tokenizer.unknown_characters(part))})")
    print(f"perplexity {res['perplexity']:.4f} (cross-entropy {res['loss']:.4f} nats/token over {res['tokens']} "
          f"tokens of the {args.split} split of {args.data}{fell_back}; checkpoint {ck.describe()}, backend "
          f"{engine.describe() if engine is not None else backend})")
    if usage.get("shots"):
        print(f"{usage['circuits']:,} circuits run, {usage['shots']:,} shots taken (calibration and mitigation "
              f"included), {duration(seconds)}")
    print(_describe_metrics(more))
    if args.json:
        print(f"wrote {atomic_write(args.json, json.dumps(record, indent=1) + chr(10), make_parents=True)}")
    return 0


def _comparison_metrics(ck, ids, loss: float, args: argparse.Namespace) -> dict[str, Any]:
    """Bits per character (byte), top-1/top-5 accuracy and, on a sample, distinct-1/2 and the repetition rate."""
    bits, unit = bits_per_unit(loss, ids, ck.tokenizer)
    out: dict[str, Any] = {f"bits_per_{unit}": bits,
                           **next_token_accuracy(ck.model, ids, batch_size=args.batch_size,
                                                 context_len=ck.config.context_len)}
    if args.sample_tokens:
        sample = sample_diversity(ck.model, ck.tokenizer, ids[:1], max_new_tokens=args.sample_tokens, seed=args.seed)
        out.update({k: v for k, v in sample.items() if k != "text"}, sample_tokens=args.sample_tokens,
                   sample_seed=args.seed)
    return out


def _describe_metrics(m: dict[str, Any]) -> str:
    unit = "character" if "bits_per_character" in m else "byte"
    line = (f"bits per {unit} {m[f'bits_per_{unit}']:.4f}; next-token accuracy top-1 {m['top1_accuracy']:.1%}, "
            f"top-5 {m['top5_accuracy']:.1%}")
    if "sample_tokens" in m:
        line += (f"; on {m['sample_tokens']} sampled tokens ({m['words']} words, seed {m['sample_seed']}): "
                 f"distinct-1 {number(m['distinct_1'], '.3f')}, distinct-2 {number(m['distinct_2'], '.3f')}, "
                 f"repetition rate {number(m['repetition_rate'], '.3f')}")
    return line


def _which(ck) -> str:
    """"best" (a run's best by validation), "last" (a run's last step) or "checkpoint" (any other)."""
    if ck.info.get("role") == "best":
        return "best"
    return "last" if (ck.path / BEST).is_dir() or ck.training_state is not None else "checkpoint"
