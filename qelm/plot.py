"""Figures of trained models and training runs: attention heatmaps and loss / perplexity curves.

Every number drawn is read from the model or the run files it names: attention weights are the
``last_attention`` a forward pass leaves on each attention module (``keep_attention = True``), curves are
the ``metrics.jsonl`` records the trainer measured. Figures are built on ``matplotlib.figure.Figure``
(no pyplot state), sized in pixels at a fixed :data:`DPI`, and written atomically.
"""

from __future__ import annotations

import io
import json
import math
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from .files import atomic_write

__all__ = [
    "DPI",
    "attention_maps",
    "attention_for_text",
    "token_label",
    "plot_attention",
    "read_metrics",
    "read_runs",
    "plot_curves",
]

#: dots per inch of every figure; ``width`` and ``height`` are in pixels, so the size on disk is exact
DPI = 100
_FORMATS = ("png", "svg", "pdf")


# --- attention ----------------------------------------------------------------------------------------
def _attention_modules(model: torch.nn.Module) -> list[torch.nn.Module]:
    # QuantumAttentionHead and CausalSelfAttention both expose keep_attention / last_attention
    return [m for m in model.modules() if hasattr(m, "keep_attention") and hasattr(m, "last_attention")]


@torch.no_grad()
def attention_maps(model: torch.nn.Module, idx: torch.Tensor) -> torch.Tensor:
    """Attention weights of every layer and head for one sequence: ``idx`` (T,) or (1, T) ->
    ``(n_layers, n_heads, T, T)``, row = query token, column = key token (rows sum to one).

    Runs one forward pass with ``keep_attention`` on; the modules' flags are restored afterwards."""
    idx = torch.as_tensor(idx)
    if idx.dim() == 1:
        idx = idx.unsqueeze(0)
    if idx.dim() != 2 or idx.shape[0] != 1:
        raise ValueError(f"token ids must be one sequence, shape (T,) or (1, T); got {tuple(idx.shape)}")
    modules = _attention_modules(model)
    if not modules:
        raise ValueError(f"{type(model).__name__} has no attention module with keep_attention; "
                         "give a QELM or ClassicalLM")
    before = [m.keep_attention for m in modules]
    try:
        for m in modules:
            m.keep_attention = True
        model(idx)
        maps = [m.last_attention[0] for m in modules]  # each (H, T, T)
    finally:
        for m, flag in zip(modules, before):
            m.keep_attention = flag
    return torch.stack(maps).float().cpu()  # (L, H, T, T)


def token_label(text: str) -> str:
    """A token as a tick label: spaces and control characters made visible."""
    return text.replace(" ", "\u2423").replace("\n", "\\n").replace("\t", "\\t").replace("\r", "\\r") or "\u2205"


def attention_for_text(model: torch.nn.Module, tokenizer, text: str) -> tuple[torch.Tensor, list[str], int]:
    """Encode ``text`` with ``tokenizer`` and return ``(maps (L, H, T, T), token labels (T), dropped)``.

    A prompt longer than the model's ``context_len`` keeps its last ``context_len`` tokens; ``dropped``
    says how many were cut from the front."""
    if not text:
        raise ValueError("the text is empty: give at least one character to compute attention over")
    ids = list(tokenizer.encode(text))
    if not ids:
        raise ValueError(f"text {text!r} encodes to no tokens with this tokenizer")
    context = model.config.context_len
    dropped = max(0, len(ids) - context)
    ids = ids[dropped:]
    maps = attention_maps(model, torch.tensor(ids, dtype=torch.long))
    return maps, [token_label(tokenizer.decode([i])) for i in ids], dropped


def _check_size(width: int, height: int) -> None:
    for name, value in (("width", width), ("height", height)):
        if isinstance(value, bool) or not isinstance(value, int) or not 100 <= value <= 20000:
            raise ValueError(f"{name}={value!r} pixels is invalid: use an integer from 100 to 20000")


