"""``qelm demo``, ``qelm train``, ``qelm eval``, ``qelm generate`` and ``qelm chat``: thin wrappers that parse
arguments, call :mod:`qelm.train`, :mod:`qelm.evaluate` and :mod:`qelm.chat`, and print.

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

from . import (UserError, check_output_file, nonnegative_float, nonnegative_int, positive_float, positive_int, seed, show_progress,
               threads)
from .options import assignment

DEFAULT_THREADS = 1  # see --threads
_THREADS_HELP = ("torch CPU threads per process (default 1: these models' tensors are too small to gain from "
                 "intra-op threads, and on a busy 2-core machine 2 threads made a QELM step ~10x slower than 1)")


def register(subparsers: argparse._SubParsersAction) -> None:
    _register_demo(subparsers)
    _register_train(subparsers)
    _register_eval_and_generate(subparsers)


def _register_demo(subparsers: argparse._SubParsersAction) -> None:
    from ..train import TRAIN_DEFAULTS, load_run_config

    tiny = load_run_config(None)[1]
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
    _add_runtime(demo)
    demo.set_defaults(func=run_demo)


def _train_default(name: str, tiny: dict[str, Any]) -> str:
    """Where ``qelm train`` takes a setting from when its flag is left out, in words."""
    from ..train import TRAIN_DEFAULTS

    built_in = {"eval_every": "five evaluations over the run", "save_every": "five checkpoints over the run",
                "warmup_steps": "5%% of the steps", "min_lr": "lr / 10", "vocab_size": "none (char tokenizer)"}
    fallback = built_in.get(name, TRAIN_DEFAULTS[name])
    if name in tiny:
        return (f"default {tiny[name]}: the bundled tiny config's [train]; with --config, that file's [train], else "
                f"{fallback}")
    return f"default {fallback}: qelm's own; a --config file's [train] may set it"


def _register_train(subparsers: argparse._SubParsersAction) -> None:
    from ..train import load_run_config
    from .options import add_model_flags, flag

    tiny_model, tiny = load_run_config(None)
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
    _add_runtime(tr)
    _add_noise(tr, train=True)
    tr.set_defaults(func=run_train)


_MODEL_FIELDS = ("vocab_size", "d_model", "n_heads", "d_hidden", "n_layers", "context_len", "n_qubits", "circuit_layers",
                 "embedding", "embedding_circuit", "attention", "fidelity_method", "feed_forward", "readout")


def _register_eval_and_generate(subparsers: argparse._SubParsersAction) -> None:
    from .options import add_json_flag, add_sampling_flags

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
    _add_runtime(ev)
    _add_noise(ev, train=False)
    ev.set_defaults(func=run_eval)

    gen = subparsers.add_parser("generate", help="sample text from a checkpoint",
                                description="Continue a prompt with text sampled from a checkpoint, printed as it is "
                                            "sampled. The sampling flags are Hugging Face's.")
    gen.add_argument("--checkpoint", required=True, metavar="DIR",
                     help="checkpoint folder (e.g. runs/demo/qelm, or runs/demo/qelm/best; no default)")
    gen.add_argument("--prompt", required=True, help="text to continue (no default)")
    add_sampling_flags(gen)
    _add_runtime(gen)
    gen.set_defaults(func=run_generate)

    chat = subparsers.add_parser("chat", help="talk with a checkpoint: each line you type, the model continues",
                                 description="An interactive loop: each line read (from the terminal, or piped in) is "
                                             "added to the conversation, and the model's reply is streamed as it is "
                                             "sampled, up to --max-new-tokens or a --stop string (default: the end of "
                                             "the line). The model reads the whole conversation up to its context "
                                             "length; older tokens drop out. /reset forgets the conversation; /quit, "
                                             "Ctrl-D or the end of the input ends.")
    chat.add_argument("checkpoint_dir", nargs="?", metavar="CHECKPOINT",
                      help="checkpoint folder (no default: give it, or --checkpoint)")
    chat.add_argument("--checkpoint", metavar="DIR", help="checkpoint folder, as CHECKPOINT (no default: give one of the two)")
    add_sampling_flags(chat, stop=CHAT_STOP, max_new_tokens=CHAT_MAX_NEW_TOKENS)
    _add_runtime(chat)
    chat.set_defaults(func=run_chat)


CHAT_STOP = ("\n",)  # a reply ends with its line
CHAT_MAX_NEW_TOKENS = 200


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


def _add_runtime(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--backend", metavar="NAME", help="simulator for the circuits (default: the config's; weights are unchanged)")
    parser.add_argument("--threads", type=threads, default=DEFAULT_THREADS, metavar="N", help=_THREADS_HELP)


def _add_noise(parser: argparse.ArgumentParser, *, train: bool) -> None:
    group = parser.add_argument_group("noise and shots (backend qiskit.aer)")
    group.add_argument("--noise", metavar="SPEC",
                       help="noise model: depolarizing[:p1=P,p2=P], thermal[:t1=S,t2=S,time1=S,time2=S], "
                            "readout[:p0to1=P,p1to0=P], joined with '+', or a device's calibration (fake_manila, "
                            "fake_sherbrooke, ...: circuits are transpiled to it); needs --shots (default: none, exact)")
    group.add_argument("--shots", type=int, help="measurements per circuit (default: exact expectations)")
    if train:
        group.add_argument("--grad", choices=("parameter-shift", "spsa"),
                           help="circuit gradients on qiskit.aer: parameter-shift (2 circuits per angle, the default) "
                                "or spsa (2 circuits per sample)")
    else:
        group.add_argument("--mitigate", metavar="SPEC",
                           help="error mitigation: zne[:fit=richardson|linear,scales=1/3/5,fold=global|random], "
                                "readout[:shots=N], twirl[:n=4], joined with '+'; needs --noise (default: none)")


def _noise_backend(args: argparse.Namespace) -> tuple[str | None, dict[str, Any]]:
    """``(backend, options)`` from --noise, --shots, --mitigate and --grad, every one checked before any work;
    ``(args.backend, {})`` when none is given."""
    noise, shots = args.noise, args.shots
    mitigation, grad = getattr(args, "mitigate", None), getattr(args, "grad", None)
    if noise is None and shots is None and mitigation is None and grad is None:
        return args.backend, {}
    from ..backends import MAX_SHOTS

    if shots is not None and not 1 <= shots <= MAX_SHOTS:
        raise UserError(f"--shots {shots} is invalid: use an integer from 1 to {MAX_SHOTS} (2**31 - 1)")
    backend = args.backend or "qiskit.aer"
    for flag, value in (("--noise", noise), ("--mitigate", mitigation), ("--grad", grad)):
        if value is not None and backend != "qiskit.aer":
            raise UserError(f"{flag} runs on backend qiskit.aer only (noise models, shots, batched parameter shift); "
                            f"--backend {backend} cannot: use --backend qiskit.aer or drop --backend")
    if noise is not None:
        from ..noise import parse_noise

        try:
            noise = parse_noise(noise).spec
        except ValueError as e:
            raise UserError(f"--noise {args.noise!r} is invalid: {str(e).split(': ', 1)[-1]}") from None
        if shots is None:
            raise UserError("--noise needs --shots: noisy hardware answers with measured bitstrings, and readout "
                            "errors and mitigation act on them (e.g. --shots 8192)")
    if mitigation is not None:
        from ..mitigation import parse_mitigation

        if noise is None:
            raise UserError("--mitigate needs --noise (a noise model to mitigate) and --shots")
        try:
            parse_mitigation(mitigation)
        except ValueError as e:
            raise UserError(f"--mitigate {mitigation!r} is invalid: {str(e).split(': ', 1)[-1]}") from None
    options = {"shots": shots, "noise": noise, "mitigation": mitigation,
               "gradient": grad.replace("-", "_") if grad else None,
               "seed": (getattr(args, "seed", None) or 0) if (shots is not None or grad) else None}
    return backend, {k: v for k, v in options.items() if v is not None}


def _set_threads(args: argparse.Namespace) -> None:
    import torch

    torch.set_num_threads(args.threads)


# --- progress and tables --------------------------------------------------------------------------------------
class _Progress:
    """tqdm bars fed by :func:`qelm.train.train`'s callback: loss and tokens/s per model (on a terminal;
    nothing in a pipe).

    The live tokens/s is an exponential moving average of the step times (:attr:`SMOOTHING` weight on the
    newest), so one slow or fast step does not swing it. Each bar is drawn finished once, when its model
    ends, with the rate of its training steps alone (validation and saving left out) and the validation
    perplexity of its last evaluation."""

    SMOOTHING = 0.1  # weight of the newest step in the live tokens/s (tqdm's own smoothing)
    FORMAT = "{desc}: {percentage:3.0f}%|{bar}| {n_fmt}/{total_fmt} [{elapsed}<{remaining}{postfix}]"  # no tqdm rate

    def __init__(self, file=None, announce: str | None = None) -> None:
        self.file = file  # default: stderr
        self.announce = announce  # printed on stdout at the first event: once every input has been checked
        self.bars: dict[str, Any] = {}
        self.per_token: dict[str, float | None] = {}  # smoothed seconds per training token
        self.totals: dict[str, list[float]] = {}  # [tokens, seconds] of the training steps seen
        self.postfix: dict[str, dict[str, str]] = {}
        self.notes = None  # slow steps said in words where no bar is shown (qelm.cli.slow_steps)

    def __call__(self, event: str, name: str, info: dict) -> None:
        from tqdm import tqdm

        from ..train import LABELS
        from .slow_steps import SlowStepNotes

        if self.notes is None and not show_progress():
            self.notes = SlowStepNotes(lambda n: LABELS[n], self.file)
        if self.notes is not None:
            self.notes.seen(event, name, info)

        if self.announce:
            print(self.announce, flush=True)
            self.announce = None
        if event == "start":
            width = max(len(label) for label in LABELS.values())
            self.per_token[name], self.totals[name], self.postfix[name] = None, [0.0, 0.0], {}
            self.bars[name] = tqdm(total=info["steps"], initial=info["step"], desc=f"{LABELS[name]:>{width}}",
                                   unit="step", dynamic_ncols=True, file=self.file or sys.stderr,
                                   disable=not show_progress(), bar_format=self.FORMAT)
        elif event == "step":
            bar, postfix = self.bars[name], self.postfix[name]
            seconds = info["step_seconds"] / info["tokens"]
            old = self.per_token[name]
            self.per_token[name] = seconds if old is None else old + self.SMOOTHING * (seconds - old)
            self.totals[name][0] += info["tokens"]
            self.totals[name][1] += info["step_seconds"]
            postfix.update({"loss": f"{info['loss']:.3f}", "tok/s": f"{1 / self.per_token[name]:.0f}"})
            if "val_loss" in info:
                postfix["val_ppl"] = f"{info['val_perplexity']:.2f}"
            bar.set_postfix(postfix, refresh=False)  # shown by the update below: this step's figures
            if info["step"] < bar.total:
                bar.update(info["step"] - bar.n)  # the last step is drawn once, by "end"
        elif event == "end":
            bar, postfix = self.bars.pop(name), self.postfix.pop(name)
            tokens, seconds = self.totals.pop(name)
            if seconds:
                postfix["tok/s"] = f"{tokens / seconds:.0f}"  # the training steps' own rate
            if info.get("val"):
                postfix["val_ppl"] = f"{info['val']['perplexity']:.2f}"
            bar.set_postfix(postfix, refresh=False)
            bar.n = bar.total
            bar.close()  # draws the finished bar, once

    def close(self) -> None:
        if self.notes is not None:
            self.notes.stop()
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
    announce = (f"qelm demo: training {', '.join(models[:-1])} and {models[-1]} on the same batches of the bundled "
                f"corpus")
    result = _train_call(config=bundled_config(), data=dataset, steps=args.steps, seed=args.seed, out=args.out,
                         backend=args.backend, overwrite=True, matched=args.matched, callback=_Progress(announce=announce))
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


_SETTING_FLAGS = ("steps", "batch_size", "lr", "lr_schedule", "warmup_steps", "min_lr", "weight_decay", "grad_clip",
                  "seed", "tokenizer", "vocab_size", "eval_every", "save_every", "log_every", "twin", "matched")


def _train_options(args: argparse.Namespace) -> tuple[dict[str, Any], dict[str, Any]]:
    """``(model field changes, training settings)`` from the flags and ``--set`` (a name that is both, as
    vocab_size, is the training setting: the model's vocabulary is the tokenizer's)."""
    import dataclasses

    from ..config import QELMConfig
    from ..train import TRAIN_DEFAULTS
    from .options import model_overrides

    settings = {name: getattr(args, name) for name in _SETTING_FLAGS}
    model_fields = {f.name for f in dataclasses.fields(QELMConfig)} - set(TRAIN_DEFAULTS)
    sets = [(n, v) for n, v in args.set if n in TRAIN_DEFAULTS]
    args.set = [(n, v) for n, v in args.set if n not in TRAIN_DEFAULTS]
    for name, value in sets:
        if settings.get(name) is not None and settings[name] != value:
            raise UserError(f"{name} is given twice ({settings[name]!r} and {value!r}): give it once")
        settings[name] = value
    changes = model_overrides(args, set(TRAIN_DEFAULTS))
    return {k: v for k, v in changes.items() if k in model_fields}, settings


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
    changes, settings = _train_options(args)
    backend, backend_options = _noise_backend(args)
    if backend_options:
        settings["backend_options"] = backend_options
    rank, world = init_distributed(args.device)
    try:
        result = _train_call(config=args.config, data=args.data, out=out, backend=backend, resume=bool(args.resume),
                             overwrite=args.overwrite, device=args.device, config_changes=changes,
                             callback=_Progress() if rank == 0 else None, **settings)
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
    from ..files import atomic_write
    from .options import json_to_stdout

    _set_threads(args)
    from ..evaluate import MAX_SAMPLE_TOKENS

    if args.sample_tokens > MAX_SAMPLE_TOKENS:  # before the checkpoint loads
        raise UserError(f"--sample-tokens {args.sample_tokens} is too many: use at most {MAX_SAMPLE_TOKENS} (0 skips "
                        f"the sampled metrics)")
    if args.json and not json_to_stdout(args):
        check_output_file(args.json, "--json", make_parents=True)
    backend, options = _noise_backend(args)
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
    with _bar(ids.numel() - 1, "token") as bar:
        res = evaluate(ck.model, ids, batch_size=args.batch_size, context_len=ck.config.context_len,
                       progress=lambda done, total: bar.update(done - bar.n))
    seconds = time.perf_counter() - begun
    if not math.isfinite(res["loss"]):
        raise UserError(f"the model of {ck.path} gives a cross-entropy of {res['loss']} on this text: its outputs are "
                        f"not finite numbers, so it has no perplexity")
    engine = ck.model.backend if ck.kind == "qelm" else None
    usage = dict(getattr(engine, "usage", None) or {})  # circuits and shots the perplexity took (qiskit.aer)
    more = _comparison_metrics(ck, ids, res["loss"], args)
    backend = ck.config.backend if ck.kind == "qelm" else "none (classical)"
    options = ck.config.backend_options if ck.kind == "qelm" else {}
    record = {"checkpoint": str(ck.path), "kind": ck.kind, "step": ck.step, "which": _which(ck), "data": args.data,
              "split": args.split, "loss": res["loss"], "perplexity": res["perplexity"], "tokens": res["tokens"],
              "unknown_tokens": unknown, "backend": backend, "shots": ck.config.shots,
              "noise": options.get("noise"), "mitigation": options.get("mitigation"),
              "circuits_run": usage.get("circuits"), "shots_taken": usage.get("shots"), "seconds": seconds, **more}
    if json_to_stdout(args):
        print(json.dumps(record))
        return 0
    fell_back = ""
    if unknown:
        from ..tokenizer import describe_chars

        fell_back = (f"; {unknown} of the {ids.numel()} tokens fell back to the unknown token (characters outside the "
                     f"vocabulary: {describe_chars(ck.tokenizer.unknown_characters(part))})")
    print(f"perplexity {res['perplexity']:.4f} (cross-entropy {res['loss']:.4f} nats/token over {res['tokens']} "
          f"tokens of the {args.split} split of {args.data}{fell_back}; checkpoint {ck.describe()}, backend "
          f"{engine.describe() if engine is not None else backend})")
    if usage.get("shots"):
        print(f"{usage['circuits']:,} circuits run, {usage['shots']:,} shots taken (calibration and mitigation "
              f"included), {_duration(seconds)}")
    print(_describe_metrics(more))
    if args.json:
        print(f"wrote {atomic_write(args.json, json.dumps(record, indent=1) + chr(10), make_parents=True)}")
    return 0


def _comparison_metrics(ck, ids, loss: float, args: argparse.Namespace) -> dict[str, Any]:
    """Bits per character (byte), top-1/top-5 accuracy and, on a sample, distinct-1/2 and the repetition rate."""
    from ..evaluate import bits_per_unit, next_token_accuracy, sample_diversity

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
                 f"distinct-1 {_num(m['distinct_1'], '.3f')}, distinct-2 {_num(m['distinct_2'], '.3f')}, "
                 f"repetition rate {_num(m['repetition_rate'], '.3f')}")
    return line


def _which(ck) -> str:
    """"best" (a run's best by validation), "last" (a run's last step) or "checkpoint" (any other)."""
    from ..checkpoint import BEST

    if ck.info.get("role") == "best":
        return "best"
    return "last" if (ck.path / BEST).is_dir() or ck.training_state is not None else "checkpoint"


def _bar(total: int, unit: str):
    """A tqdm bar on stderr, shown on a terminal only (it closes itself as a context manager)."""
    from tqdm import tqdm

    return tqdm(total=total, unit=unit, unit_scale=True, file=sys.stderr, dynamic_ncols=True, leave=False,
                disable=not show_progress())


def _note_unknown(command: str, tokenizer, text: str, what: str) -> None:
    """A note on stderr naming the characters of ``text`` that become the unknown token."""
    unknown = tokenizer.unknown_characters(text) if getattr(tokenizer, "unk_id", None) is not None else set()
    if unknown:
        from ..tokenizer import describe_chars

        print(f"qelm {command}: note: {what} has {len(unknown)} character(s) outside the vocabulary, read as the "
              f"unknown token: {describe_chars(unknown)}", file=sys.stderr)


def run_generate(args: argparse.Namespace) -> int:
    """Print the prompt, then each piece of text as it is sampled; Ctrl-C stops, keeping what was printed."""
    from ..checkpoint import load_checkpoint
    from ..evaluate import stream_text
    from .options import sampling_kwargs

    _set_threads(args)
    ck = load_checkpoint(args.checkpoint, backend=args.backend)
    pieces = stream_text(ck.model, ck.tokenizer, args.prompt, seed=args.seed,
                         **sampling_kwargs(args))  # checks every argument
    print(f"qelm generate: checkpoint {ck.describe()}", file=sys.stderr)
    _note_unknown("generate", ck.tokenizer, args.prompt, "the prompt")
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


def run_chat(args: argparse.Namespace) -> int:
    """Read a line, stream the reply; until /quit or the end of the input. Ctrl-C stops a reply (keeping
    what was printed) and, at the prompt, ends the chat."""
    from ..chat import Chat
    from ..checkpoint import load_checkpoint
    from .options import sampling_kwargs

    if args.checkpoint_dir and args.checkpoint and args.checkpoint_dir != args.checkpoint:
        raise UserError(f"two checkpoints given ({args.checkpoint_dir} and --checkpoint {args.checkpoint}): give one")
    folder = args.checkpoint_dir or args.checkpoint
    if not folder:
        raise UserError("no checkpoint given: qelm chat CHECKPOINT (a checkpoint folder, e.g. runs/demo/qelm)")
    _set_threads(args)
    ck = load_checkpoint(folder, backend=args.backend)
    chat = Chat(ck.model, ck.tokenizer, seed=args.seed, **sampling_kwargs(args, CHAT_STOP))
    interactive = sys.stdin.isatty()
    print(f"qelm chat: checkpoint {ck.describe()}; the model reads the last {chat.context_len} tokens of the "
          f"conversation. /reset forgets it; /quit{' or Ctrl-D' if interactive else ''} ends.", file=sys.stderr)
    while True:
        try:
            line = input("> ") if interactive else sys.stdin.readline()
        except (EOFError, KeyboardInterrupt):
            line = ""
            if interactive:
                print()
                break
        if not interactive and not line:  # the end of the input
            break
        line = line.removesuffix("\n")
        if line.strip() == "/quit":
            break
        if line.strip() == "/reset":
            chat.reset()
            print("qelm chat: conversation forgotten", file=sys.stderr)
            continue
        _note_unknown("chat", ck.tokenizer, line, "the line")
        try:
            for piece in chat.reply(line):
                sys.stdout.write(piece)
                sys.stdout.flush()
        except KeyboardInterrupt:
            print(f"\nqelm chat: reply stopped", file=sys.stderr)
        print(flush=True)
    return 0
