"""One trial of a sweep: a configuration trained at every seed of the sweep, beside its classical twin and
its parameter-matched classical model (the same seed, so the same initialisation draws and batches), each
measured on the validation split by every metric of :mod:`qelm.evaluate`.

Baselines are shared: a twin or matched model that an earlier trial measured at a seed (same key, see
:func:`~qelm.sweep.space.model_key`) is not trained again; the trial copies its figures. Training is
deterministic on CPU, so the copy is what training again would give.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..backends import BackendSpec
from ..config import QELMConfig
from ..data import TextDataset
from ..evaluate import bits_per_unit, next_token_accuracy, sample_diversity
from ..train import TrainOverrides, matched_config, train
from ..train.results import ModelRun
from .space import model_key

__all__ = ["run_configuration", "measure_model", "objective_value", "MODEL_FIGURES", "ROLES"]

ROLES = ("qelm", "twin", "matched")  # the models of a trial, in train()'s names
#: the figures of train()'s ModelRun.figures() a trial keeps per model and seed
MODEL_FIGURES = ("parameters", "circuit_parameters", "val_loss", "val_perplexity", "final_train_loss", "tokens_per_s",
                 "train_seconds", "steps")
_EVAL_BATCH = 64  # windows per forward pass when measuring (as train() evaluates)


def measure_model(run: ModelRun, dataset: TextDataset, *, seed: int, sample_tokens: int) -> dict[str, Any]:
    """Every figure of one trained model: train()'s (parameters, validation loss and perplexity, tokens/s,
    training seconds) and bits per character (byte), top-1/top-5 accuracy on the validation split, and
    distinct-1/2 and the repetition rate of ``sample_tokens`` sampled tokens (seeded by ``seed``)."""
    figures = run.figures()
    record = {k: figures[k] for k in MODEL_FIGURES}
    ids = dataset.val_ids
    bits, unit = bits_per_unit(figures["val_loss"], ids, dataset.tokenizer)
    record[f"bits_per_{unit}"] = bits
    record.update(next_token_accuracy(run.model, ids, batch_size=_EVAL_BATCH, context_len=run.model.config.context_len))
    if sample_tokens:
        sample = sample_diversity(run.model, dataset.tokenizer, ids[:1], max_new_tokens=sample_tokens, seed=seed)
        record.update({k: v for k, v in sample.items() if k != "text"})
    return record


def run_configuration(config: QELMConfig, settings: TrainOverrides, dataset: TextDataset, seeds: list[int],
                      folder: Path, *, known: dict[str, dict[str, dict]] | None = None, sample_tokens: int = 0,
                      on_seed: Callable[[int], None] | None = None, spec: BackendSpec | None = None
                      ) -> dict[str, Any]:
    """Train ``config`` at each of ``seeds`` with its twin and matched model (those ``known`` already holds,
    ``{key: {str(seed): figures}}``, are copied, not retrained); write each seed's run folder under ``folder``.

    Returns ``{role: {"key", "config", "seeds": {str(seed): figures}, "trained": [seeds trained here]}}`` for
    the roles qelm, twin and matched (their circuits run as ``spec`` says: default exact on qelm.fused), and ``ratio_to_matched``: the QELM's validation perplexity over the
    matched model's at each seed. Raises what training raises (a non-finite loss is a FloatingPointError;
    a config no classical model can match a ValueError)."""
    known = known or {}
    configs = {"qelm": config, "twin": config.classical(), "matched": matched_config(config)}
    out: dict[str, Any] = {role: {"key": model_key(cfg, settings, spec), "config": cfg.to_dict(), "seeds": {}, "trained": []}
                           for role, cfg in configs.items()}
    for seed in seeds:
        s = str(seed)
        reuse = {role: known.get(out[role]["key"], {}).get(s) for role in ("twin", "matched")}
        result = train(config, dataset, settings.replace(seed=seed, twin=reuse["twin"] is None,
                                                         matched=reuse["matched"] is None),
                       out=folder / f"seed-{seed}", overwrite=True, backend=spec.name if spec else None,
                       backend_options=spec.kwargs() if spec else None)
        for role, run in result.runs().items():
            out[role]["seeds"][s] = measure_model(run, dataset, seed=seed, sample_tokens=sample_tokens)
            out[role]["trained"].append(seed)
        for role, figures in reuse.items():
            if figures is not None:
                out[role]["seeds"][s] = figures
        del result
        if on_seed is not None:
            on_seed(seed)
    ratios = {s: out["qelm"]["seeds"][s]["val_perplexity"] / out["matched"]["seeds"][s]["val_perplexity"]
              for s in out["qelm"]["seeds"]}
    out["ratio_to_matched"] = ratios
    out["settings"] = {k: v for k, v in settings.to_dict().items() if k not in ("seed", "twin", "matched")}
    return out


def objective_value(record: dict[str, Any]) -> float:
    """What the sampler minimises: the mean over seeds of the QELM's validation perplexity over its
    parameter-matched classical model's (below 1: the circuits beat classical parameters at equal count)."""
    value = statistics.fmean(record["ratio_to_matched"].values())
    if not math.isfinite(value):
        raise FloatingPointError(f"the perplexity ratio to the matched model is {value}")
    return value
