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

from . import UserError

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
    demo.add_argument("--steps", type=int, help="optimizer steps per model (default: the demo config's)")
    demo.add_argument("--seed", type=int, help="seed of initialisation and batches (default 0)")
    demo.add_argument("--prompt", default="The ", help="text the samples continue (default 'The ')")
    demo.add_argument("--max-new-tokens", type=int, default=200, help="length of each sample (default 200)")
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
    tr.add_argument("--steps", type=int, help="total optimizer steps per model")
    tr.add_argument("--batch-size", type=int, help="global batch size (split over processes)")
    tr.add_argument("--lr", type=float, help="AdamW learning rate")
    tr.add_argument("--seed", type=int, help="seed of initialisation and batches")
    tr.add_argument("--tokenizer", choices=("char", "bpe"), help="char (default) or byte-level BPE")
    tr.add_argument("--vocab-size", type=int, help="BPE vocabulary size, e.g. 100")
    tr.add_argument("--eval-every", type=int, help="steps between validation evaluations")
    tr.add_argument("--save-every", type=int, help="steps between checkpoints")
    tr.add_argument("--log-every", type=int, help="steps between metrics records")
    tr.add_argument("--no-twin", dest="twin", action="store_const", const=False,
                    help="skip the classical twin (the same config with every slot classical)")
    tr.add_argument("--no-matched", dest="matched", action="store_const", const=False,
                    help="skip the parameter-matched classical model (ClassicalLM.matched_to(qelm))")
    tr.add_argument("--device", default="cpu", help="cpu (default) or cuda")
    _add_runtime(tr)
    _add_noise(tr, train=True)
    tr.set_defaults(func=run_train)


def _register_eval_and_generate(subparsers: argparse._SubParsersAction) -> None:
    ev = subparsers.add_parser("eval", help="perplexity of a checkpoint on a text file",
                               description="Validation loss and perplexity of a checkpoint on a text file: by default "
                                           "its last 10%% (the split training validates on).")
    ev.add_argument("--checkpoint", required=True, help="checkpoint folder (e.g. runs/demo/qelm)")
    ev.add_argument("--data", required=True, help="UTF-8 text file")
    ev.add_argument("--split", choices=("val", "train", "all"), default="val",
                    help="val: the last 10%% (default); train: the first 90%%; all: the whole text")
    ev.add_argument("--batch-size", type=int, default=64, help="windows per forward pass (default 64)")
    ev.add_argument("--json", action="store_true", help="print one JSON object")
    _add_runtime(ev)
    _add_noise(ev, train=False)
    ev.set_defaults(func=run_eval)

    gen = subparsers.add_parser("generate", help="sample text from a checkpoint",
                                description="Continue a prompt with text sampled from a checkpoint.")
    gen.add_argument("--checkpoint", required=True, help="checkpoint folder (e.g. runs/demo/qelm)")
    gen.add_argument("--prompt", required=True, help="text to continue")
    gen.add_argument("--max-new-tokens", type=int, default=200, help="tokens to sample (default 200)")
    gen.add_argument("--temperature", type=float, default=1.0, help="sampling temperature > 0 (default 1.0)")
    gen.add_argument("--top-k", type=int, help="sample among the k most likely tokens only")
    gen.add_argument("--seed", type=int, default=0, help="sampling seed: the same seed gives the same text (default 0)")
    _add_runtime(gen)
    gen.set_defaults(func=run_generate)


