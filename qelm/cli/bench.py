"""``qelm bench``: forward latency, inference / training / generation tokens per second and peak memory of
a QELM on each backend beside its classical twin, across sequence lengths (and qubit counts), with fitted
scaling exponents. Prints a Markdown table; ``--json`` and ``--plot`` write the same figures to files.

``add_arguments`` and ``settings_from_args`` are shared with ``benchmarks/speed.py``.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from pathlib import Path

from tqdm import tqdm

from ..bench import (MODES, BenchResult, BenchSettings, expected_rows, format_scaling, format_table, plot,
                     run_benchmark, write_json)
from ..backends.spec import DEFAULT_BACKEND
from ..config import QELMConfig
from ..decode import COMPILABLE, CUDA_COMPILE_REFUSAL, compile_refusal
from ..errors import ConfigError
from ..plot import figure_format
from .options import (MODEL_FLAGS, add_json_flag, add_model_flags, check_output_file, json_to_stdout,
                      model_overrides, nonnegative_int, positive_float, positive_int, seed)
from .progress import show_progress

_QUICK = BenchSettings.quick()


def _int_list(text: str) -> tuple[int, ...]:
    values = []
    for part in text.split(","):
        part = part.strip()
        if not part.isdigit() or int(part) < 1:
            raise argparse.ArgumentTypeError(f"{part!r} in {text!r} is not an integer >= 1: give a comma-separated "
                                             "list such as 128,256,512")
        values.append(int(part))
    return tuple(values)


def _modes(text: str) -> tuple[str, ...]:
    modes = tuple(m.strip() for m in text.split(",") if m.strip())
    bad = [m for m in modes if m not in MODES]
    if bad or not modes:
        raise argparse.ArgumentTypeError(f"mode(s) {', '.join(bad) or repr(text)} invalid: give a comma-separated "
                                         f"list of {', '.join(MODES)}")
    return modes


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The benchmark's options (defaults None, so ``--quick`` can tell which ones were given)."""
    d = BenchSettings()
    p.add_argument("--config", metavar="FILE", help="QELMConfig TOML file; the model flags below override its fields "
                                                    "(default: QELMConfig's defaults)")
    p.add_argument("--backend", action="append", metavar="NAME",
                   help="a backend to run the QELM on; repeat the flag for several (default: qelm.fused); "
                        "one that fails is recorded with its error, the others still run")
    p.add_argument("--seq-lens", type=_int_list, metavar="T,T,...",
                   help=f"sequence lengths (default {','.join(map(str, d.seq_lens))}; --quick "
                        f"{','.join(map(str, _QUICK.seq_lens))})")
    p.add_argument("--batch-size", dest="batch", type=positive_int, metavar="B",
                   help=f"sequences per batch (default {d.batch})")
    p.add_argument("--modes", type=_modes, metavar="M,M", help=f"any of {','.join(MODES)} (default: all)")
    p.add_argument("--qubit-sweep", dest="qubits", type=_int_list, metavar="N,N,...",
                   help="qubit-count sweep, e.g. 2,4,6: time vs qubits per circuit at --qubit-seq-len (default: none)")
    p.add_argument("--qubit-seq-len", type=positive_int, metavar="T", help="sequence length of the qubit sweep (default: the "
                                                                  "shortest --seq-lens)")
    p.add_argument("--repeats", type=positive_int, metavar="R", help=f"timed runs per measurement (default {d.repeats}; "
                                                            f"--quick {_QUICK.repeats})")
    p.add_argument("--warmup", type=nonnegative_int, metavar="W", help=f"untimed runs first (default {d.warmup})")
    p.add_argument("--gen-tokens", type=positive_int, metavar="G", help=f"new tokens per generate call (default "
                                                               f"{d.gen_tokens}; --quick {_QUICK.gen_tokens})")
    p.add_argument("--max-seconds", type=positive_float, metavar="S",
                   help=f"budget per measurement: a length predicted to take longer is skipped and its extrapolation "
                        f"recorded (default {d.max_seconds:g}; --quick {_QUICK.max_seconds:g})")
    p.add_argument("--device", choices=("cpu", "cuda"), help="run on the CPU or a CUDA GPU (default cpu)")
    p.add_argument("--threads", type=nonnegative_int, metavar="N",
                   help=f"torch threads per measurement; 0: torch's default, one per core (default {d.threads}: "
                        "more threads made timings stall when other processes shared the cores)")
    p.add_argument("--seed", type=seed, metavar="S", help=f"seed of weights, inputs and sampling (default {d.seed})")
    p.add_argument("--no-cuda-graphs", dest="cuda_graphs", action="store_false", default=None,
                   help="on CUDA, run inference and generation eagerly only (default: replay recorded CUDA graphs and "
                        "measure the eager calls beside them)")
    p.add_argument("--compile", action="store_true", default=None,
                   help="torch.compile each model and its decode step (backend qelm.fused, or the twin; the CPU only: on "
                        "CUDA the recorded graphs measured faster; compilation happens in the warm-up; default: off)")
    p.add_argument("--quick", action="store_true",
                   help=f"reduced sweep: seq lens {','.join(map(str, _QUICK.seq_lens))}, batch {_QUICK.batch}, "
                        f"{_QUICK.repeats} repeats (flags given still override)")
    add_json_flag(p, "every figure, the settings and the machine")
    p.add_argument("--plot", metavar="FILE", help="log-log plot of time vs sequence length (and qubits) (default: "
                                                  "none)")
    add_model_flags(p, QELMConfig().to_dict(), "QELMConfig's; with --config, that file's [model]")


