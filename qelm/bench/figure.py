"""The benchmark as a figure: time per iteration against sequence length for each mode (log-log), and
against qubits per circuit when a qubit sweep ran."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from matplotlib.figure import Figure

from ..plot import figure_format, save_figure
from .results import BenchResult
from .settings import EXTRAPOLATED, MODES

__all__ = ["plot"]


def _length_panel(ax, d: dict[str, Any], mode: str, colors: dict[str, str]) -> None:
    """One mode: measured points with their quartiles and fitted line, extrapolated points hollow."""
    for lab, color in colors.items():
        rs = [r for r in d["rows"] if r["label"] == lab and r["mode"] == mode]
        ok = [r for r in rs if r["status"] == "ok"]
        ex = [r for r in rs if r["extrapolated"]]
        fit = next((f for f in d["scaling"]["seq_len"] if f["label"] == lab and f["mode"] == mode), None)
        if ok:
            ax.plot([r["seq_len"] for r in ok], [r["median_s"] for r in ok], "o", color=color,
                    label=lab + (f" (T^{fit['exponent']:.2f})" if fit else ""))
            ax.vlines([r["seq_len"] for r in ok], [r["q25_s"] for r in ok], [r["q75_s"] for r in ok], color=color)
        if fit:
            xs = [r["seq_len"] for r in ok]
            ax.plot(xs, [fit["prefactor"] * x ** fit["exponent"] for x in xs], "-", color=color, lw=0.8)
        if ex:
            ax.plot([r["seq_len"] for r in ex], [r["extrapolated"]["median_s"] for r in ex], "o", mfc="none",
                    ls=":", color=color)
    ax.plot([], [], "o", mfc="none", color="gray", label=EXTRAPOLATED)
    ax.set(xscale="log", yscale="log", xlabel="sequence length T", ylabel="seconds per iteration",
           title={"inference": "forward", "training": "training step",
                  "generation": f"generate {d['settings']['gen_tokens']} tokens"}[mode])
    lengths = sorted({r["seq_len"] for r in d["rows"]})
    ax.set_xticks(lengths, [str(t) for t in lengths])
    ax.set_xticks([], minor=True)
    ax.legend(fontsize=6)


def _qubit_panel(ax, d: dict[str, Any], colors: dict[str, str]) -> None:
    """Time against qubits per circuit, one line per backend and mode, with the factor per added qubit."""
    for f in d["scaling"]["qubits"]:
        rs = [r for r in d["qubit_rows"] if r["backend"] == f["backend"] and r["mode"] == f["mode"]
              and r["status"] == "ok"]
        ax.plot([r["n_qubits"] for r in rs], [r["median_s"] for r in rs], "o-" if f["mode"] == "inference"
                else "s--", color=colors.get(f["label"], "k"),
                label=f"{f['label'].removeprefix('QELM ')} {'fwd' if f['mode'] == 'inference' else 'train'}: "
                      f"x{f['per_qubit_factor']:.2f}/qubit")
    ax.set(yscale="log", xlabel="qubits per circuit", ylabel="seconds per iteration",
           title=f"qubit sweep (T = {d['qubit_rows'][0]['seq_len']})")
    ax.set_xticks(sorted({r["n_qubits"] for r in d["qubit_rows"]}))
    ax.legend(fontsize=6)


def plot(result: BenchResult | dict[str, Any], path: str | os.PathLike) -> Path:
    """Log-log figure of time per iteration vs sequence length for each mode (measured: filled markers
    and the fitted line; extrapolated: hollow markers), and time vs qubits when a qubit sweep ran.
    The format follows the suffix (png, svg, pdf); written atomically."""
    figure_format(path)  # a bad suffix fails before any drawing
    d = result.to_dict() if isinstance(result, BenchResult) else result
    modes = [m for m in MODES if any(r["mode"] == m for r in d["rows"])]
    panels = modes + (["qubits"] if d["qubit_rows"] else [])
    fig = Figure(figsize=(4.2 * len(panels), 4.2), dpi=100, layout="constrained")
    axes = fig.subplots(1, len(panels), squeeze=False)[0]
    colors = {lab: f"C{i}" for i, lab in enumerate(dict.fromkeys(r["label"] for r in d["rows"]))}
    for ax, mode in zip(axes, modes):
        _length_panel(ax, d, mode, colors)
    if d["qubit_rows"]:
        _qubit_panel(axes[-1], d, colors)
    m = d["machine"]
    fig.suptitle(f"qelm bench: batch {d['settings']['batch']}, {m['device']}, {m['cpu_model']}"
                 + (f", {m['gpu']['name']}" if m.get("gpu") and m["device"] == "cuda" else ""), fontsize=9)
    return save_figure(fig, path, dpi=100, make_parents=True)
