"""``qelm draw`` (a registered circuit, or the list of them, as text, PNG, SVG, OpenQASM, qiskit drawing or resource summary),
``qelm gallery`` (the ``circuits/`` gallery of every built-in circuit) and ``qelm plot attention`` /
``qelm plot curves`` (figures of trained models and training runs)."""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

from ..checkpoint import load_checkpoint
from ..circuits import CIRCUITS, SLOTS, build_circuit, slot_circuits
from ..circuits.angles import trained_angles
from ..config import QELMConfig
from ..draw import FORMATS, circuit_weights, render
from ..files import atomic_write
from ..gallery import GALLERY_LAYERS, GALLERY_QUBITS, gallery_drift, write_gallery
from ..metrics import read_runs
from ..plot import attention_for_text, figure_format, plot_attention, plot_curves
from .options import UserError, add_model_flags, check_output_file, nonnegative_int, positive_int

_SUFFIX_FORMAT = {".txt": "text", ".png": "png", ".svg": "svg", ".qasm": "qasm", ".json": "resources"}


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "draw", help="draw a circuit, export it to OpenQASM, summarise its resources, or list the circuits",
        description="Draw a registered circuit (built-in, or your own through --import) with the libraries' own drawers (qml.draw, qml.draw_mpl, qiskit), "
                    "templates decomposed. Angles are symbolic (each gate shows the index i of theta[i]) unless "
                    "--checkpoint is given: then the trained weights of the first layer running the circuit are "
                    "drawn, with every data angle set to 0.")
    p.add_argument("circuit", metavar="CIRCUIT", nargs="?",
                   help=f"one of: {', '.join(CIRCUITS)} (those registered by --import included; no default)")
    p.add_argument("--list", action="store_true",
                   help="list every registered circuit, built-in and your own (--import), with its kind and the config "
                        "field that can name it, and exit")
    source = p.add_mutually_exclusive_group()
    source.add_argument("--config", metavar="FILE", help="take n_qubits and circuit_layers from this TOML config "
                                                         "(default: none)")
    source.add_argument("--checkpoint", metavar="DIR", help="draw the trained circuit of this checkpoint folder "
                                                           "(default: none, symbolic angles)")
    add_model_flags(p, QELMConfig().to_dict(), "QELMConfig's; with --config or --checkpoint, its own",
                    fields=("n_qubits", "circuit_layers"), title="circuit size (a config file's [model] fields)")
    p.add_argument("--format", choices=FORMATS,
                   help="output format (default: from the --out suffix .txt/.png/.svg/.qasm/.json, else text); "
                        "resources is a JSON summary from qml.specs and qiskit")
    p.add_argument("--out", metavar="FILE", help="write here (default: text formats to stdout, images to "
                                                 "CIRCUIT.FORMAT)")
    p.add_argument("--decimals", type=nonnegative_int, default=2, metavar="D",
                   help="decimals of drawn angle values (default 2)")
    p.add_argument("--precision", type=positive_int, default=None, metavar="P",
                   help="significant digits of OpenQASM angles (default: full double precision)")
    p.set_defaults(func=_draw)

    g = sub.add_parser("gallery", help="regenerate (or check) the gallery of every built-in circuit",
                       description="Write every built-in circuit drawn, as OpenQASM and with its resources, and a "
                                   "README.md index, into DIR; with --check, write nothing and list the files that "
                                   "differ from what the code draws now (exit 1 if any).")
    g.add_argument("directory", nargs="?", default="circuits", metavar="DIR", help="gallery folder (default: circuits)")
    g.add_argument("--check", action="store_true", help="do not write: report files that differ and exit 1")
    g.set_defaults(func=_gallery)

    plot = sub.add_parser("plot", help="plot attention maps of checkpoints or training curves of runs",
                          description="Figures of trained models and training runs (PNG, SVG or PDF by the --out suffix).")
    kinds = plot.add_subparsers(dest="plot_command", metavar="FIGURE", required=True)
    a = kinds.add_parser("attention", help="attention heatmaps per layer and head for a prompt",
                         description="Attention weights of every layer and head for one prompt; give a quantum and a "
                                     "classical checkpoint to see them side by side.")
    a.add_argument("--checkpoint", action="append", required=True, metavar="DIR",
                   help="checkpoint folder (repeat to compare models side by side)")
    a.add_argument("--prompt", help="the text whose attention is drawn (longer than context_len: its last tokens "
                                    "are kept; no default: required)")
    a.add_argument("--out", required=True, metavar="FILE", help="the figure (.png, .svg or .pdf; no default)")
    a.add_argument("--width", type=positive_int, default=None, metavar="PX", help="width in pixels (default: 330 per heatmap)")
    a.add_argument("--height", type=positive_int, default=None, metavar="PX", help="height in pixels (default: 330 per layer)")
    a.set_defaults(func=_plot_attention)
    c = kinds.add_parser("curves", help="loss and perplexity curves of one or more training runs",
                         description="Loss and perplexity against step, read from metrics.jsonl of each run folder "
                                     "(or of its qelm/, twin/ and matched/ checkpoints).")
    c.add_argument("runs", nargs="+", metavar="RUN_DIR")
    c.add_argument("--out", required=True, metavar="FILE", help="the figure (.png, .svg or .pdf; no default)")
    c.add_argument("--width", type=positive_int, default=1200, metavar="PX", help="width in pixels (default 1200)")
    c.add_argument("--height", type=positive_int, default=560, metavar="PX", help="height in pixels (default 560)")
    c.add_argument("--title", default=None, help="figure title (default: Training curves)")
    c.set_defaults(func=_plot_curves)


