"""``qelm demo``, ``qelm train``, ``qelm eval`` and ``qelm generate``: thin wrappers that parse arguments,
call :mod:`qelm.train` and :mod:`qelm.evaluate`, and print.

``demo`` trains the tiny QELM, its classical twin and the parameter-matched classical model on the bundled
corpus, shows their validation perplexities beside the unigram baseline's, says how the QELM compares with
each classical model, prints a sample from each, and leaves checkpoints, metrics, ``summary.json`` and
``loss_curve.png`` in ``--out``.
"""

from __future__ import annotations

import argparse
import json
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

from . import UserError, nonnegative_int, positive_float, positive_int, seed, show_progress, threads

DEFAULT_THREADS = 1  # see --threads
_THREADS_HELP = ("torch CPU threads per process (default 1: these models' tensors are too small to gain from "
                 "intra-op threads, and on a busy 2-core machine 2 threads made a QELM step ~10x slower than 1)")


def register(subparsers: argparse._SubParsersAction) -> None:
    _register_demo(subparsers)
    _register_train(subparsers)
    _register_eval_and_generate(subparsers)


def _register_demo(subparsers: argparse._SubParsersAction) -> None:
    demo = subparsers.add_parser("demo", help="train a tiny QELM and two classical baselines on the bundled corpus "
                                              "and compare",
                                 description="Train the tiny demo QELM, its classical twin (same config, every slot "
                                             "classical) and a classical model of the QELM's parameter count on the "
                                             "bundled corpus (same seed, batches and steps); print their validation "
                                             "perplexities, the unigram baseline, how the QELM compares with each, and "
                                             "a sample from each.")
    demo.add_argument("--out", default="runs/demo",
                      help="run folder to write (default: runs/demo; replaced if it holds a run)")
    demo.add_argument("--steps", type=positive_int, help="optimizer steps per model (default: the demo config's)")
    demo.add_argument("--seed", type=seed, help="seed of initialisation and batches (default 0)")
    demo.add_argument("--prompt", default="The ", help="text the samples continue (default 'The ')")
    demo.add_argument("--max-new-tokens", type=nonnegative_int, default=200, help="length of each sample (default 200)")
    demo.add_argument("--no-matched", dest="matched", action="store_const", const=False,
                      help="skip the parameter-matched classical model")
    _add_runtime(demo)
    demo.set_defaults(func=run_demo)


def _register_train(subparsers: argparse._SubParsersAction) -> None:
    tr = subparsers.add_parser("train", help="train a QELM and its classical baselines on a text file",
                               description="Train a QELM, its classical twin and the parameter-matched classical "
                                           "model on any UTF-8 text file. Settings left out come from the config's "
                                           "[train] table, then built-in defaults. Run with torchrun "
                                           "--nproc-per-node N for data-parallel training.")
    tr.add_argument("--data", help="UTF-8 text file to train on (required unless --resume)")
    tr.add_argument("--config", help="TOML config: [model] and optional [train] tables (default: the tiny demo config)")
    tr.add_argument("--out", help="run folder to write (default: runs/train)")
    tr.add_argument("--resume", metavar="DIR",
                    help="continue the run in DIR from its last checkpoint (--steps is the total; default: the run's)")
    tr.add_argument("--overwrite", action="store_true", help="replace a run already in --out")
    tr.add_argument("--steps", type=positive_int, help="total optimizer steps per model")
    tr.add_argument("--batch-size", type=positive_int, help="global batch size (split over processes)")
    tr.add_argument("--lr", type=positive_float, help="AdamW learning rate")
    tr.add_argument("--seed", type=seed, help="seed of initialisation and batches")
    tr.add_argument("--tokenizer", choices=("char", "bpe"), help="char (default) or byte-level BPE")
    tr.add_argument("--vocab-size", type=positive_int, help="BPE vocabulary size, e.g. 100")
    tr.add_argument("--eval-every", type=positive_int, help="steps between validation evaluations")
    tr.add_argument("--save-every", type=positive_int, help="steps between checkpoints")
    tr.add_argument("--log-every", type=positive_int, help="steps between metrics records")
    tr.add_argument("--no-twin", dest="twin", action="store_const", const=False,
                    help="skip the classical twin (the same config with every slot classical)")
    tr.add_argument("--no-matched", dest="matched", action="store_const", const=False,
                    help="skip the parameter-matched classical model (ClassicalLM.matched_to(qelm))")
    tr.add_argument("--device", default="cpu", help="cpu (default) or cuda")
    _add_runtime(tr)
    tr.set_defaults(func=run_train)