_SETTING_FLAGS = ("seq_lens", "batch", "modes", "qubits", "qubit_seq_len", "repeats", "warmup", "gen_tokens",
                  "max_seconds", "device", "threads", "seed", "cuda_graphs", "compile")


def settings_from_args(args: argparse.Namespace) -> tuple[QELMConfig, BenchSettings]:
    """The config and settings the flags describe. Bad values raise ValueError / FileNotFoundError."""
    if args.config is not None:
        if not Path(args.config).exists() and not Path(args.config).is_symlink():  # the wrong kind: from_toml says
            raise FileNotFoundError(f"config file {args.config!r} does not exist: give the path of a QELMConfig TOML")
        config = QELMConfig.from_toml(args.config)
    else:
        config = QELMConfig()
    changes = model_overrides(args) if hasattr(args, "set") else {}
    if changes:
        config = QELMConfig.from_dict({**config.to_dict(), **changes})
    given = {name: getattr(args, name) for name in _SETTING_FLAGS if getattr(args, name) is not None}
    if args.backend:
        given["backends"] = tuple(dict.fromkeys(args.backend))
    settings = BenchSettings.quick(**given) if args.quick else BenchSettings(**given)
    if settings.compile:  # refused before any measurement, in one line
        if settings.device == "cuda":
            raise ConfigError(CUDA_COMPILE_REFUSAL)
        for name in settings.backends or (DEFAULT_BACKEND,):
            if name not in COMPILABLE:
                raise ConfigError(compile_refusal(name))
    for name in ("json", "plot"):  # checked before the measurement, not after it
        target = getattr(args, name)
        if target and target != "-":
            check_output_file(target, f"--{name}", make_parents=True)
    if args.plot:
        figure_format(args.plot)  # a bad suffix fails now, not after the measurement
    return config, settings


def progress_bar(total: int):
    """A tqdm bar on stderr (on a terminal only) and the callback that advances it (one row at a time)."""
    bar = tqdm(total=total, unit="run", file=sys.stderr, dynamic_ncols=True, leave=False, disable=not show_progress())

    def update(row: dict) -> None:
        state = f"{row['median_s'] * 1e3:.3g} ms" if row["status"] == "ok" else row["status"].split(":")[0]
        bar.set_postfix_str(f"{row['label']} T={row['seq_len']} n={row['n_qubits']} {row['mode']}: {state}")
        bar.update()

    return bar, update


def report(result: BenchResult) -> str:
    """Table, scaling fits and the machine in one text block."""
    m = result.machine
    gpu = f", GPU {m['gpu']['name']}" if m.get("gpu") else ""
    v = m["versions"]
    threads = result.settings["threads"] or m["torch_default_threads"]
    lines = [format_table(result), "", "Scaling (least squares on log-log axes, measured points only):",
             format_scaling(result) or "(needs two measured lengths or qubit counts)", "",
             f"machine: {m['cpu_model']}, {m['cpu_cores_usable']} cores, torch threads {threads}{gpu}; "
             f"torch {v['torch']}, pennylane {v['pennylane']}, qiskit {v['qiskit']}, qiskit-aer {v['qiskit-aer']}; "
             f"wall {result.wall_s:.0f} s"]
    return "\n".join(lines)


def command_line(args: argparse.Namespace, prog: str) -> str:
    """The flags that were given, as one shell line (recorded in the JSON so a run can be repeated)."""
    parts = [prog]
    for name in ("config", "backend") + _SETTING_FLAGS + ("quick", "json", "plot") + tuple(MODEL_FLAGS):
        value = getattr(args, name, None)
        if name == "cuda_graphs" and value is False:
            parts.append("--no-cuda-graphs")
            continue
        if value is None or value is False or value == []:
            continue
        flag = {"batch": "--batch-size", "qubits": "--qubit-sweep"}.get(name, "--" + name.replace("_", "-"))
        if value is True:
            parts.append(flag)
        elif name == "backend":
            parts += [part for v in value for part in (flag, shlex.quote(v))]
        elif isinstance(value, (list, tuple)):
            parts += [flag, ",".join(map(str, value))]
        else:
            parts += [flag, shlex.quote(str(value))]
    for name, value in getattr(args, "set", None) or []:
        parts += ["--set", shlex.quote(f"{name}={value}")]
    return " ".join(parts)


def measure(args: argparse.Namespace) -> BenchResult:
    """Run the benchmark the flags describe, with a progress bar on stderr."""
    config, settings = settings_from_args(args)
    bar, update = progress_bar(expected_rows(config, settings))
    try:
        return run_benchmark(config, settings, progress=update)
    finally:
        bar.close()


def run(args: argparse.Namespace) -> int:
    result = measure(args)
    result.command = command_line(args, "qelm bench")
    if json_to_stdout(args):
        print(json.dumps(result.to_dict(), indent=1))
    else:
        print(report(result))
    if args.json and not json_to_stdout(args):
        print(f"\nwrote {write_json(result, args.json)}")
    if args.plot:
        print(f"wrote {plot(result, args.plot)}")
    return 0


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "bench", help="speed and memory across sequence lengths and backends, beside the classical twin",
        description="Measure forward latency, inference / training / generation tokens per second and peak memory "
                    "of a QELM on each backend and of its classical twin (ClassicalLM at the same config), per "
                    "sequence length; fit time ~ T^k (and ~ n^k over qubits). Lengths predicted to exceed "
                    "--max-seconds are skipped and their extrapolation is labelled as such.")
    add_arguments(p)
    p.set_defaults(func=run)
