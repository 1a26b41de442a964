"""The Pareto plot of a sweep: parameters against mean validation perplexity (both log scale), quantum
configurations and classical baselines in different marks, error bars spanning the seeds' range, the
unigram model as a line, and the frontier (no model has fewer parameters and a lower perplexity) drawn as
a step line."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter

from ..plot import figure_format, save_figure

__all__ = ["plot_pareto", "MARKS"]

#: kind of model -> (marker, colour, legend label)
MARKS = {
    "quantum": ("o", "tab:purple", "quantum configuration"),
    "classical": ("x", "tab:gray", "sampled configuration, every slot classical"),
    "twin": ("s", "tab:blue", "classical twin (same config, slots classical)"),
    "matched": ("^", "tab:green", "parameter-matched classical model"),
    "unigram": ("", "tab:red", "unigram"),
}


def plot_pareto(table: dict[str, Any], out: str | os.PathLike, *, width: int = 1000, height: int = 620) -> Path:
    """Draw the sweep ``table`` (:func:`~qelm.sweep.results.sweep_table`) to ``out`` (.png, .svg or .pdf)."""
    figure_format(out)  # a bad suffix fails before any drawing
    models = {m["key"]: m for m in table["models"] if m["val_perplexity"]["mean"] is not None}
    fig = Figure(figsize=(width / 100, height / 100))
    ax = fig.subplots()
    trained = [m for m in models.values() if m["kind"] != "unigram"]
    for kind, (marker, colour, label) in MARKS.items():
        ms = [m for m in trained if m["kind"] == kind]
        if not ms:
            continue
        x = [m["parameters"] for m in ms]
        y = [m["val_perplexity"]["mean"] for m in ms]
        low = [m["val_perplexity"]["mean"] - m["val_perplexity"]["min"] for m in ms]
        high = [m["val_perplexity"]["max"] - m["val_perplexity"]["mean"] for m in ms]
        ax.errorbar(x, y, yerr=[low, high], fmt=marker, color=colour, ms=6, alpha=0.85, elinewidth=0.8, capsize=2,
                    label=f"{label} ({len(ms)})")
    left = min((m["parameters"] for m in trained), default=10) / 1.25
    right = max((m["parameters"] for m in trained), default=10) * 1.25
    unigram = models.get("unigram")
    if unigram:  # a line, not a point: its few parameters would squeeze every trained model to one side
        ax.axhline(unigram["val_perplexity"]["mean"], color=MARKS["unigram"][1], lw=1, ls=":",
                   label=f"unigram ({unigram['parameters']} parameters): {unigram['val_perplexity']['mean']:.2f}")
    front = [models[k] for k in table["frontier"] if k in models]
    if front:
        xs = [max(m["parameters"], left) for m in front]
        ys = [m["val_perplexity"]["mean"] for m in front]
        ax.step(xs + [right], ys + [ys[-1]], where="post", color="black", lw=1.2, ls="--", label="Pareto frontier",
                zorder=1)
    ax.set_xlim(left, right)
    best = (table.get("goal") or {}).get("best_key")
    if best in models:
        m = models[best]
        ax.annotate(f"closest quantum configuration: {m['label']}\n{m['ratio_to_classical']['mean']:.3f}x the perplexity "
                    f"of the best classical model with no more parameters",
                    (m["parameters"], m["val_perplexity"]["mean"]), xytext=(0.02, 0.03), textcoords="axes fraction",
                    fontsize=8, arrowprops={"arrowstyle": "->", "lw": 0.8, "color": "0.3"})
    ax.set_xscale("log")
    ax.set_yscale("log")
    numbers = FuncFormatter(lambda v, _: f"{v:,.0f}" if v >= 100 else f"{v:g}")
    some = FuncFormatter(lambda v, _: numbers(v) if f"{v:.0e}"[0] in "25" else "")  # minor ticks: 2s and 5s
    ax.xaxis.set_major_formatter(numbers)
    ax.xaxis.set_minor_formatter(some)
    ax.yaxis.set_major_formatter(numbers)
    ax.yaxis.set_minor_formatter(numbers)  # numbers, not powers of ten: the range spans less than a decade
    ax.tick_params(which="minor", labelsize=7)
    ax.set_xlabel("parameters (log scale)")
    ax.set_ylabel("validation perplexity, mean over seeds (log scale)")
    sweep, corpus = table["sweep"], table.get("corpus", {})
    seeds = len(sweep["seeds"])
    ax.set_title(f"qelm sweep {sweep['name']}: {sweep['trials']['complete']} trials x {seeds} seeds on "
                 f"{Path(corpus.get('source', '?')).name} ({corpus.get('vocab_size', '?')}-token "
                 f"{corpus.get('tokenizer', '?')}); bars: range over seeds", fontsize=10)
    ax.grid(True, which="both", alpha=0.25)
    ax.legend(fontsize=8, loc="upper right")
    fig.tight_layout()
    return save_figure(fig, out, make_parents=True)