def _register_eval_and_generate(subparsers: argparse._SubParsersAction) -> None:
    ev = subparsers.add_parser("eval", help="perplexity of a checkpoint on a text file",
                               description="Validation loss and perplexity of a checkpoint on a text file: by default "
                                           "its last 10%% (the split training validates on).")
    ev.add_argument("--checkpoint", required=True, help="checkpoint folder (e.g. runs/demo/qelm)")
    ev.add_argument("--data", required=True, help="UTF-8 text file")
    ev.add_argument("--split", choices=("val", "train", "all"), default="val",
                    help="val: the last 10%% (default); train: the first 90%%; all: the whole text")
    ev.add_argument("--batch-size", type=positive_int, default=64, help="windows per forward pass (default 64)")
    ev.add_argument("--json", action="store_true", help="print one JSON object")
    _add_runtime(ev)
    ev.set_defaults(func=run_eval)

    gen = subparsers.add_parser("generate", help="sample text from a checkpoint",
                                description="Continue a prompt with text sampled from a checkpoint.")
    gen.add_argument("--checkpoint", required=True, help="checkpoint folder (e.g. runs/demo/qelm)")
    gen.add_argument("--prompt", required=True, help="text to continue")
    gen.add_argument("--max-new-tokens", type=nonnegative_int, default=200, help="tokens to sample (default 200)")
    gen.add_argument("--temperature", type=positive_float, default=1.0, help="sampling temperature > 0 (default 1.0)")
    gen.add_argument("--top-k", type=positive_int, help="sample among the k most likely tokens only")
    gen.add_argument("--seed", type=seed, default=0, help="sampling seed: the same seed gives the same text (default 0)")
    _add_runtime(gen)
    gen.set_defaults(func=run_generate)