def _add_runtime(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--backend", help="simulator for the circuits (default: the config's; weights are unchanged)")
    parser.add_argument("--threads", type=int, default=DEFAULT_THREADS, help=_THREADS_HELP)


def _add_noise(parser: argparse.ArgumentParser, *, train: bool) -> None:
    group = parser.add_argument_group("noise and shots (backend qiskit.aer)")
    group.add_argument("--noise", metavar="SPEC",
                       help="noise model: depolarizing[:p1=P,p2=P], thermal[:t1=S,t2=S,time1=S,time2=S], "
                            "readout[:p0to1=P,p1to0=P], joined with '+', or a device's calibration (fake_manila, "
                            "fake_sherbrooke, ...: circuits are transpiled to it); needs --shots")
    group.add_argument("--shots", type=int, help="measurements per circuit (default: exact expectations)")
    if train:
        group.add_argument("--grad", choices=("parameter-shift", "spsa"),
                           help="circuit gradients on qiskit.aer: parameter-shift (2 circuits per angle, the default) "
                                "or spsa (2 circuits per sample)")
    else:
        group.add_argument("--mitigate", metavar="SPEC",
                           help="error mitigation: zne[:fit=richardson|linear,scales=1/3/5,fold=global|random], "
                                "readout[:shots=N], twirl[:n=4], joined with '+'; needs --noise")
        group.add_argument("--seed", type=int, default=0, help="seed of the sampled shots (default 0)")


def _noise_backend(args: argparse.Namespace) -> tuple[str | None, dict[str, Any]]:
    """``(backend, options)`` from --noise, --shots, --mitigate and --grad, every one checked before any work;
    ``(None, {})`` when none is given."""
    noise, shots = args.noise, args.shots
    mitigation, grad = getattr(args, "mitigate", None), getattr(args, "grad", None)
    if noise is None and shots is None and mitigation is None and grad is None:
        return args.backend, {}
    if shots is not None and shots < 1:
        raise UserError(f"--shots {shots} is invalid: use an integer >= 1")
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

    if args.threads < 1:
        raise UserError(f"--threads {args.threads} is invalid: use an integer >= 1")
    torch.set_num_threads(args.threads)


# --- progress and tables --------------------------------------------------------------------------------------
class _Progress:
    """tqdm bars fed by :func:`qelm.train.train`'s callback: loss and tokens/s per model."""

    def __init__(self) -> None:
        self.bars: dict[str, Any] = {}

    def __call__(self, event: str, name: str, info: dict) -> None:
        from tqdm import tqdm

        from ..train import LABELS

        if event == "start":
            width = max(len(label) for label in LABELS.values())
            self.bars[name] = tqdm(total=info["steps"], initial=info["step"], desc=f"{LABELS[name]:>{width}}",
                                   unit="step", dynamic_ncols=True, file=sys.stderr)
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
    from ..data import bundled_config, bundled_corpus
    from ..evaluate import generate_text
    from ..train import LABELS

    start = time.perf_counter()
    _set_threads(args)
    if args.max_new_tokens < 0:
        raise UserError(f"--max-new-tokens {args.max_new_tokens} is invalid: use an integer >= 0")
    models = ["the tiny QELM", "its classical twin (the same config with every slot classical)"]
    if args.matched is not False:
        models.append("a classical model of the QELM's parameter count")
    print(f"qelm demo: training {', '.join(models[:-1])} and {models[-1]} on the same batches of the bundled corpus",
          flush=True)
    result = _train_call(config=bundled_config(), data=bundled_corpus(), steps=args.steps, seed=args.seed, out=args.out,
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
    backend, backend_options = _noise_backend(args)
    rank, world = init_distributed(args.device)
    try:
        result = _train_call(config=args.config, data=args.data, steps=args.steps, batch_size=args.batch_size,
                             lr=args.lr, seed=args.seed, out=out, backend=backend, backend_options=backend_options,
                             resume=bool(args.resume),
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
    import torch

    from ..checkpoint import load_checkpoint
    from ..data import read_corpus, split_text
    from ..evaluate import evaluate

    _set_threads(args)
    backend, options = _noise_backend(args)
    ck = load_checkpoint(args.checkpoint, backend=backend, **options)
    text = read_corpus(args.data)
    train_text, val_text = split_text(text)
    part = {"val": val_text, "train": train_text, "all": text}[args.split]
    ids = torch.tensor(ck.tokenizer.encode(part), dtype=torch.long)
    if ids.numel() < 2:
        raise UserError(f"the {args.split} split of {args.data} has {ids.numel()} token(s); scoring needs at least 2: "
                        f"use a longer text")
    start = time.perf_counter()
    res = evaluate(ck.model, ids, batch_size=args.batch_size, context_len=ck.config.context_len)
    seconds = time.perf_counter() - start
    engine = ck.model.backend if ck.kind == "qelm" else None
    backend = engine.describe() if engine is not None else "none (classical)"
    usage = dict(getattr(engine, "usage", None) or {})
    if args.json:
        print(json.dumps({"checkpoint": str(ck.path), "kind": ck.kind, "data": args.data, "split": args.split,
                          "loss": res["loss"], "perplexity": res["perplexity"], "tokens": res["tokens"],
                          "backend": ck.config.backend if ck.kind == "qelm" else backend, "shots": ck.config.shots,
                          "noise": ck.config.backend_options.get("noise"),
                          "mitigation": ck.config.backend_options.get("mitigation"), "circuits_run": usage.get("circuits"),
                          "shots_taken": usage.get("shots"), "seconds": seconds}))
    else:
        print(f"perplexity {res['perplexity']:.4f} (cross-entropy {res['loss']:.4f} nats/token over {res['tokens']} "
              f"tokens of the {args.split} split of {args.data}; {ck.kind} model {ck.path}, backend {backend})")
        if usage.get("shots"):
            print(f"{usage['circuits']:,} circuits run, {usage['shots']:,} shots taken (calibration and mitigation "
                  f"included), {_duration(seconds)}")
    return 0


def run_generate(args: argparse.Namespace) -> int:
    from ..checkpoint import load_checkpoint
    from ..evaluate import generate_text

    _set_threads(args)
    ck = load_checkpoint(args.checkpoint, backend=args.backend)
    text = generate_text(ck.model, ck.tokenizer, args.prompt, max_new_tokens=args.max_new_tokens,
                         temperature=args.temperature, top_k=args.top_k, seed=args.seed)
    print(args.prompt + text)
    return 0
