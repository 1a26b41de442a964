"""The benchmark as text: the Markdown table of the sweep, the fitted exponents, and the JSON file."""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..files import atomic_write
from .results import BenchResult
from .settings import EXTRAPOLATED, MODES, row_label

__all__ = ["format_table", "format_scaling", "write_json"]


def _fmt(x: float | None, digits: int = 3) -> str:
    """Three significant digits, thousands separated, never in e-notation."""
    if x is None:
        return "-"
    if abs(x) >= 10 ** (digits - 1):
        return f"{x:,.0f}"
    if x == 0:
        return "0"
    decimals = max(0, digits - 1 - math.floor(math.log10(abs(x))))
    return f"{x:.{decimals}f}"


def format_table(result: BenchResult | dict[str, Any]) -> str:
    """The markdown table of the main sweep: one line per model and sequence length. Extrapolated cells
    are marked ``~`` and footnoted; failed cells name their status below the table."""
    d = result.to_dict() if isinstance(result, BenchResult) else result
    rows = d["rows"]
    ratios = {(r["backend"], r["seq_len"], r["mode"]): r for r in d["ratios"]}
    index = {(r["model"], r["backend"], r["seq_len"], r["mode"]): r for r in rows}
    keys = list(dict.fromkeys((r["model"], r["backend"], r["seq_len"]) for r in rows))
    notes: list[str] = []

    def cell(r: dict[str, Any] | None, value: Callable[[dict[str, Any]], float | None]) -> str:
        if r is None:
            return "-"
        if r["status"] == "ok":
            return _fmt(value(r))
        if r["extrapolated"] is not None:
            return "~" + _fmt(value(r["extrapolated"])) + "*"
        # one footnote per model and cause: a backend that cannot start fails every cell the same way
        note = f"{r['label']}: {r['error'] or r['status']}"
        if note not in notes:
            notes.append(note)
        return f"n/a[{notes.index(note) + 1}]"

    graphed = any(r.get("eager_median_s") for r in rows)  # CUDA graphs: the eager figures beside them
    header = ("| model | seq len | fwd ms median (IQR) | infer tok/s | train tok/s | gen tok/s | "
              "peak MB fwd / train | fwd x twin | train x twin |")
    if graphed:
        header += " eager fwd ms | eager gen tok/s | gen x twin |"
    lines = [header, "|" + "---|" * (12 if graphed else 9)]
    for model, backend, T in keys:
        inf, trn, gen = (index.get((model, backend, T, m)) for m in MODES)
        if inf is not None and inf["status"] == "ok":
            fwd = f"{_fmt(inf['median_s'] * 1e3)} ({_fmt(inf['q25_s'] * 1e3)}-{_fmt(inf['q75_s'] * 1e3)})"
        else:
            fwd = cell(inf, lambda r: r["median_s"] * 1e3)
        mb = " / ".join(cell(r, lambda r: (r["peak_memory_bytes"] or 0) / 2**20 or None) for r in (inf, trn))

        def ratio(mode: str) -> str:
            rr = ratios.get((backend, T, mode)) if model == "qelm" else None
            return f"{_fmt(rr['time_ratio'])}x" if rr else "-"

        line = (f"| {row_label(model, backend)} | {T} | {fwd} | {cell(inf, lambda r: r['tokens_per_s'])} | "
                f"{cell(trn, lambda r: r['tokens_per_s'])} | {cell(gen, lambda r: r['tokens_per_s'])}"
                f"{' / ' + cell(gen, lambda r: r.get('no_cache_tokens_per_s')) if gen else ''} | "
                f"{mb} | {ratio('inference')} | {ratio('training')} |")
        if graphed:
            line += (f" {cell(inf, lambda r: r['eager_median_s'] * 1e3 if r.get('eager_median_s') else None)} | "
                     f"{cell(gen, lambda r: r.get('eager_tokens_per_s'))} | {ratio('generation')} |")
        lines.append(line)
    s = d["settings"]
    foot = [f"batch {s['batch']}, up to {s['repeats']} timed runs after {s['warmup']} warm-up (fewer where the "
            f"{s['max_seconds']:g} s budget ran out), device {s['device']}"
             f", torch threads {s['threads'] or 'default'}; "
            + (f"gen tok/s: {s['gen_tokens']} new tokens after a prompt of T - {s['gen_tokens']}, with the KV cache "
               "/ without it (each token re-reads the window); " if "generation" in s["modes"] else "")
            + "x twin: QELM time / twin time (>1: the QELM is slower)."
            + (" fwd and gen: replayed CUDA graphs (a recorded forward; a recorded decode step on a static KV "
               "cache); eager: every call launched (gen: the growing cache)." if graphed else "")]
    if any(r["extrapolated"] for r in rows):
        foot.append(f"~X*: {EXTRAPOLATED}: predicted for a length over the budget (model in the JSON: time_model).")
    foot += [f"[{i + 1}] {n}" for i, n in enumerate(notes)]
    foot += [f"note: {n}" for n in d.get("notes", [])]
    return "\n".join(lines + [""] + foot)


def format_scaling(result: BenchResult | dict[str, Any]) -> str:
    """Fitted exponents, one line each: time vs sequence length, and vs qubits per circuit."""
    d = result.to_dict() if isinstance(result, BenchResult) else result
    lines = []
    for f in d["scaling"]["seq_len"]:
        lines.append(f"{f['label']:<24} {f['mode']:<10} {f['formula']:<16} (r2 {f['r2']:.3f}, "
                     f"T = {', '.join(map(str, f['seq_lens']))})")
    for f in d["scaling"]["qubits"]:
        lines.append(f"{f['label']:<24} {f['mode']:<10} {f['formula']} (r2 {f['r2']:.3f}, T = {f['seq_len']}, "
                     f"n = {', '.join(map(str, f['qubits']))})")
    failed: dict[tuple[str, str, str], list[str]] = {}  # (label, mode, cause) -> the qubit counts it hit
    for r in d["qubit_rows"]:
        if r["status"] != "ok":
            status = r["status"] if r["status"].startswith("skipped") or not r["error"] else "failed"
            cause = status + (f" ({r['error']})" if r["error"] else "")
            failed.setdefault((r["label"], r["mode"], cause), []).append(str(r["n_qubits"]))
    for (label, mode, cause), ns in failed.items():
        lines.append(f"{label:<24} {mode:<10} n={','.join(ns)}: {cause}")
    return "\n".join(lines)


def write_json(result: BenchResult, path: str | os.PathLike) -> Path:
    """Write ``result.to_dict()`` as indented JSON, atomically."""
    return atomic_write(path, json.dumps(result.to_dict(), indent=1) + "\n", make_parents=True)