def _add_runtime(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--backend", help="simulator for the circuits (default: the config's; weights are unchanged)")
    parser.add_argument("--threads", type=threads, default=DEFAULT_THREADS, help=_THREADS_HELP)


def _set_threads(args: argparse.Namespace) -> None:
    import torch

    torch.set_num_threads(args.threads)


# --- progress and tables --------------------------------------------------------------------------------------
class _Progress:
    """tqdm bars fed by :func:`qelm.train.train`'s callback: loss and tokens/s per model (on a terminal;
    nothing in a pipe)."""

    def __init__(self) -> None:
        self.bars: dict[str, Any] = {}

    def __call__(self, event: str, name: str, info: dict) -> None:
        from tqdm import tqdm

        from ..train import LABELS

        if event == "start":
            width = max(len(label) for label in LABELS.values())
            self.bars[name] = tqdm(total=info["steps"], initial=info["step"], desc=f"{LABELS[name]:>{width}}",
                                   unit="step", dynamic_ncols=True, file=sys.stderr, disable=not show_progress())
        elif event == "step":
            bar = self.bars[name]
            postfix = {"loss": f"{info['loss']:.3f}", "tok/s": f"{info['tokens_per_s']:.0f}"}
            if "val_loss" in info:
                postfix["val_ppl"] = f"{info['val_perplexity']:.2f}"
            bar.set_postfix(postfix, refresh=False)  # shown by the update below: this step's figures
            bar.update(info["step"] - bar.n)
        elif event == "end":
            self.bars.pop(name).close()

    def close(self) -> None:
        for bar in self.bars.values():
            bar.close()
        self.bars.clear()


def _mib(n: int | None) -> str:
    return "-" if n is None else f"{n / 2**20:.0f} MiB"


def _num(x: float | None, fmt: str) -> str:
    return "-" if x is None else format(x, fmt)


def _print_results(result) -> None:
    """The comparison table, the verdict and the method, from ``result.summary``."""
    from ..train import LABELS

    s = result.summary
    rows = [("model", "params", "circuit", "val loss", "val ppl", "train tok/s", "train time", "peak mem")]
    for name in ("qelm", "twin", "matched"):
        m = s["models"].get(name)
        if m is None:
            continue
        rows.append((LABELS[name], str(m["parameters"]), str(m["circuit_parameters"]), _num(m["val_loss"], ".4f"),
                     _num(m["val_perplexity"], ".3f"), _num(m["tokens_per_s"], ".0f"),
                     f"{m['train_seconds']:.1f} s", _mib(m["peak_memory_bytes"])))
    u = s["unigram"]
    rows.append((LABELS["unigram"], "-", "-", f"{u['val_loss']:.4f}", f"{u['val_perplexity']:.3f}", "-", "-", "-"))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for r in rows:
        print("  " + "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths))))
    print()
    print(textwrap.fill(f"Result: {s['verdict']}.", width=110, subsequent_indent="  "))
    print(f"Method: {s['method']}")


def _describe_run(s: dict) -> str:
    d, r = s["data"], s["run"]
    procs = f", {r['world_size']} processes" if r["world_size"] > 1 else ""
    return (f"{r['steps']} steps of {r['batch_size']} x {r['context_len']} tokens, AdamW lr {r['lr']}, seed {r['seed']}, "
            f"backend {r['backend']}{procs}; corpus {d['source']} ({d['chars']} characters, {d['tokenizer']} tokenizer, "
            f"{d['vocab_size']} tokens, {d['train_tokens']} train / {d['val_tokens']} validation tokens)")


def _duration(seconds: float) -> str:
    m, s = divmod(seconds, 60)
    return f"{int(m)}m{s:04.1f}s" if m else f"{s:.1f}s"


def _train_call(**kwargs):
    from ..train import train

    progress = kwargs.get("callback")
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
    from ..data import TextDataset, bundled_config, bundled_corpus
    from ..evaluate import generate_text
    from ..train import LABELS, load_run_config

    start = time.perf_counter()
    _set_threads(args)
    settings = load_run_config(bundled_config())[1]
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
    print(f"qelm demo: training {', '.join(models[:-1])} and {models[-1]} on the same batches of the bundled corpus",
          flush=True)
    result = _train_call(config=bundled_config(), data=dataset, steps=args.steps, seed=args.seed, out=args.out,
                         backend=args.backend, overwrite=True, matched=args.matched, callback=_Progress())
    s = result.summary
    print(f"\nTrained: {_describe_run(s)}\n")
    _print_results(result)
    for run in _runs(result):
        sample = generate_text(run.model, result.dataset.tokenizer, args.prompt, max_new_tokens=args.max_new_tokens,
                               seed=0 if args.seed is None else args.seed)
        print(f"\nSample from the {LABELS[run.name]} model (temperature 1, seed "
              f"{0 if args.seed is None else args.seed}):\n{args.prompt}{sample}")
    print(f"\n{_wrote(result, Path(args.out))}")
    print(f"Demo wall time: {_duration(time.perf_counter() - start)}")
    return 0


def run_train(args: argparse.Namespace) -> int:
    import torch.distributed as dist

    from ..distributed import init_distributed

    start = time.perf_counter()
    _set_threads(args)
    if args.resume and args.out and Path(args.out) != Path(args.resume):
        raise UserError(f"--resume {args.resume} continues the run in that folder; drop --out {args.out} "
                        f"(or make it the same folder)")
    if not args.resume and not args.data:
        raise UserError("--data is required: a UTF-8 text file to train on (or --resume DIR to continue a run)")
    out = args.resume or args.out or "runs/train"
    rank, world = init_distributed(args.device)
    try:
        result = _train_call(config=args.config, data=args.data, steps=args.steps, batch_size=args.batch_size,
                             lr=args.lr, seed=args.seed, out=out, backend=args.backend, resume=bool(args.resume),
                             overwrite=args.overwrite, twin=args.twin, matched=args.matched, tokenizer=args.tokenizer,
                             vocab_size=args.vocab_size, eval_every=args.eval_every, save_every=args.save_every,
                             log_every=args.log_every, device=args.device,
                             callback=_Progress() if rank == 0 else None)
    finally:
        if world > 1 and dist.is_initialized():
            dist.destroy_process_group()
    if rank == 0:
        print(f"\nTrained: {_describe_run(result.summary)}\n")
        _print_results(result)
        print(f"\n{_wrote(result, Path(out))}")
        print(f"Wall time: {_duration(time.perf_counter() - start)}")
    return 0


def run_eval(args: argparse.Namespace) -> int:
    import math

    import torch

    from ..checkpoint import load_checkpoint
    from ..data import read_corpus, split_text
    from ..evaluate import evaluate

    _set_threads(args)
    ck = load_checkpoint(args.checkpoint, backend=args.backend)
    text = read_corpus(args.data)
    train_text, val_text = split_text(text)
    part = {"val": val_text, "train": train_text, "all": text}[args.split]
    ids = torch.tensor(ck.tokenizer.encode(part), dtype=torch.long)
    if ids.numel() < 2:
        raise UserError(f"the {args.split} split of {args.data} has {ids.numel()} token(s); scoring needs at least 2: "
                        f"use a longer text")
    with _bar(ids.numel() - 1, "token") as bar:
        res = evaluate(ck.model, ids, batch_size=args.batch_size, context_len=ck.config.context_len,
                       progress=lambda done, total: bar.update(done - bar.n))
    if not math.isfinite(res["loss"]):
        raise UserError(f"the model of {ck.path} gives a cross-entropy of {res['loss']} on this text: its outputs are "
                        f"not finite numbers, so it has no perplexity")
    backend = ck.config.backend if ck.kind == "qelm" else "none (classical)"
    if args.json:
        print(json.dumps({"checkpoint": str(ck.path), "kind": ck.kind, "data": args.data, "split": args.split,
                          "loss": res["loss"], "perplexity": res["perplexity"], "tokens": res["tokens"],
                          "backend": backend, "shots": ck.config.shots}))
    else:
        print(f"perplexity {res['perplexity']:.4f} (cross-entropy {res['loss']:.4f} nats/token over {res['tokens']} "
              f"tokens of the {args.split} split of {args.data}; {ck.kind} model {ck.path}, backend {backend})")
    return 0


def _bar(total: int, unit: str):
    """A tqdm bar on stderr, shown on a terminal only (it closes itself as a context manager)."""
    from tqdm import tqdm

    return tqdm(total=total, unit=unit, unit_scale=True, file=sys.stderr, dynamic_ncols=True, leave=False,
                disable=not show_progress())


def run_generate(args: argparse.Namespace) -> int:
    """Print the prompt, then each piece of text as it is sampled; Ctrl-C stops, keeping what was printed."""
    from ..checkpoint import load_checkpoint
    from ..evaluate import stream_text

    _set_threads(args)
    ck = load_checkpoint(args.checkpoint, backend=args.backend)
    pieces = stream_text(ck.model, ck.tokenizer, args.prompt, max_new_tokens=args.max_new_tokens,
                         temperature=args.temperature, top_k=args.top_k, seed=args.seed)  # checks every argument
    sys.stdout.write(args.prompt)
    sys.stdout.flush()
    written = 0
    try:
        for piece in pieces:
            sys.stdout.write(piece)
            sys.stdout.flush()
            written += len(piece)
    except KeyboardInterrupt:
        print(flush=True)
        print(f"qelm generate: interrupted; the {written} character(s) generated before it are printed above",
              file=sys.stderr)
        return 130
    print()
    return 0
