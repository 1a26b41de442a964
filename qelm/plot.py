"""Figures of trained models and training runs: attention heatmaps and loss / perplexity curves, and the
one way every qelm figure is checked and written (:func:`figure_format`, :func:`save_figure`).

Every number drawn is read from the model or the run files it names: attention weights are the
``last_attention`` a forward pass leaves on each attention module (``keep_attention = True``), curves are
the ``metrics.jsonl`` records the trainer measured. Figures are built on ``matplotlib.figure.Figure``
(no pyplot state), sized in pixels at a fixed :data:`DPI`, and written atomically.
"""

from __future__ import annotations

import io
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol, cast

import matplotlib
import numpy as np
import torch
from matplotlib import ticker
from matplotlib.figure import Figure

from .errors import ConfigError, DataError
from .files import atomic_write

__all__ = [
    "DPI",
    "FIGURE_FORMATS",
    "figure_format",
    "save_figure",
    "attention_maps",
    "attention_for_text",
    "token_label",
    "plot_attention",
    "plot_curves",
]

#: dots per inch of every figure; ``width`` and ``height`` are in pixels, so the size on disk is exact
DPI = 100
#: the image formats qelm writes figures in, named by the output file's suffix
FIGURE_FORMATS = ("png", "svg", "pdf")


# --- writing figures ----------------------------------------------------------------------------------
def figure_format(out: str | os.PathLike) -> str:
    """The image format of output file ``out`` from its suffix (``"png"``, ``"svg"`` or ``"pdf"``);
    ``ValueError`` naming the file otherwise. Call it before drawing, so a bad name fails before any work."""
    out = Path(out)
    fmt = out.suffix.lower().lstrip(".")
    if fmt not in FIGURE_FORMATS:
        raise ConfigError(f"output file {str(out)!r} has no image suffix matplotlib writes here (unsupported format "
                         f"{fmt or 'none'!r}): end it in .png, .svg or .pdf")
    return fmt


def save_figure(fig, out: str | os.PathLike, *, dpi: int = DPI, make_parents: bool = False) -> Path:
    """Write matplotlib figure ``fig`` to ``out`` in the format its suffix names, atomically. PNGs carry no
    software string, so the same figure gives the same bytes."""
    fmt = figure_format(out)
    buf = io.BytesIO()
    meta = {"Software": None} if fmt == "png" else {}
    fig.savefig(buf, format=fmt, dpi=dpi, metadata=meta)  # no bbox_inches="tight": keep the pixel size
    return atomic_write(out, buf.getvalue(), make_parents=make_parents)


# --- attention ----------------------------------------------------------------------------------------
class _KeepsAttention(Protocol):
    """QuantumAttentionHead and CausalSelfAttention: attention modules that can keep their last weights."""

    keep_attention: bool
    last_attention: torch.Tensor | None


def _last(module: _KeepsAttention) -> torch.Tensor:
    assert module.last_attention is not None  # set by the forward pass with keep_attention on
    return module.last_attention


def _attention_modules(model: torch.nn.Module) -> list[_KeepsAttention]:
    return [cast(_KeepsAttention, m) for m in model.modules()
            if hasattr(m, "keep_attention") and hasattr(m, "last_attention")]


@torch.no_grad()
def attention_maps(model: torch.nn.Module, idx: torch.Tensor) -> torch.Tensor:
    """Attention weights of every layer and head for one sequence: ``idx`` (T,) or (1, T) ->
    ``(n_layers, n_heads, T, T)``, row = query token, column = key token (rows sum to one).

    Runs one forward pass with ``keep_attention`` on; the modules' flags are restored afterwards."""
    idx = torch.as_tensor(idx)
    if idx.dim() == 1:
        idx = idx.unsqueeze(0)
    if idx.dim() != 2 or idx.shape[0] != 1:
        raise DataError(f"token ids must be one sequence, shape (T,) or (1, T); got {tuple(idx.shape)}")
    modules = _attention_modules(model)
    if not modules:
        raise ConfigError(f"{type(model).__name__} has no attention module with keep_attention; "
                         "give a QELM or ClassicalLM")
    before = [m.keep_attention for m in modules]
    try:
        for m in modules:
            m.keep_attention = True
        model(idx)
        maps = [_last(m)[0] for m in modules]  # each (H, T, T)
    finally:
        for m, flag in zip(modules, before):
            m.keep_attention = flag
    return torch.stack(maps).float().cpu()  # (L, H, T, T)


def token_label(text: str) -> str:
    """A token as a tick label: spaces and control characters made visible."""
    return text.replace(" ", "\u2423").replace("\n", "\\n").replace("\t", "\\t").replace("\r", "\\r") or "\u2205"


