"""The Pareto plot of a sweep: parameters against mean validation perplexity (both log scale), quantum
configurations and classical baselines in different marks, error bars spanning the seeds' range, and
the frontier (no model has fewer parameters and a lower perplexity) drawn as a step line."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from ..plot import figure_format, save_figure

__all__ = ["plot_pareto", "MARKS"]

#: kind of model -> (marker, colour, legend label)
MARKS = {
    "quantum": ("o", "tab:purple", "quantum configuration"),
    "classical": ("x", "tab:gray", "sampled configuration, every slot classical"),
    "twin": ("s", "tab:blue", "classical twin (same config, slots classical)"),
    "matched": ("^", "tab:green", "parameter-matched classical model"),
    "unigram": ("*", "tab:red", "unigram"),
}


def plot_pareto(table: dict[str, Any], out: str | os.PathLike, *, width: int = 1000, height: int = 620) -> Path:
    """Draw the sweep ``table`` (:func:`~qelm.sweep.results.sweep_table`) to ``out`` (.png, .svg or .pdf)."""
    from matplotlib.figure import Figure
    from matplotlib.ticker import FuncFormatter

    figure_format(out)  # a bad suffix fails before any drawing
    models = {m["key"]: m for m in table["models"] if m["val_perplexity"]["mean"] is not None}
    fig = Figure(figsize=(width / 100, height / 100))
    ax = fig.subplots()
    for kind, (marker, colour, label) in MARKS.items():
        ms = [m for m in models.values() if m["kind"] == kind]
        if not ms:
            continue
        x = [m["parameters"] for m in ms]
        y = [m["val_perplexity"]["mean"] for m in ms]
        low = [m["val_perplexity"]["mean"] - m["val_perplexity"]["min"] for m in ms]
        high = [m["val_perplexity"]["max"] - m["val_perplexity"]["mean"] for m in ms]
        ax.errorbar(x, y, yerr=[low, high], fmt=marker, color=colour, ms=9 if kind == "unigram" else 6, alpha=0.85,
                    elinewidth=0.8, capsize=2, label=f"{label} ({len(ms)})")
    front = [models[k] for k in table["frontier"] if k in models]
    if front:
        xs = [m["parameters"] for m in front]
        ys = [m["val_perplexity"]["mean"] for m in front]
        right = max(m["parameters"] for m in models.values()) * 1.3
        ax.step(xs + [right], ys + [ys[-1]], where="post", color="black", lw=1.2, ls="--", label="Pareto frontier",
                zorder=1)
    best = (table.get("goal") or {}).get("best_key")
    if best in models:
        m = models[best]
        ax.annotate(f"closest quantum: {m['label']}\n{m['ratio_to_classical']['mean']:.3f}x the best classical "
                    f"model of no more parameters",
                    (m["parameters"], m["val_perplexity"]["mean"]), xytext=(12, 18), textcoords="offset points",
                    fontsize=8, arrowprops={"arrowstyle": "->", "lw": 0.8})
    ax.set_xscale("log")
    ax.set_yscale("log")
    plain = FuncFormatter(lambda v, _: f"{v:,.0f}" if v >= 100 else f"{v:g}")
    for axis in (ax.xaxis, ax.yaxis):  # numbers, not powers of ten: the ranges span less than two decades
        axis.set_major_formatter(plain)
        axis.set_minor_formatter(plain)
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