def _load_checkpoint(directory: str):
    if not Path(directory).is_dir() and not Path(directory).exists():
        raise FileNotFoundError(f"checkpoint folder {directory!r} does not exist")
    return load_checkpoint(directory)


def _size(args, config) -> tuple[int, int]:
    base = config if config is not None else QELMConfig()
    n_qubits, n_layers = base.n_qubits, base.circuit_layers
    if args.checkpoint:
        for flag, given, fixed, field in (("--n-qubits", args.n_qubits, n_qubits, "n_qubits"),
                                          ("--circuit-layers", args.circuit_layers, n_layers, "circuit_layers")):
            if given is not None and given != fixed:
                raise UserError(f"{flag} {given} does not match the checkpoint's {field}={fixed}: the trained "
                                f"weights fix the circuit size; drop {flag}")
    return (args.n_qubits if args.n_qubits is not None else n_qubits,
            args.circuit_layers if args.circuit_layers is not None else n_layers)


def _list_circuits() -> int:
    """``qelm draw --list``: one line per registered circuit."""
    rows = [("circuit", "kind", "config field", "from")]
    for name, cls in CIRCUITS.items():
        fields = [field for slot, (field, _) in SLOTS.items() if name in slot_circuits(slot)]
        origin = "built-in" if cls.__module__.startswith("qelm.") else f"{cls.__module__} (registered)"
        rows.append((name, cls.kind, ", ".join(fields) or "-", origin))
    widths = [max(len(r[i]) for r in rows) for i in range(3)]
    for r in rows:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths)) + "  " + r[3])
    return 0


