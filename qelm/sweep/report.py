"""The text of ``qelm sweep --report``: what was swept, the Pareto frontier as a table, the verdict, the
issue's goal, and every failed or lost trial with its reason. Built from the sweep's table only."""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any

from .results import GOAL_RATIO

__all__ = ["report_text"]


def _num(x: float | None, fmt: str) -> str:
    return "-" if x is None else format(x, fmt)


def report_text(table: dict[str, Any]) -> str:
    sweep, corpus = table["sweep"], table.get("corpus", {})
    c = sweep["trials"]
    lines = [
        f"Sweep {sweep['name']!r} on {Path(corpus.get('source', '?')).name} ({corpus.get('chars', '?'):,} characters, "
        f"{corpus.get('tokenizer', '?')} tokenizer, {corpus.get('vocab_size', '?')} tokens): {sum(c.values())} trials "
        f"({', '.join(f'{n} {s}' for s, n in c.items() if n)}), {sweep['distinct_models']} distinct models, "
        f"seeds {sweep['seeds']}, sampler {sweep['sampler']}.",
        f"Searched: {'; '.join(sweep['searched']) or 'nothing'}.",
        "",
        "Pareto frontier (parameters vs validation perplexity, mean over seeds; no model has fewer parameters and a "
        "lower perplexity):",
    ]
    models = {m["key"]: m for m in table["models"]}
    rows = [("params", "val ppl", "sd", "range", "seeds", "to matched", "to classical", "kind", "model")]
    for key in table["frontier"]:
        m = models[key]
        p = m["val_perplexity"]
        r, rc = m.get("ratio_to_matched"), m.get("ratio_to_classical")
        rows.append((f"{m['parameters']:,}", f"{p['mean']:.3f}", _num(p["sd"], ".3f"),
                     f"{p['min']:.3f}-{p['max']:.3f}" if p["n"] > 1 else "-",
                     "-" if m["kind"] == "unigram" else str(p["n"]),
                     f"{r['mean']:.3f}" if r and r["n"] else "-", f"{rc['mean']:.3f}" if rc and rc["n"] else "-",
                     m["kind"], m["label"]))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for r in rows:
        lines.append("  " + "  ".join(c.rjust(w) if i < 7 else c.ljust(w) for i, (c, w) in enumerate(zip(r, widths))).rstrip())
    best = (table.get("goal") or {}).get("best_key")
    if best and best not in table["frontier"]:
        m = models[best]
        lines.append(f"(The closest quantum configuration, {m['label']}, {m['parameters']:,} parameters, val ppl "
                     f"{m['val_perplexity']['mean']:.3f}, is not on the frontier.)")
    lines += ["", f"Verdict: {table['verdict']}"]
    goal = table.get("goal")
    if goal:
        lines.append(f"Goal (a quantum configuration within {100 * (GOAL_RATIO - 1):.0f}% of the classical model of "
                     f"equal parameters, or better): {'met' if goal['met'] else 'not met'} (best mean ratio "
                     f"{goal['best_ratio']:.3f}); against each one's own matched model at the same settings "
                     f"{'met' if goal['met_paired'] else 'not met'} (best {goal['best_paired_ratio']:.3f}).")
    bad = [t for t in table["trials"] if t["state"] in ("failed", "lost")]
    if bad:
        lines += ["", "Failed or lost trials:"]
        lines += [f"  #{t['number']} {t['state']}: {t.get('error', '')}" for t in bad]
    lines += ["", textwrap.fill(f"Method: {table['method']}", width=110, subsequent_indent="  ")]
    return "\n".join(lines)