def _save(fig, out: str | os.PathLike) -> Path:
    out = Path(out)
    fmt = out.suffix.lower().lstrip(".")
    if fmt not in _FORMATS:
        raise ValueError(f"output file {str(out)!r} has no image suffix matplotlib writes here: "
                         f"end it in {', '.join('.' + f for f in _FORMATS)}")
    buf = io.BytesIO()
    meta = {"Software": None} if fmt == "png" else {}
    fig.savefig(buf, format=fmt, dpi=DPI, metadata=meta)  # no bbox_inches="tight": keep the pixel size
    return atomic_write(out, buf.getvalue())


def plot_attention(panels: dict[str, tuple[torch.Tensor, Sequence[str]]], out: str | os.PathLike, *,
                   width: int | None = None, height: int | None = None, title: str | None = None) -> Path:
    """Heatmaps of attention weights, one per layer (rows) and head (columns), models side by side.

    ``panels`` maps a model label (e.g. ``"quantum"``, ``"classical"``) to ``(maps (L, H, T, T), tokens)``
    from :func:`attention_for_text`. ``width``/``height`` in pixels (default: 330 x 330 per heatmap).
    Returns the path written."""
    import matplotlib
    from matplotlib.figure import Figure

    if not panels:
        raise ValueError("no attention maps to plot: give at least one model")
    for label, (maps, tokens) in panels.items():
        if maps.dim() != 4 or maps.shape[-1] != maps.shape[-2] or maps.shape[-1] != len(tokens):
            raise ValueError(f"attention maps of {label!r} have shape {tuple(maps.shape)} for {len(tokens)} tokens; "
                             "expected (layers, heads, T, T) with T = number of tokens")
    rows = max(m.shape[0] for m, _ in panels.values())
    cols = sum(m.shape[1] for m, _ in panels.values())
    width = width or max(500, 330 * cols + 120)
    height = height or max(400, 330 * rows + 110)
    _check_size(width, height)

    fig = Figure(figsize=(width / DPI, height / DPI), dpi=DPI, layout="constrained")
    axes = fig.subplots(rows, cols, squeeze=False)
    cell = 0.7 * min(width / cols, (height - 110) / rows)  # pixels of one heatmap's side, roughly
    cmap = matplotlib.colormaps["viridis"].with_extremes(bad="white")
    image = None
    col = 0
    for label, (maps, tokens) in panels.items():
        L, H, T, _ = maps.shape
        # tick labels need ~10 px each: label every step-th token so they never overlap at this size
        step = max(1, math.ceil(T / max(2, int(cell // 10))))
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
    fig.colorbar(image, ax=axes, shrink=0.8, label="attention weight (rows sum to 1)")
    note = "blank cells: later tokens, hidden by the causal mask"
    fig.suptitle(f"{title or 'Attention weights per layer and head'}\n{note}", fontsize=12)
    return _save(fig, out)


# --- training curves ----------------------------------------------------------------------------------
def read_metrics(path: str | os.PathLike) -> list[dict]:
    """The records of one ``metrics.jsonl`` (one JSON object per line, blank lines skipped). A torn last
    line (a run killed while writing it) is skipped; a bad line anywhere else is an error."""
    path = Path(path)
    records = []
    lines = path.read_text(encoding="utf-8").splitlines()
    for lineno, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as e:
            if lineno == len(lines):
                continue
            raise ValueError(f"{path}:{lineno} is not valid JSON ({e.msg}); metrics.jsonl holds one JSON "
                             "object per line") from None
        if not isinstance(record, dict) or "step" not in record:
            raise ValueError(f"{path}:{lineno} has no 'step' key; each line of metrics.jsonl must be an "
                             "object with step, loss and (on eval steps) val_loss, val_perplexity")
        records.append(record)
    return records


def read_runs(run_dirs: Sequence[str | os.PathLike]) -> dict[str, list[dict]]:
    """Metrics of each run folder, labelled by its path: ``DIR/metrics.jsonl`` itself, else the
    ``DIR/qelm/``, ``DIR/twin/`` and ``DIR/matched/`` checkpoints of a training run (labels ``DIR/qelm``, ...)."""
    if not run_dirs:
        raise ValueError("no run folders given: name at least one training run folder")
    runs: dict[str, list[dict]] = {}
    for d in run_dirs:
        d = Path(d)
        if not d.is_dir():
            raise FileNotFoundError(f"run folder {str(d)!r} does not exist (or is not a folder)")
        candidates = [d] if (d / "metrics.jsonl").exists() else [d / "qelm", d / "twin", d / "matched"]
        found = [c for c in candidates if (c / "metrics.jsonl").exists()]
        if not found:
            raise FileNotFoundError(f"no metrics.jsonl in {str(d)!r} or its qelm/, twin/ and matched/ subfolders: "
                                    "give a training run folder (the --out of qelm train) or one of its checkpoints")
        for c in found:
            records = read_metrics(c / "metrics.jsonl")
            if not any("loss" in r or "val_loss" in r for r in records):
                raise ValueError(f"{c / 'metrics.jsonl'} has no loss or val_loss values to plot")
            runs[c.as_posix()] = records
    return runs


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


def plot_curves(runs: dict[str, list[dict]], out: str | os.PathLike, *, width: int = 1200, height: int = 560,
                title: str | None = None) -> Path:
    """Loss (left) and perplexity (right) against training step for each run, on one figure.

    Train loss is the logged ``loss``; validation points are ``val_loss`` / ``val_perplexity`` as the
    trainer measured them; the train perplexity line is ``exp(loss)`` of the logged train loss, and is
    labelled so. Returns the path written."""
    from matplotlib.figure import Figure

    if not runs:
        raise ValueError("no runs to plot: give at least one run folder")
    _check_size(width, height)
    fig = Figure(figsize=(width / DPI, height / DPI), dpi=DPI, layout="constrained")
    ax_loss, ax_ppl = fig.subplots(1, 2)
    colors = [f"C{i % 10}" for i in range(len(runs))]
    labels = _short_labels(list(runs))
    for color, label, records in zip(colors, labels, runs.values()):
        steps, loss = _series(records, "loss")
        if steps:
            ax_loss.plot(steps, loss, color=color, lw=1.4, label=f"{label}: train")
            ax_ppl.plot(steps, [math.exp(min(v, 700.0)) for v in loss], color=color, lw=1.4)
        steps, val = _series(records, "val_loss")
        if steps:
            ax_loss.plot(steps, val, color=color, lw=1.4, ls="--", marker="o", ms=4, label=f"{label}: validation")
        steps, ppl = _series(records, "val_perplexity")
        if steps:
            ax_ppl.plot(steps, ppl, color=color, lw=1.4, ls="--", marker="o", ms=4)
    ax_loss.set_title("Cross-entropy loss", fontsize=12)
    ax_loss.set_xlabel("training step", fontsize=11)
    ax_loss.set_ylabel("loss (nats per token)", fontsize=11)
    ax_ppl.set_title("Perplexity (train: exp of train loss; validation: measured)", fontsize=12)
    ax_ppl.set_xlabel("training step", fontsize=11)
    ax_ppl.set_ylabel("perplexity (log scale)", fontsize=11)
    ax_ppl.set_yscale("log")
    for ax in (ax_loss, ax_ppl):
        ax.grid(True, alpha=0.3)
        ax.tick_params(labelsize=10)
    # one legend column per run (its train and validation entries stacked), at most 4 side by side
    fig.legend(loc="outside lower center", ncol=min(4, len(runs)), fontsize=10, frameon=False,
               title="solid: train, dashed with dots: validation", title_fontsize=10)
    parent = _common_parent(list(runs))
    fig.suptitle(title or ("Training curves" + (f" in {parent}" if parent else "")), fontsize=13)
    return _save(fig, out)