def attention_for_text(model: Any, tokenizer, text: str) -> tuple[torch.Tensor, list[str], int]:
    """Encode ``text`` with ``tokenizer`` and return ``(maps (L, H, T, T), token labels (T), dropped)``.

    A prompt longer than the model's ``context_len`` keeps its last ``context_len`` tokens; ``dropped``
    says how many were cut from the front."""
    if not text:
        raise DataError("the text is empty: give at least one character to compute attention over")
    ids = list(tokenizer.encode(text))
    if not ids:
        raise DataError(f"text {text!r} encodes to no tokens with this tokenizer")
    context = model.config.context_len
    dropped = max(0, len(ids) - context)
    ids = ids[dropped:]
    maps = attention_maps(model, torch.tensor(ids, dtype=torch.long))
    return maps, [token_label(tokenizer.decode([i])) for i in ids], dropped


def _check_size(width: int, height: int) -> None:
    for name, value in (("width", width), ("height", height)):
        if isinstance(value, bool) or not isinstance(value, int) or not 100 <= value <= 20000:
            raise ConfigError(f"{name}={value!r} pixels is invalid: use an integer from 100 to 20000")


def plot_attention(panels: Mapping[str, tuple[torch.Tensor, Sequence[str]]], out: str | os.PathLike, *,
                   width: int | None = None, height: int | None = None, title: str | None = None) -> Path:
    """Heatmaps of attention weights, one per layer (rows) and head (columns), models side by side.

    ``panels`` maps a model label (e.g. ``"quantum"``, ``"classical"``) to ``(maps (L, H, T, T), tokens)``
    from :func:`attention_for_text`. ``width``/``height`` in pixels (default: 330 x 330 per heatmap).
    Returns the path written."""
    if not panels:
        raise ConfigError("no attention maps to plot: give at least one model")
    for label, (maps, tokens) in panels.items():
        if maps.dim() != 4 or maps.shape[-1] != maps.shape[-2] or maps.shape[-1] != len(tokens):
            raise ConfigError(f"attention maps of {label!r} have shape {tuple(maps.shape)} for {len(tokens)} tokens; "
                             "expected (layers, heads, T, T) with T = number of tokens")
    rows = max(m.shape[0] for m, _ in panels.values())
    cols = sum(m.shape[1] for m, _ in panels.values())
    width = width or max(500, 330 * cols + 120)
    height = height or max(400, 330 * rows + 110)
    _check_size(width, height)
    figure_format(out)

    fig = Figure(figsize=(width / DPI, height / DPI), dpi=DPI, layout="constrained")
    axes = fig.subplots(rows, cols, squeeze=False)
    cell = 0.7 * min(width / cols, (height - 110) / rows)  # pixels of one heatmap's side, roughly
    cmap = matplotlib.colormaps["viridis"].with_extremes(bad="white")
    image = None
    col = 0
    strides = set()
    for label, (maps, tokens) in panels.items():
        L, H, T, _ = maps.shape
        # tick labels need ~10 px each: label every step-th token so they never overlap at this size (said below)
        step = max(1, math.ceil(T / max(2, int(cell // 10))))
        strides.add(step)
        ticks = list(range(0, T, step))
        fontsize = min(9.0, max(6.0, 0.65 * cell / len(ticks)))
        for h in range(H):
            for layer in range(rows):
                ax = axes[layer, col + h]
                if layer >= L:
                    ax.set_axis_off()
                    continue
                # keys after the query are hidden by the causal mask: drawn blank, not as weight 0
                hidden = np.triu(np.ones((T, T), dtype=bool), k=1)
                image = ax.imshow(np.ma.masked_array(maps[layer, h].numpy(), mask=hidden), vmin=0.0, vmax=1.0,
                                  cmap=cmap, interpolation="nearest")
                ax.set_title(f"{label}: layer {layer + 1}, head {h + 1}", fontsize=11)
                ax.set_xticks(ticks, [tokens[i] for i in ticks], rotation=90, fontsize=fontsize)
                ax.set_yticks(ticks, [tokens[i] for i in ticks], fontsize=fontsize)
                if layer == L - 1:
                    ax.set_xlabel("key token (attended to)", fontsize=10)
                if col + h == 0:
                    ax.set_ylabel("query token", fontsize=10)
        col += H
    assert image is not None  # at least one panel with one layer was drawn
    fig.colorbar(image, ax=axes, shrink=0.8, label="attention weight (rows sum to 1)")
    note = "blank cells: later tokens, hidden by the causal mask"
    if max(strides) > 1:
        every = " or ".join(f"{n}{'nd' if n == 2 else 'rd' if n == 3 else 'th'}" for n in sorted(strides - {1}))
        note += f"; ticks label every {every} token (a larger width and height label them all)"
    fig.suptitle(f"{title or 'Attention weights per layer and head'}\n{note}", fontsize=12)
    return save_figure(fig, out)


# --- training curves ----------------------------------------------------------------------------------
def _series(records: list[dict], key: str) -> tuple[list[float], list[float]]:
    pts = sorted((r["step"], r[key]) for r in records if r.get(key) is not None)
    return [p[0] for p in pts], [p[1] for p in pts]


def _common_parent(paths: list[str]) -> str:
    """The folder every run path lies in, when there are several runs and they share one ('' otherwise)."""
    if len(paths) < 2:
        return ""
    try:
        return os.path.commonpath(paths)
    except ValueError:  # absolute and relative paths mixed
        return ""


def _short_labels(paths: list[str]) -> list[str]:
    """Legend labels: each run's path relative to the folder all of them share (the suptitle names it), so
    ``runs/demo/qelm``, ``runs/demo/twin`` read as ``qelm``, ``twin``; a single run keeps its folder name."""
    parent = _common_parent(paths)
    if not parent:
        return [Path(p).name or p for p in paths] if len(paths) == 1 else list(paths)
    return [os.path.relpath(p, parent) for p in paths]


def _moving_average(values: list[float], k: int) -> list[float]:
    """Means of each ``k`` consecutive values (``len(values) - k + 1`` of them)."""
    sums = np.cumsum([0.0, *values])
    return list((sums[k:] - sums[:-k]) / k)


def _plot_train(ax_loss, ax_ppl, steps: list[float], loss: list[float], color: str, label: str | None,
                style: str = "-") -> None:
    """The logged train loss and its ``exp``, drawn faint as logged, with a moving average over ~1/30 of the
    records (at least 2) on top, since per-step losses are noisy; a run of under 10 records is drawn as logged."""
    ppl = [math.exp(min(v, 700.0)) for v in loss]
    k = max(2, len(loss) // 30) if len(loss) >= 10 else 1
    if k > 1:
        ax_loss.plot(steps, loss, color=color, lw=0.8, ls=style, alpha=0.25)
        ax_ppl.plot(steps, ppl, color=color, lw=0.8, ls=style, alpha=0.25)
        steps, loss, ppl = steps[k - 1:], _moving_average(loss, k), _moving_average(ppl, k)
    ax_loss.plot(steps, loss, color=color, lw=1.4, ls=style,
                 label=None if label is None else f"{label}: train" + (f" ({k}-record mean)" if k > 1 else ""))
    ax_ppl.plot(steps, ppl, color=color, lw=1.4, ls=style)


class _PlainLogFormatter(ticker.LogFormatter):
    """Log-axis labels as plain numbers (20, 60, 1,000; 0.5 below one), at the ticks matplotlib's log
    formatter would label: never 2x10^1."""

    def _num_to_string(self, x, vmin, vmax):
        return f"{x:,.0f}" if x >= 1 and float(x).is_integer() else f"{x:,.3g}"


def _label_axes(ax_loss, ax_ppl) -> None:
    ax_loss.set_title("Cross-entropy loss", fontsize=12)
    ax_loss.set_xlabel("training step", fontsize=11)
    ax_loss.set_ylabel("loss (nats per token)", fontsize=11)
    ax_ppl.set_title("Perplexity (train: exp of train loss; validation: measured)", fontsize=12)
    ax_ppl.set_xlabel("training step", fontsize=11)
    ax_ppl.set_ylabel("perplexity (log scale)", fontsize=11)
    ax_ppl.set_yscale("log")
    ax_ppl.yaxis.set_major_formatter(_PlainLogFormatter(labelOnlyBase=False))
    ax_ppl.yaxis.set_minor_formatter(_PlainLogFormatter(labelOnlyBase=False))
    for ax in (ax_loss, ax_ppl):
        ax.grid(True, alpha=0.3)
        ax.tick_params(labelsize=10)
        ax.xaxis.set_major_locator(ticker.MaxNLocator(integer=True))  # steps are whole numbers


def plot_curves(runs: dict[str, list[dict]], out: str | os.PathLike, *, width: int = 1200, height: int = 560,
                title: str | None = None, unigram_loss: float | None = None) -> Path:
    """Loss (left) and perplexity (right) against training step for each run, on one figure.

    ``runs`` maps a label (a run folder's path, or a model's name) to its ``metrics.jsonl`` records.
    Train loss is the logged ``loss``; validation points are ``val_loss`` / ``val_perplexity`` as the
    trainer measured them; the train perplexity line is ``exp(loss)`` of the logged train loss, and is
    labelled so. ``unigram_loss``: the unigram baseline's validation loss, drawn as a dotted line.
    Returns the path written."""
    if not runs:
        raise ConfigError("no runs to plot: give at least one run folder")
    _check_size(width, height)
    figure_format(out)
    fig = Figure(figsize=(width / DPI, height / DPI), dpi=DPI, layout="constrained")
    ax_loss, ax_ppl = fig.subplots(1, 2)
    labels = _short_labels(list(runs))
    groups = [(os.path.dirname(label), os.path.basename(label) or label) for label in labels]  # (run, model)
    if len({run for run, _ in groups}) > 1:
        _plot_compared_runs(fig, ax_loss, ax_ppl, groups, list(runs.values()), unigram_loss)
        parent = _common_parent(list(runs))
        fig.suptitle(title or ("Training curves" + (f" in {parent}" if parent else "")), fontsize=13)
        return save_figure(fig, out)
    colors = [f"C{i % 10}" for i in range(len(runs))]
    for color, label, records in zip(colors, labels, runs.values()):
        steps, loss = _series(records, "loss")
        if steps:
            _plot_train(ax_loss, ax_ppl, steps, loss, color, label)
        steps, val = _series(records, "val_loss")
        if steps:
            ax_loss.plot(steps, val, color=color, lw=1.4, ls="--", marker="o", ms=4, label=f"{label}: validation")
        steps, ppl = _series(records, "val_perplexity")
        if steps:
            ax_ppl.plot(steps, ppl, color=color, lw=1.4, ls="--", marker="o", ms=4)
    if unigram_loss is not None:
        ax_loss.axhline(unigram_loss, color="grey", ls=":", label="unigram baseline (validation)")
        ax_ppl.axhline(math.exp(min(unigram_loss, 700.0)), color="grey", ls=":")
    _label_axes(ax_loss, ax_ppl)
    # one legend column per run (its train and validation entries stacked), at most 4 side by side
    fig.legend(loc="outside lower center", ncol=min(4, len(runs) + (unigram_loss is not None)), fontsize=10,
               frameon=False, title="solid: train, dashed with dots: validation", title_fontsize=10)
    parent = _common_parent(list(runs))
    fig.suptitle(title or ("Training curves" + (f" in {parent}" if parent else "")), fontsize=13)
    return save_figure(fig, out)



_RUN_STYLES = ("-", "--", ":", "-.")
_RUN_MARKERS = ("o", "s", "^", "D", "v", "P")


def _plot_compared_runs(fig, ax_loss, ax_ppl, groups: list[tuple[str, str]], records: list[list[dict]],
                        unigram_loss: float | None) -> None:
    """Several runs of several models (``groups``: each curve's ``(run, model)``): one colour per model, one
    line style (train) and marker (validation) per run, and a legend of models and runs, not of every curve."""
    from matplotlib.lines import Line2D

    models = list(dict.fromkeys(model for _, model in groups))
    run_names = list(dict.fromkeys(run for run, _ in groups))
    color = {model: f"C{i % 10}" for i, model in enumerate(models)}
    style = {run: _RUN_STYLES[i % len(_RUN_STYLES)] for i, run in enumerate(run_names)}
    marker = {run: _RUN_MARKERS[i % len(_RUN_MARKERS)] for i, run in enumerate(run_names)}
    for (run, model), rows in zip(groups, records):
        steps, loss = _series(rows, "loss")
        if steps:
            _plot_train(ax_loss, ax_ppl, steps, loss, color[model], None, style[run])
        for ax, key in ((ax_loss, "val_loss"), (ax_ppl, "val_perplexity")):
            steps, val = _series(rows, key)
            if steps:
                ax.plot(steps, val, color=color[model], ls="none", marker=marker[run], ms=5)
    handles = [Line2D([], [], color=color[m], lw=2.5, label=m) for m in models]
    handles += [Line2D([], [], color="black", ls=style[r], marker=marker[r], ms=5, label=r) for r in run_names]
    if unigram_loss is not None:
        ax_loss.axhline(unigram_loss, color="grey", ls=":")
        ax_ppl.axhline(math.exp(min(unigram_loss, 700.0)), color="grey", ls=":")
        handles.append(Line2D([], [], color="grey", ls=":", label="unigram baseline (validation)"))
    _label_axes(ax_loss, ax_ppl)
    fig.legend(handles=handles, loc="outside lower center", ncol=min(6, len(handles)), fontsize=10, frameon=False,
               title="colour: model; line: a run's train loss (faint as logged, bold its mean); markers: its "
                     "validation", title_fontsize=10)
