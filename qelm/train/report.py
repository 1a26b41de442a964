"""The words of a training run: ``summary.json`` (every measured figure with the method that measured it),
and the verdict that says, from the measured validation perplexities, how the QELM compares with each
classical model. Every number in the prose is taken from the figures it is given.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from .settings import MATCH_TOLERANCE, TrainSettings

__all__ = ["LABELS", "verdict", "summary", "TIE"]

LABELS = {"qelm": "QELM", "twin": "classical twin", "matched": "matched classical", "unigram": "unigram baseline"}
TIE = 1e-3  # perplexities whose logs differ by less than this (0.1%) are a tie
_NAMES = {"qelm": "the QELM", "twin": "the classical twin", "matched": "the parameter-matched classical model"}
_MEMORY_METHOD = {
    "cuda": "torch.cuda.max_memory_allocated on the training GPU, reset when each model starts",
    "cpu": "peak resident set of the process (getrusage), which includes everything the process did before",
}


def _same(a: float, b: float) -> bool:
    return abs(math.log(a) - math.log(b)) < TIE


def _winner(ppl: dict[str, float]) -> tuple[str | None, list[str]]:
    """``(winner, sentences)``: the model with the lowest perplexity, "tie" when the best two are within
    0.1%, None when only one model trained."""
    q = ppl.get("qelm")
    if len(ppl) > 1:
        ranked = sorted(ppl, key=lambda n: ppl[n])
        best = ranked[0]
        if _same(ppl[best], ppl[ranked[1]]):
            tied = [n for n in ranked if _same(ppl[n], ppl[best])]
            return "tie", [f"a tie for best: {' and '.join(_NAMES[n] for n in tied)} reach validation perplexity "
                           f"{ppl[best]:.3f} (lower is better)"]
        return best, [f"{_NAMES[best]} won, with validation perplexity {ppl[best]:.3f} (lower is better)"]
    if q is not None:
        return None, [f"the QELM reached validation perplexity {q:.3f} (no classical model trained)"]
    return None, []


def _against_baselines(ppl: dict[str, float], params: dict[str, int]) -> tuple[dict[str, str], list[str]]:
    """``(outcome, sentences)``: for each classical model, whether the QELM "beat", "tied with" or
    "lost to" it, and a sentence with both perplexities and the parameter counts."""
    q = ppl.get("qelm")
    outcome: dict[str, str] = {}
    parts: list[str] = []
    if q is None:
        return outcome, parts
    for b in ("twin", "matched"):
        if b not in ppl:
            continue
        outcome[b] = "tied with" if _same(q, ppl[b]) else "beat" if q < ppl[b] else "lost to"
        if b == "twin":
            who = f"its classical twin, which has {params[b] / params['qelm']:.2f}x its parameters"
        else:
            who = (f"the equally-sized classical model ({params[b]} parameters vs the QELM's "
                   f"{params['qelm']}, {100 * (params[b] / params['qelm'] - 1):+.1f}%)")
        parts.append(f"the QELM {outcome[b]} {who}: validation perplexity {q:.3f} vs {ppl[b]:.3f}")
    return outcome, parts


def _conclusion(outcome: dict[str, str]) -> list[str]:
    """What the outcomes say about the circuits: equal size (matched) tells circuits from size."""
    if "matched" in outcome:
        if outcome["matched"] == "lost to":
            return ["so at equal parameter count the classical model did better: on this run the circuits "
                    "were not worth their parameters"]
        if outcome["matched"] == "tied with":
            return ["so at equal parameter count the QELM and the classical model did equally well"]
        if outcome.get("twin", "beat") == "beat":
            return ["so the QELM did better than classical models of its own size and larger"]
        return ["so the QELM did better than a classical model of its own size, but not than the larger twin"]
    if outcome.get("twin") == "lost to":
        return ["the twin is larger and no parameter-matched model was trained, so this does not tell size "
                "from circuits"]
    return []


def verdict(figures: dict[str, dict[str, Any]], unigram: dict[str, float]) -> tuple[str | None, str]:
    """``(winner, verdict)`` from the measured validation perplexities. ``winner`` is the model with the
    lowest perplexity ("qelm", "twin" or "matched"), "tie" when the best two are within 0.1%, or None when
    only one model trained. ``verdict`` says plainly how the QELM compares with each classical model."""
    ppl = {n: f["val_perplexity"] for n, f in figures.items() if f.get("val_perplexity") is not None}
    params = {n: f["parameters"] for n, f in figures.items()}
    u = unigram["perplexity"]
    winner, parts = _winner(ppl)
    outcome, compared = _against_baselines(ppl, params)
    parts += compared + _conclusion(outcome)
    weak = [n for n in ("qelm", "twin", "matched") if n in ppl and ppl[n] >= u]
    if weak:
        parts.append(f"not better than the unigram baseline ({u:.3f}): "
                     + ", ".join(f"{_NAMES[n]} ({ppl[n]:.3f})" for n in weak))
    else:
        parts.append(f"unigram baseline: {u:.3f}")
    if "qelm" in figures and len(figures) > 1:
        sizes = ", ".join(f"{LABELS[n]} {figures[n]['parameters']}" for n in ("twin", "matched") if n in figures)
        parts.append(f"parameters: QELM {figures['qelm']['parameters']} ({figures['qelm']['circuit_parameters']} of "
                     f"them gate angles), {sizes}")
    return winner, "; ".join(parts)


def _baselines_method(models: dict[str, dict[str, Any]]) -> str:
    """How the classical models were built, with their measured sizes."""
    q = models["qelm"]
    parts = []
    if "twin" in models:
        parts.append(f"Classical twin: ClassicalLM at the QELM's config (every slot classical, d_model "
                     f"{models['twin']['d_model']}, d_hidden {models['twin']['d_hidden']}).")
    if "matched" in models:
        m = models["matched"]
        parts.append(f"Matched classical: ClassicalLM.matched_to(qelm), the same vocab, context, heads and layers with "
                     f"d_model {m['d_model']} and d_hidden {m['d_hidden']} chosen so its {m['parameters']} parameters "
                     f"are within {MATCH_TOLERANCE:.0%} of the QELM's {q['parameters']}.")
    return " ".join(parts) or "No classical model was trained."


def _schedule(settings: TrainSettings) -> str:
    if settings.lr_schedule == "constant":
        return f"constant lr {settings.lr:g}"
    return (f"AdamW lr {settings.lr:g} after {settings.warmup_steps} warm-up steps, cosine decay to {settings.min_lr:g} "
            f"at the last step")


def _method(models: dict[str, dict[str, Any]], dataset, config, settings: TrainSettings, device) -> str:
    return (f"validation: mean next-token cross-entropy (nats/token) over all {dataset.val_ids.numel() - 1} tokens of "
            f"the last {dataset.val_fraction:.0%} of the corpus, non-overlapping windows of {config.context_len} tokens; "
            f"perplexity = exp(loss). Unigram baseline: add-one smoothed token frequencies of the training split, "
            f"scored on the same tokens. tokens_per_s: training tokens (global batch x context) per second of "
            f"forward + backward + optimizer step, over the logged steps. peak_memory_bytes: "
            f"{_MEMORY_METHOD['cuda' if str(device).startswith('cuda') else 'cpu']}. Every model starts from "
            f"seed {settings.seed} and trains on the same batches for the same steps at the same learning rates "
            f"({_schedule(settings)}). "
            + _baselines_method(models))


def summary(models: dict[str, dict[str, Any]], unigram: dict[str, float], dataset, config, spec, settings: TrainSettings,
            world: int, device) -> dict[str, Any]:
    """The content of ``summary.json``: each model's figures (``ModelRun.figures()``), the unigram
    baseline, the winner and verdict, the method, the data, the run's settings and the config."""
    winner, text = verdict(models, unigram)
    ds = dataset
    return {
        "method": _method(models, ds, config, settings, device),
        "winner": winner,
        "verdict": text,
        "models": models,
        "unigram": {"val_loss": unigram["loss"], "val_perplexity": unigram["perplexity"], "val_tokens": unigram["tokens"]},
        "data": {"source": ds.source, "sha256": ds.sha256, "chars": ds.chars, "tokenizer": ds.tokenizer.kind,
                 "vocab_size": ds.vocab_size, "train_tokens": int(ds.train_ids.numel()),
                 "val_tokens": int(ds.val_ids.numel()), "val_fraction": ds.val_fraction},
        "run": {"steps": settings.steps, "batch_size": settings.batch_size, "context_len": config.context_len,
                "lr": settings.lr, "lr_schedule": settings.lr_schedule, "warmup_steps": settings.warmup_steps,
                "min_lr": settings.min_lr, "seed": settings.seed, "grad_clip": settings.grad_clip,
                "weight_decay": settings.weight_decay, "optimizer": "AdamW", "world_size": world, "device": str(device),
                "backend": spec.name, "shots": spec.shots, "torch_threads": torch.get_num_threads()},
        "config": config.to_dict(),
    }
