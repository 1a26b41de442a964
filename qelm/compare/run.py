""":func:`compare`: build a QELM and its classical twins from a config (or load trained checkpoints),
measure them side by side (:mod:`.measure`) and add the verdicts (:mod:`.report`).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

from ..backends import BackendSpec
from ..checkpoint import load_checkpoint
from ..config import QELMConfig
from ..data import read_corpus
from ..errors import ConfigError
from ..evaluate import evaluate
from ..model import QELM, ClassicalLM
from .measure import measure_models, model_kind
from .report import claim_verdict, verdict
from .results import PUBLISHED_SETTING, Comparison

__all__ = ["compare", "published_config", "Progress"]

Progress = Callable[[str, int, int], None]  # progress(what starts now, steps done, steps in all)


def _setting_text() -> str:
    return ", ".join(f"{k}={v}" for k, v in PUBLISHED_SETTING.items())


def published_config(**overrides: Any) -> QELMConfig:
    """The setting of the published claim (``PUBLISHED_SETTING``), other fields at their defaults unless
    overridden."""
    return QELMConfig(**{**PUBLISHED_SETTING, **overrides})


def compare(config: QELMConfig | None = None, *, published: bool = False, checkpoints: Sequence[str | os.PathLike] = (),
            data: str | os.PathLike | None = None, batch_size: int = 2, seed: int = 0, eps: float = 0.01,
            backend: str | None = None, keep_dir: str | os.PathLike | None = None, eval_batch_size: int = 16,
            progress: Progress | None = None, **backend_options: Any) -> Comparison:
    """Measure a QELM against its classical twins, or a set of checkpoints against each other.

    * ``config`` (default: ``QELMConfig()``) or ``published=True`` (``published_config()``, or a ``config``
      that keeps the ``PUBLISHED_SETTING`` fields; adds the check of the published claim): builds
      ``QELM(config)``, its twin ``ClassicalLM(config)`` and ``ClassicalLM.matched_to(qelm)`` (seeded with
      ``seed``); ratios are to the twin.
    * ``checkpoints``: checkpoint folders (a training run folder with ``qelm/`` and ``twin/`` counts as
      both), loaded with ``qelm.checkpoint.load_checkpoint``; with ``data`` (a text file), each model's
      validation perplexity on it through ``qelm.evaluate``. Ratios are to the first classical one.

    ``backend`` (+ options): run the circuits there while measuring. ``progress(label, done, total)`` is called as each model's measurement (and
    perplexity) starts and when all are done. Returns a :class:`Comparison`."""
    if checkpoints:
        if config is not None or published:
            raise ConfigError("give either a config (or published=True) or checkpoints, not both: checkpoints carry "
                             "their own config")
        return _compare_checkpoints(checkpoints, data=data, batch_size=batch_size, seed=seed, eps=eps,
                                    backend=backend, keep_dir=keep_dir, eval_batch_size=eval_batch_size,
                                    progress=progress, **backend_options)
    if data is not None:
        raise ConfigError("data needs checkpoints: perplexity of untrained models measures nothing; "
                         "pass trained checkpoint folders (qelm train writes OUT/qelm and OUT/twin)")
    config = config if config is not None else (published_config() if published else QELMConfig())
    if not isinstance(config, QELMConfig):
        raise ConfigError(f"config={config!r} is invalid: pass a qelm.QELMConfig")
    if published:
        for name, value in PUBLISHED_SETTING.items():
            if getattr(config, name) != value:
                raise ConfigError(f"published=True is the setting {_setting_text()}, but the config has "
                                 f"{name}={getattr(config, name)!r}: drop published, or keep {name}={value}")
    comp = _compare_config(config, batch_size=batch_size, seed=seed, eps=eps, backend=backend, keep_dir=keep_dir,
                           setting="published" if published else "config", progress=progress, **backend_options)
    if published:
        comp.claim_verdict = claim_verdict(comp)
    return comp


def _compare_config(config: QELMConfig, *, batch_size: int, seed: int, eps: float, backend: str | None,
                    keep_dir: str | os.PathLike | None, setting: str, progress: Progress | None = None,
                    **backend_options: Any) -> Comparison:
    """``QELM(config)``, its twin and its parameter-matched classical model, seeded, measured."""
    with torch.random.fork_rng():  # seeded weights without disturbing the caller's random state
        torch.manual_seed(seed)
        qelm = QELM(config, BackendSpec().replaced(backend, backend_options))
        twin = ClassicalLM(config)
        matched = ClassicalLM.matched_to(qelm)
    models = {"qelm": qelm, "twin": twin, "matched": matched}
    return measure_models(models, reference="twin", batch_size=batch_size, seed=seed, eps=eps, keep_dir=keep_dir,
                          setting=setting, progress=progress)


def _expand_checkpoints(paths: Sequence[str | os.PathLike]) -> list[Path]:
    out = []
    for p in map(Path, paths):
        if not p.exists():
            raise FileNotFoundError(f"checkpoint folder {str(p)!r} does not exist; pass a folder written by qelm train")
        if not p.is_dir():
            raise NotADirectoryError(f"checkpoint {str(p)!r} is a file; pass the checkpoint folder that holds it")
        subs = [p / s for s in ("qelm", "twin", "matched") if (p / s / "config.toml").is_file()]
        out.extend(subs if not (p / "config.toml").is_file() and subs else [p])
    return out


def _compare_checkpoints(paths, *, data, batch_size, seed, eps, backend, keep_dir, eval_batch_size, progress=None,
                         **backend_options) -> Comparison:
    folders = _expand_checkpoints(paths)
    text = None
    if data is not None:
        data = Path(data)
        if not data.exists() and not data.is_symlink():
            raise FileNotFoundError(f"data file {str(data)!r} does not exist; pass a text file to measure perplexity on")
        text = read_corpus(data)  # a folder, device, binary or non-UTF-8 file: a message naming it
    loaded, names = [], []
    for folder in folders:
        ckpt = load_checkpoint(folder, backend=backend, **backend_options) if backend is not None \
            else load_checkpoint(folder, **backend_options)
        name = folder.name if folder.name not in names else f"{folder.parent.name}/{folder.name}"
        names.append(name)
        loaded.append(ckpt)
    models = {n: c.model for n, c in zip(names, loaded)}
    reference = next((n for n in names if model_kind(models[n]) == "classical"), None)
    steps = len(models) * (2 if text is not None else 1)
    comp = measure_models(models, reference=reference, batch_size=batch_size, seed=seed, eps=eps, keep_dir=keep_dir,
                          tokenizers={n: c.tokenizer for n, c in zip(names, loaded)}, setting="checkpoints",
                          progress=None if progress is None else lambda label, done, _: progress(label, done, steps))
    if text is not None:
        for i, (report, ckpt) in enumerate(zip(comp.models, loaded)):
            if progress is not None:
                progress(f"perplexity of {report.name}", len(models) + i, steps)
            ids = torch.tensor(ckpt.tokenizer.encode(text), dtype=torch.long)
            if ids.numel() < 2:
                raise ConfigError(f"data file {str(data)!r} gives {ids.numel()} tokens for {report.name!r}; "
                                 f"perplexity needs at least 2")
            result = evaluate(ckpt.model, ids, batch_size=eval_batch_size, context_len=ckpt.model.config.context_len)
            report.perplexity = {k: float(v) for k, v in result.items()}
        if progress is not None:
            progress("done", steps, steps)
        comp.verdict = verdict(comp)
    return comp