def _draw(args) -> int:
    if args.list:
        if args.circuit is not None:
            raise UserError(f"--list lists every circuit; drop CIRCUIT {args.circuit!r}, or drop --list to draw it")
        return _list_circuits()
    if args.circuit is None:
        raise UserError(f"give the CIRCUIT to draw (one of: {', '.join(CIRCUITS)}), or --list to list them")
    fmt = args.format
    if fmt is None:
        suffix = Path(args.out).suffix.lower() if args.out else ""
        if args.out and suffix not in _SUFFIX_FORMAT:
            raise UserError(f"cannot tell the format from --out {args.out!r}: give --format, or end the file in "
                            f"{', '.join(_SUFFIX_FORMAT)}")
        fmt = _SUFFIX_FORMAT.get(suffix, "text")
    if fmt in ("png", "svg") and args.out and Path(args.out).suffix.lower() != f".{fmt}":
        raise UserError(f"--out {args.out!r} does not end in .{fmt} for --format {fmt}: name the file FILE.{fmt}")
    if args.out:
        check_output_file(args.out, "--out")

    checkpoint = _load_checkpoint(args.checkpoint) if args.checkpoint else None
    config = checkpoint.config if checkpoint else (QELMConfig.from_toml(args.config) if args.config else None)
    n_qubits, n_layers = _size(args, config)
    circuit = build_circuit(args.circuit, n_qubits, n_layers)
    angles, source = None, None
    if checkpoint is not None:
        weights, where = circuit_weights(checkpoint.model, args.circuit)
        angles = trained_angles(circuit, weights)
        source = f"trained weights of {where} in checkpoint {args.checkpoint}; data angles set to 0"

    to_terminal = args.out is None and fmt not in ("png", "svg")
    width = shutil.get_terminal_size().columns if to_terminal and sys.stdout.isatty() else None
    content = render(circuit, fmt, angles, source=source, decimals=args.decimals, precision=args.precision,
                     max_length=width)
    if to_terminal:
        print(content, end="")
        return 0
    out = Path(args.out or f"{args.circuit}.{fmt}")
    atomic_write(out, content)
    print(f"wrote {out} ({fmt}, circuit {args.circuit!r}, n_qubits={n_qubits}, n_layers={n_layers}, "
          f"{'trained angles' if angles is not None else 'symbolic angles'})")
    return 0


def _gallery(args) -> int:
    if args.check:
        problems = gallery_drift(args.directory)
        for p in problems:
            print(f"{args.directory}/{p}", file=sys.stderr)
        if problems:
            print("gallery is out of date: run `make gallery`", file=sys.stderr)
            return 1
        print(f"{args.directory}: up to date")
        return 0
    paths = write_gallery(args.directory)
    print(f"wrote {len(paths)} files to {args.directory}/ ({len(CIRCUITS)} circuits at n_qubits={GALLERY_QUBITS}, "
          f"n_layers={GALLERY_LAYERS})")
    return 0


def _plot_attention(args) -> int:
    if args.prompt is None:
        raise UserError("--prompt is required: the text whose attention is drawn")
    figure_format(args.out)  # a bad suffix or folder fails before any checkpoint loads
    check_output_file(args.out, "--out")
    panels, sources, dropped_any = {}, [], False
    for directory in args.checkpoint:
        ckpt = _load_checkpoint(directory)
        classical = getattr(ckpt, "kind", None) == "classical" or not ckpt.model.config.uses_circuits
        kind = "classical" if classical else "QELM"
        label, k = kind, 2
        while label in panels:
            label, k = f"{kind} {k}", k + 1
        maps, tokens, dropped = attention_for_text(ckpt.model, ckpt.tokenizer, args.prompt)
        if dropped:
            dropped_any = True
            print(f"{directory}: the prompt is longer than context_len={ckpt.model.config.context_len}; "
                  f"plotting its last {len(tokens)} tokens ({dropped} dropped)")
        panels[label] = (maps, tokens)
        sources.append(f"{label} = {directory} (attention: {ckpt.model.config.attention})")
    shown = args.prompt if len(args.prompt) <= 60 else args.prompt[:57] + "..."
    cut = " (the last context_len tokens)" if dropped_any else ""
    title = f"Attention weights for {shown!r}{cut}\n" + "; ".join(sources)
    out = plot_attention(panels, args.out, width=args.width, height=args.height, title=title)
    print(f"wrote {out} ({', '.join(sources)})")
    return 0


def _plot_curves(args) -> int:
    figure_format(args.out)
    check_output_file(args.out, "--out")
    runs = read_runs(args.runs)
    out = plot_curves(runs, args.out, width=args.width, height=args.height, title=args.title)
    print(f"wrote {out} ({len(runs)} curve set(s): {', '.join(runs)})")
    return 0
