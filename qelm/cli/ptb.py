"""``qelm data ptb DIR``: fetch Penn Treebank. ``qelm ptb``: train and test one row of the Quixer paper's table
(Quixer, its classical twin, the Transformer, LSTM and FNet baselines, qelm's QELM and its matched model) by the
windowed last-token protocol, resumable; results in ``OUT/results.json``."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from ..folders import check_folder
from ..memory import free_memory_bytes
from ..ptb import PTB_SOURCE, fetch_ptb, read_ptb
from ..ptb_models import MODELS, PUBLISHED, build_window_model, published_settings
from ..quixer import Quixer
from ..windows import WindowSettings, train_windows, window_run_layout
from ..words import EOS_MODES, WordTokenizer
from .options import UserError, check_output_folder, nonnegative_float, positive_float, positive_int, seed


def register(subparsers) -> None:
    d = subparsers.add_parser("data", help="fetch a benchmark data set (Penn Treebank)",
                              description="Fetch a benchmark data set into a folder, checked by sha256.")
    dsub = d.add_subparsers(dest="dataset", metavar="DATASET", required=True)
    p = dsub.add_parser("ptb", help="Penn Treebank (Mikolov): ptb.train.txt, ptb.valid.txt, ptb.test.txt",
                        description="Download the three Penn Treebank files (or copy them from a folder) into DIR, "
                                    "each checked against its size and sha256.")
    p.add_argument("dir", metavar="DIR", help="folder to put the files in (made if missing)")
    p.add_argument("--source", default=PTB_SOURCE,
                   help=f"URL prefix or local folder holding the three files (default {PTB_SOURCE})")
    p.set_defaults(func=run_data)

    t = subparsers.add_parser(
        "ptb", help="train and test a row of the Quixer Penn Treebank table",
        description="Train one model of the Quixer paper's Penn Treebank table by its protocol (1,024 parallel "
                    "streams, 32-token windows, the next token of each window predicted; 30 epochs; the "
                    "best-validation epoch tested) and write OUT/results.json. Running the same command again "
                    "resumes a stopped run.")
    t.add_argument("--model", required=True, choices=list(MODELS), help="which row")
    t.add_argument("--data", default="data/ptb", metavar="DIR", help="folder with the PTB files (default data/ptb; "
                                                                     "'qelm data ptb DIR' fetches them)")
    t.add_argument("--out", metavar="DIR", help="run folder (default runs/ptb/MODEL-...-sSEED)")
    t.add_argument("--seed", type=seed, default=0, help="seed of the weights and the batch order (default 0)")
    t.add_argument("--dim", type=positive_int, help="embedding width (default: the row's, 512 for Quixer, 96 else)")
    t.add_argument("--n-qubits", type=positive_int, help="qubits per token unitary (default 6; 4 for qelm)")
    t.add_argument("--ansatz-layers", type=positive_int, default=4, help="ansatz-14 layers per token (default 4)")
    t.add_argument("--degree", type=positive_int, default=3, help="degree of the LCU polynomial (default 3)")
    t.add_argument("--window", type=positive_int, default=32, help="tokens per window (default 32)")
    t.add_argument("--streams", type=positive_int, default=1024, help="parallel streams = windows per step (default 1024)")
    t.add_argument("--epochs", type=positive_int, default=30, help="epochs (default 30)")
    t.add_argument("--lr", type=positive_float, help="peak learning rate (default: the row's, 1e-3 Transformer, 2e-3 else)")
    t.add_argument("--eos", choices=EOS_MODES, default="eos",
                   help="sentence ends: 'eos' a real <eos> token (default), 'quirk' <unk> as the reference code did")
    t.add_argument("--limit-tokens", type=positive_int, help="use only the first N tokens of each split (a quick look; default: all of them)")
    t.add_argument("--device", default="cpu", help="torch device (default cpu)")
    t.add_argument("--backend", default="qelm.fused", help="simulator of the quantum rows (default qelm.fused)")
    t.add_argument("--dtype", choices=("complex64", "complex128"), default="complex64",
                   help="qelm.fused precision of the quantum rows (default complex64, as the reference)")
    t.add_argument("--compile", action=argparse.BooleanOptionalAction, default=False,
                   help="torch.compile the model (default off: benchmarks/quixer.py measured 3.57 against 3.75 ms a "
                        "Transformer step on an H200, not worth its compile time)")
    t.add_argument("--max-minutes", type=nonnegative_float,
                   help="stop after the epoch that would overrun this budget; run again to resume (default: none)")
    t.set_defaults(func=run_ptb)


def run_data(args: argparse.Namespace) -> int:
    check_output_folder(args.dir, "DIR")
    paths = fetch_ptb(args.dir, args.source)
    print(f"Penn Treebank in {args.dir}: " + ", ".join(f"{p.name} ({p.stat().st_size:,} bytes)" for p in paths)
          + ", sha256 checked")
    return 0


def _device(name: str) -> torch.device:
    try:
        device = torch.device(name)
    except RuntimeError:
        raise UserError(f"--device {name!r} is not a torch device: use cpu or cuda") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UserError("--device cuda: torch sees no CUDA GPU here; use --device cpu")
    return device


def run_ptb(args: argparse.Namespace) -> int:
    device = _device(args.device)
    width, lr, _ = published_settings(args.model)
    dim = args.dim or width
    qubits = args.n_qubits or (4 if args.model.startswith("qelm") else 6)
    quantum = args.model in ("quixer", "qelm")
    tag = f"q{qubits}" if args.model.startswith("quixer") else f"d{dim}"
    out = Path(args.out or f"runs/ptb/{args.model}-{tag}-{args.eos}-s{args.seed}")
    check_output_folder(out, "--out")
    check_folder(out, window_run_layout, what="run folder", owner="a qelm ptb run", hint=" with --out")  # new, empty or its own
    splits = read_ptb(args.data)  # checks sizes and sha256 first
    tokenizer = WordTokenizer.build(splits["train"], eos=args.eos)
    data = {k: tokenizer.encode_lines(v) for k, v in splits.items()}
    if args.limit_tokens:
        data = {k: v[: args.limit_tokens] for k, v in data.items()}
    settings = WindowSettings(epochs=args.epochs, streams=args.streams, window=args.window, lr=args.lr or lr,
                              seed=args.seed)
    for split, ids in data.items():
        if (ids.numel() - 1) // settings.streams < 1:
            raise UserError(f"the {split} split has {ids.numel():,} tokens, too few for --streams {settings.streams}: "
                            "lower --streams or raise --limit-tokens")
    torch.manual_seed(args.seed)
    backend_options = {"dtype": args.dtype} if args.backend == "qelm.fused" else {}
    model = build_window_model(args.model, tokenizer.vocab_size, dim=dim, window=args.window, n_qubits=qubits,
                               ansatz_layers=args.ansatz_layers, degree=args.degree, backend=args.backend,
                               backend_options=backend_options)
    spec = {"model": args.model, "dim": dim, "qubits": qubits if quantum or args.model == "quixer-twin" else None,
            "ansatz_layers": args.ansatz_layers if args.model.startswith("quixer") else None,
            "degree": args.degree if args.model.startswith("quixer") else None,
            "backend": f"{args.backend} ({args.dtype})" if quantum else None,
            "vocab_size": tokenizer.vocab_size, "eos": args.eos, "limit_tokens": args.limit_tokens,
            "tokens": {k: int(v.numel()) for k, v in data.items()}}
    if isinstance(model, Quixer):  # refused before any allocation when the step cannot fit
        have = free_memory_bytes(device)
        need = model.mixer.memory_bytes(settings.streams)
        if need > have:
            fit = model.mixer.windows_that_fit(have)
            raise UserError(f"Quixer with {qubits} qubits and {settings.streams} windows per step needs about "
                            f"{need / 2**30:.1f} GiB, more than the {have / 2**30:.1f} GiB free on {device}: use "
                            f"--streams {max(1, fit)} or fewer qubits")
    n_params = sum(p.numel() for p in model.parameters())
    compile_model = args.compile
    log = _logger()
    log(f"qelm ptb: {args.model} ({n_params:,} parameters), vocabulary {tokenizer.vocab_size:,} (eos={args.eos}), "
        f"{settings.epochs} epochs of {(data['train'].numel() - 1) // settings.streams:,} steps on {device}"
        + (", compiled" if compile_model else ""))
    results = train_windows(model, data, settings, out, spec, tokenizer.pad_id, device=device, compile=compile_model,
                            max_seconds=None if args.max_minutes is None else 60 * args.max_minutes, log=log)
    tokenizer.save(out / "vocab.json")
    if results["complete"]:
        key = (args.model, qubits if args.model == "quixer" else dim)
        published = PUBLISHED.get(key)
        note = f" (published {published[0]} +- {published[1]})" if published and args.eos == "quirk" else ""
        print(f"{args.model}: test perplexity {results['test_ppl']:.2f}{note}, best epoch {results['best_epoch']}, "
              f"{results['median_step_ms']:.1f} ms/step; {out / 'results.json'}")
    else:
        print(f"{args.model}: stopped after epoch {results['epochs_done']} of {settings.epochs}; run the same command "
              "again to resume")
    return 0


def _logger():
    start = time.perf_counter()

    def log(message: str) -> None:
        print(f"[{time.perf_counter() - start:7.1f} s] {message}", flush=True)

    return log

