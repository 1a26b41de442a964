"""The figure of a comparison: grouped bars, log scale, of parameters per component and bytes per format."""

from __future__ import annotations

import os
from pathlib import Path

from matplotlib.figure import Figure

from ..plot import figure_format, save_figure
from .report import human_bytes, human_count
from .results import COMPONENTS, SIZE_FORMATS, Comparison

__all__ = ["plot_comparison"]


def plot_comparison(comp: Comparison, path: str | os.PathLike) -> Path:
    """Grouped bar chart, log scale: parameters per component (left) and bytes per format (right), one
    bar per model, each labelled with its value. Written atomically; the format follows the suffix."""
    figure_format(path)  # a bad suffix fails before any drawing
    ms = comp.models
    param_groups = [*COMPONENTS, "total"]
    size_groups = [f for f in SIZE_FORMATS if any(m.sizes.get(f) for m in ms)]
    fig = Figure(figsize=(max(10, 2.2 * len(ms) + 8), 5))
    axes = fig.subplots(1, 2)
    width = 0.8 / len(ms)
    for ax, groups, value, title, unit in (
        (axes[0], param_groups, lambda m, g: m.total_parameters if g == "total" else m.parameters.get(g, 0),
         "Parameters per component", "parameters"),
        (axes[1], size_groups, lambda m, g: m.sizes.get(g), "Serialized size (measured)", "bytes"),
    ):
        for i, m in enumerate(ms):
            vals = [value(m, g) for g in groups]
            xs = [j + (i - (len(ms) - 1) / 2) * width for j in range(len(groups))]
            bars = ax.bar(xs, [v if v else float("nan") for v in vals], width, label=f"{m.name} ({m.kind})")
            ax.bar_label(bars, labels=[human_count(v) if unit == "parameters" else human_bytes(v) if v else ""
                                       for v in vals], fontsize=7, rotation=90, padding=2)
        ax.set_yscale("log")
        ax.set_xticks(range(len(groups)), [g.replace("safetensors_", "st ").replace("_", " ") for g in groups],
                      rotation=20)
        ax.set_ylabel(f"{unit} (log scale)")
        ax.set_title(title)
        ax.margins(y=0.25)
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=len(ms), fontsize=9)
    fig.suptitle(f"QELM vs classical ({comp.setting}; ratios to {comp.reference})" if comp.reference
                 else f"Model comparison ({comp.setting})")
    fig.tight_layout(rect=(0, 0.06, 1, 1))  # room for the shared legend below
    return save_figure(fig, path, dpi=120, make_parents=True)

