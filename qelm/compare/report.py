"""Words and tables derived from a comparison's numbers: the verdict, the check of the published claim
and the Markdown tables. Every number in them is taken from the :class:`Comparison` given.
"""

from __future__ import annotations

import textwrap
from collections.abc import Callable

from .results import COMPONENTS, PUBLISHED_CLAIM, SIZE_FORMATS, Comparison, ModelReport

__all__ = ["verdict", "claim_verdict", "markdown", "human_bytes", "human_count"]


def human_bytes(n: float | None) -> str:
    if n is None:
        return "n/a"
    for unit, scale in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{int(n)} B"


def human_count(n: float | None) -> str:
    if n is None:
        return "n/a"
    for unit, scale in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(n) >= scale:
            return f"{n / scale:.2f}{unit}"
    return f"{n:.3g}" if n != int(n) else f"{int(n)}"


def verdict(comp: Comparison) -> str:
    """One line, every number in it taken from ``comp``."""
    f32 = "safetensors_float32"
    quantum = [m for m in comp.models if m.kind == "quantum"]
    classical = [m for m in comp.models if m.kind == "classical"]
    if not quantum or not classical:
        return f"only {'quantum' if quantum else 'classical'} models here; nothing to set against each other"
    q = quantum[0]

    def payload(m: ModelReport) -> int:  # float32 tensor bytes: the file minus its header
        return m.size(f32) - m.size("safetensors_float32_header")

    parts = []
    for c in classical:
        parts.append(f"{c.name} has {c.total_parameters / q.total_parameters:.2f}x the parameters and "
                     f"{c.size(f32) / q.size(f32):.2f}x the float32 bytes (tensor data {payload(c) / payload(q):.2f}x, "
                     f"headers {c.size('safetensors_float32_header'):,} vs {q.size('safetensors_float32_header'):,} B)")
    line = (f"{q.name}: {q.total_parameters:,} params, {human_bytes(q.size(f32))} in float32 "
            f"({q.total_circuit_weights:,} circuit weights, {q.executions_per_token:.1f} circuit executions/token); "
            + "; ".join(parts))
    same = [c for c in classical if abs(payload(c) / payload(q) - 1) <= 0.05]
    smaller_twin = [c for c in classical if payload(c) > 1.05 * payload(q)]
    if same:
        line += (f". Bytes follow parameter count: a classical model with as many parameters ({same[0].name}) "
                 f"stores the same tensor data" + (", so the saving against the wider classical twin is the qubit "
                                                   "bottleneck removing parameters, not quantum compression"
                                                   if smaller_twin else ""))
    with_ppl = {m.name: m.perplexity["perplexity"] for m in comp.models if m.perplexity}
    if q.perplexity and len(with_ppl) > 1:
        best = min(with_ppl, key=lambda name: with_ppl[name])
        ppl = ", ".join(f"{name} {value:.2f}" for name, value in with_ppl.items())
        line += (f". Validation perplexity {ppl}: "
                 + (f"{q.name} is best" if best == q.name else f"{q.name} LOSES to {best}"))
    return line


def claim_verdict(comp: Comparison) -> str:
    """The published claim set against what this configuration measures here."""
    f32 = "safetensors_float32"
    q, twin = comp["qelm"], comp["twin"]
    qlo, qhi = PUBLISHED_CLAIM["qelm_bytes"]
    clo, chi = PUBLISHED_CLAIM["classical_bytes"]
    claimed_gap = (clo / qhi, chi / qlo)
    measured_gap = twin.size(f32) / q.size(f32)
    in_range = clo <= twin.size(f32) <= chi
    qelm_match = qlo <= q.size(f32) <= qhi
    return (f"claim '{PUBLISHED_CLAIM['text']}' vs measured float32 safetensors at this configuration: "
            f"QELM {human_bytes(q.size(f32))} ({'matches' if qelm_match else 'does not match'} the claimed 2,165 KB: "
            f"the claim is {qlo / q.size(f32):.1f}-{qhi / q.size(f32):.1f}x the measured size), classical twin "
            f"{human_bytes(twin.size(f32))} ({'inside' if in_range else 'outside'} the claimed 15-20 MB: "
            f"the claim is {clo / twin.size(f32):.1f}-{chi / twin.size(f32):.1f}x the measured size); measured gap "
            f"{measured_gap:.1f}x vs claimed {claimed_gap[0]:.1f}-{claimed_gap[1]:.1f}x — "
            + ("the claim holds here" if in_range and qelm_match else
               "the claim is not what this configuration costs: a classical model of it "
               + ("is far smaller than 15-20 MB" if twin.size(f32) < clo else "differs from 15-20 MB")))


def _table(header: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(r[i]) for r in [header] + rows) for i in range(len(header))]
    fmt = lambda r: "| " + " | ".join(c.ljust(w) for c, w in zip(r, widths)) + " |"  # noqa: E731
    return "\n".join([fmt(header), "|" + "|".join("-" * (w + 2) for w in widths) + "|"] + [fmt(r) for r in rows])


def _circuit_table(comp: Comparison) -> str:
    """One row per circuit each model runs ('' when none runs any)."""
    rows = []
    for m in comp.models:
        for c in m.circuits:
            shots = "state readout: no shot equivalent (use fidelity_method='swap_test')" if c.shots_per_token_worst is None \
                else f"{human_count(c.shots_per_token_worst)} ({human_count(c.shots_per_token_measured)} at measured <Z>)"
            rows.append([m.name, c.name, c.returns, str(c.n_wires), f"{c.executions_per_token:.2f}",
                         ", ".join(f"{k} {v}" for k, v in c.simulator_gates.items()),
                         str(c.basis_gate_count), str(c.depth), human_count(c.amplitude_updates_per_token), shots])
    if not rows:
        return ""
    return _table(["model", "circuit", "returns", "qubits", "executions/token", "simulator gates", "basis gates",
                   "depth", "2^n x gates/token", f"shots/token (eps={comp.eps:g})"], rows)


_SIZE_LABELS = {"safetensors_float32": "safetensors float32", "safetensors_float16": "safetensors float16",
                "safetensors_bfloat16": "safetensors bfloat16", "torch_save": "torch.save state_dict",
                "checkpoint": "checkpoint folder"}


def _model_rows(comp: Comparison) -> list[list[str]]:
    """The rows of the side-by-side table: a label, then one cell per model."""
    ms, ref = comp.models, comp.reference
    rows: list[list[str]] = []

    def row(label: str, cell: Callable[[ModelReport], str]) -> None:
        rows.append([label, *[cell(m) for m in ms]])

    def ratio_cell(value: Callable[[ModelReport], float | None]) -> Callable[[ModelReport], str]:
        def cell(m: ModelReport) -> str:
            r = comp.ratio(value, m)
            return "" if r is None else f"{r:.3f}x"
        return cell

    row("d_model / d_hidden / heads / layers", lambda m: "{d_model} / {d_hidden} / {n_heads} / {n_layers}".format(**m.config))
    row("slots (emb / attn / ff)", lambda m: "classical" if m.kind == "classical" else
        f"{m.config['embedding']} / {m.config['attention']} / {m.config['feed_forward']}")
    comps = list(COMPONENTS) + (["other"] if any("other" in m.parameters for m in ms) else [])
    for c in comps:
        def params(m: ModelReport, c: str = c) -> str:
            angles = m.circuit_weights.get(c, 0) + m.circuit_inputs.get(c, 0)
            return f"{m.parameters.get(c, 0):,}" + (f" ({angles:,} angles)" if angles else "")
        row(f"params: {c}", params)
    row("**params: total**", lambda m: f"**{m.total_parameters:,}**")
    row("of which circuit weights (gate angles)", lambda m: f"{m.total_circuit_weights:,}")
    row("of which circuit inputs (per-token angles)", lambda m: f"{m.total_circuit_inputs:,}")
    if ref:
        row(f"params / {ref}", ratio_cell(lambda r: r.total_parameters))
    for f in SIZE_FORMATS:
        def size(m: ModelReport, f: str = f) -> str:
            value = m.sizes.get(f)
            return m.size_notes.get(f, "n/a") if value is None else f"{value:,} B ({human_bytes(value)})"
        row(_SIZE_LABELS[f], size)
        if ref and f == "safetensors_float32":
            row(f"float32 bytes / {ref}", ratio_cell(lambda r: r.sizes.get("safetensors_float32")))
    row("classical FLOPs/token", lambda m: human_count(m.flops_per_token))
    if ref:
        row(f"FLOPs / {ref}", ratio_cell(lambda r: r.flops_per_token))
    row("simulator torch FLOPs/token", lambda m: "-" if m.kind == "classical" else "n/a (simulator outside torch)"
        if m.simulator_flops_per_token is None else human_count(m.simulator_flops_per_token))
    row("circuit executions/token", lambda m: "-" if not m.circuits else f"{m.executions_per_token:.2f}")
    row("widest circuit (qubits)", lambda m: "-" if not m.circuits else str(m.max_wires))
    row("state-vector amplitude updates/token", lambda m: "-" if not m.circuits else human_count(m.amplitude_updates_per_token))
    eps_label = f"eps={comp.eps:g}"
    row(f"hardware shots/token, worst case ({eps_label})", lambda m: "-" if not m.circuits else human_count(m.shots_per_token("worst")))
    row(f"hardware shots/token at measured <Z> ({eps_label})", lambda m: "-" if not m.circuits else human_count(m.shots_per_token("measured")))
    if any(m.perplexity for m in ms):
        row("validation perplexity", lambda m: f"{m.perplexity['perplexity']:.3f}" if m.perplexity else "n/a")
        row("validation loss (nats/token)", lambda m: f"{m.perplexity['loss']:.4f}" if m.perplexity else "n/a")
    return rows


def markdown(comp: Comparison) -> str:
    """A comparison as Markdown: one column per model, the circuits each runs,
    the method and the verdict."""
    header = ["", *[f"{m.name} ({m.kind})" for m in comp.models]]
    out = [_table(header, _model_rows(comp))]
    circuits = _circuit_table(comp)
    if circuits:
        out += ["", f"Circuits per forward pass ({comp.models[0].tokens_measured} tokens measured):", circuits]
    out.append("")
    out.append(textwrap.fill("Method: " + "; ".join(f"{k}: {v}" for k, v in comp.method.items()
                                                    if k in ("sizes", "flops", "shots")), width=110, subsequent_indent="  "))
    out.append("")
    out.append(f"Verdict: {comp.verdict}")
    if comp.claim_verdict:
        out.append(f"Claim check: {comp.claim_verdict}")
    return "\n".join(out)
