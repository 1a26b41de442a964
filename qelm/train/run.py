"""The training run: train a QELM and two classical baselines on the same batches, measure all three on
the same validation text (:mod:`qelm.evaluate`), and write the run folder.

:func:`train` runs the whole job. A run folder ``OUT`` holds::

    OUT/twin/    checkpoint of the classical twin (ClassicalLM at the same config) + metrics.jsonl
    OUT/matched/ checkpoint of the parameter-matched classical model + metrics.jsonl
    OUT/qelm/    checkpoint of the QELM + metrics.jsonl
    OUT/summary.json    every figure of the run, with the method that measured it (:mod:`.report`)
    OUT/loss_curve.png  training loss of every model, validation points, the unigram baseline

The two baselines answer different questions. The twin (``ClassicalLM(config)``: the same config with
every slot classical) has roughly twice the QELM's parameters, so "the twin won" may only mean "bigger
won". The matched model (``ClassicalLM.matched_to(qelm)``: the same vocab, context, heads and layers
with ``d_model`` and ``d_hidden`` shrunk to the QELM's parameter count, within 2%) asks whether the
circuits are worth their parameters. Its checkpoint records its own (shrunk) config.

Every model starts from ``seed`` and draws the same batches (same sampler seed), with the same steps and
learning rate, so the comparison is at equal data and steps. The classical models train first (twin,
then matched, then the QELM): they are quick, and their peak memory is then not inflated by the QELM's
(peak RSS is per process and only grows).

Exact resume: a checkpoint's ``training_state.pt`` holds the optimizer, the step, the torch RNG state and
the data sampler's generator state, so ``train(..., resume=True)`` draws exactly the batches an
uninterrupted run would and logs the same losses. ``steps`` is the total, not the number still to run.

Data parallel: when ``torch.distributed`` is initialised (``torchrun``; :mod:`qelm.distributed`), every
rank draws the same global batch and keeps its slice, ``DistributedDataParallel`` averages gradients, and
only rank 0 evaluates and writes. The losses equal a one-process run with the same global batch, up to
floating-point summation order.
"""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

from ..backends import get_backend
from ..checkpoint import CONFIG, TOKENIZER, TRAINING_STATE, WEIGHTS, ensure_writable_dir
from ..config import QELMConfig, config_differences, with_backend
from ..data import TextDataset
from ..distributed import rank_and_world
from ..evaluate import unigram_baseline
from ..files import atomic_write
from ..metrics import METRICS
from ..model import QELM, ClassicalLM
from ..plot import plot_curves
from ..tokenizer import load_tokenizer
from .report import LABELS, summary
from .results import Callback, TrainResult
from .settings import MATCH_TOLERANCE, TrainSettings, load_run_config, resolve_settings
from .steps import train_one

__all__ = ["train", "matched_config", "SUMMARY", "LOSS_CURVE", "MODEL_NAMES"]

SUMMARY = "summary.json"
LOSS_CURVE = "loss_curve.png"
MODEL_NAMES = ("twin", "matched", "qelm")  # training order (see the module docstring)


def matched_config(config: QELMConfig) -> QELMConfig:
    """The config of the parameter-matched classical model for a QELM of ``config``: every slot
    classical, the same vocab, context, heads and layers, ``d_model`` and ``d_hidden`` shrunk so the
    parameter count is within 2% of the QELM's (:meth:`ClassicalLM.matched_to`). Deterministic: the
    same config always gives the same matched config, so a resumed run rebuilds the same model."""
    with torch.random.fork_rng(devices=[]):  # building the QELM to count its parameters draws random weights
        qelm = QELM(config)
        try:
            return ClassicalLM.matched_to(qelm, tolerance=MATCH_TOLERANCE).config
        except ValueError as e:
            raise ValueError(f"{e}: train without the parameter-matched baseline (matched=False, --no-matched) or "
                             f"use a larger model") from None


# --- the run -----------------------------------------------------------------------------------------------
def train(config: QELMConfig | str | os.PathLike | None = None, data: str | os.PathLike | TextDataset | None = None,
          settings: TrainSettings | None = None, *, out: str | os.PathLike, resume: bool = False,
          overwrite: bool = False, backend: str | None = None, backend_options: dict[str, Any] | None = None,
          device: str = "cpu", callback: Callback | None = None, **changes: Any) -> TrainResult:
    """Train a QELM (and, unless ``twin=False``, its classical twin; unless ``matched=False``, the
    parameter-matched classical model) on ``data`` and write the run folder ``out`` (layout in the module
    docstring). Returns a :class:`TrainResult` with every measured figure.

    ``config``: a :class:`QELMConfig`, a TOML file (its ``[train]`` table gives defaults for the settings)
    or ``None`` for the tiny demo config; ``vocab_size`` is always set from the tokenizer.
    ``data``: a UTF-8 text file or a :class:`TextDataset`; on resume it may be omitted (the run's file is
    reread and checked against the hash it was trained on). ``settings``: a :class:`TrainSettings`; any
    of its fields may also be given as a keyword (``steps=100``), which takes precedence. Settings left
    ``None`` come from the resumed run, the config file or :data:`TRAIN_DEFAULTS`; ``steps`` is the total.
    ``backend`` (+ ``backend_options``) runs the circuits on another simulator than the config names.
    ``callback(event, model_name, info)`` is called on rank 0 at "start", each logged "step" (``info`` is
    the metrics record) and "end" of each model (a progress bar hooks in here; this function never prints).
    """
    rank, world = rank_and_world()
    out, device = Path(out), _check_device(device)
    given = _given(settings, changes)
    model_config, file_settings = (config, {}) if isinstance(config, QELMConfig) or (config is None and resume) \
        else load_run_config(config)
    resumed = _Resumed.load(out) if resume else None
    if resumed is not None and model_config is None:
        model_config = resumed.config
    data = _corpus(data, resumed)
    settings = resolve_settings(given, file_settings, resumed.run if resumed else None)
    dataset = _dataset(data, settings, resumed)
    config = _run_config(model_config or QELMConfig(), dataset, backend, backend_options, resumed)
    configs = _model_configs(config, dataset, settings, world)
    _prepare_folder(out, resume=resume, overwrite=overwrite, rank=rank, world=world)
    settings = settings.scheduled()
    run_record = {**settings.to_dict(), "data": str(Path(dataset.source).resolve()) if dataset.source != "<text>" else None,
                  "data_sha256": dataset.sha256, "config": config.to_dict()}
    runs = {name: train_one(name, configs[name], dataset, settings, run_record, out / name, resume=resume,
                            device=device, callback=callback, rank=rank, world=world)
            for name in MODEL_NAMES if name == "qelm" or getattr(settings, name)}
    unigram = unigram_baseline(dataset.train_ids, dataset.val_ids, dataset.vocab_size)
    result = TrainResult(out=out, qelm=runs["qelm"], twin=runs.get("twin"), matched=runs.get("matched"),
                         unigram=unigram, dataset=dataset)
    if rank == 0:
        _write_report(result, config, settings, world, device)
    if world > 1:
        dist.barrier()  # no rank returns before rank 0 has written the run folder
    return result


def _given(settings: TrainSettings | None, changes: dict[str, Any]) -> TrainSettings:
    """``settings`` with the keyword settings of :func:`train` applied (``None`` ones leave a field alone)."""
    names = {f.name for f in dataclasses.fields(TrainSettings)}
    for name in changes:
        if name not in names:
            raise TypeError(f"train() got an unexpected keyword argument {name!r}; settings are "
                            f"{', '.join(sorted(names))}")
    return (settings or TrainSettings()).replace(**{k: v for k, v in changes.items() if v is not None})


def _check_device(device: str | torch.device) -> torch.device:
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        raise ValueError(f"device {device!r} is invalid: use cpu or cuda") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {device!r} is not available here (torch sees no CUDA GPU): use cpu")
    if dev.type not in ("cpu", "cuda"):
        raise ValueError(f"device {device!r} is not supported: use cpu or cuda")
    return dev


@dataclass
class _Resumed:
    """What a run folder says about the run to resume: its saved settings, the checkpoint that holds them
    and the QELM's config."""

    run: dict[str, Any]
    folder: Path
    config: QELMConfig

    @classmethod
    def load(cls, out: Path) -> "_Resumed":
        for name in MODEL_NAMES:
            path = out / name / TRAINING_STATE
            if path.is_file():
                break
        else:
            raise FileNotFoundError(f"nothing to resume in {str(out)!r}: no checkpoint with a training state there "
                                    f"(the run saved none yet, or this is not a run folder); train without resume")
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as e:  # many types: zip, pickle, runtime
            raise ValueError(f"checkpoint {str(out / name)!r} is corrupt: {TRAINING_STATE} cannot be read "
                             f"({type(e).__name__})") from None
        if not isinstance(state, dict) or not isinstance(state.get("run"), dict):
            raise ValueError(f"checkpoint {str(out / name)!r} is corrupt: {TRAINING_STATE} holds no run settings")
        try:
            config = QELMConfig.from_dict(state["run"]["config"])  # the QELM's (the twin's is all classical)
        except (KeyError, TypeError, ValueError) as e:
            raise ValueError(f"checkpoint {str(out / name)!r} is corrupt: its run settings hold no valid config "
                             f"({e})") from None
        return cls(run=state["run"], folder=out / name, config=config)


def _corpus(data: str | os.PathLike | TextDataset | None, resumed: _Resumed | None):
    """The corpus to train on: ``data``, or on resume the file the run was trained on."""
    if resumed is None:
        if data is None:
            raise ValueError("no corpus given: pass data (--data) with a UTF-8 text file")
        return data
    if data is None:
        data = resumed.run.get("data")
        if not data or not Path(data).is_file():
            raise FileNotFoundError(f"the corpus this run was trained on ({data!r}) is gone: pass the same text with --data")
    return data


def _dataset(data: str | os.PathLike | TextDataset, settings: TrainSettings, resumed: _Resumed | None) -> TextDataset:
    """The tokenized corpus; on resume with the run's own tokenizer, and checked to be the same text."""
    if isinstance(data, TextDataset):
        dataset = data
    else:
        tok = load_tokenizer(resumed.folder / TOKENIZER) if resumed is not None else settings.tokenizer
        dataset = TextDataset.from_file(data, tokenizer=tok, vocab_size=settings.vocab_size if isinstance(tok, str) else None)
    if resumed is not None and dataset.sha256 != resumed.run.get("data_sha256"):
        raise ValueError(f"cannot resume on a different corpus: {dataset.source} (sha256 {dataset.sha256[:12]}...) is "
                         f"not the text the run was trained on ({resumed.run.get('data')}, sha256 "
                         f"{str(resumed.run.get('data_sha256'))[:12]}...)")
    return dataset


def _run_config(model_config: QELMConfig, dataset: TextDataset, backend: str | None,
                backend_options: dict[str, Any] | None, resumed: _Resumed | None) -> QELMConfig:
    """The QELM's config: the tokenizer's vocabulary, the backend asked for; on resume the saved architecture."""
    config = model_config.replace(vocab_size=dataset.vocab_size)
    if backend is not None or backend_options:
        config = with_backend(config, backend, backend_options or {})
    if resumed is not None:
        differences = config_differences(resumed.config, config)
        if differences:
            raise ValueError(f"cannot resume {str(resumed.folder.parent)!r} with a different model config "
                             f"({'; '.join(differences)}; saved vs given): drop --config to resume, or start a new "
                             f"run in another --out")
    return config


def _model_configs(config: QELMConfig, dataset: TextDataset, settings: TrainSettings, world: int) -> dict[str, QELMConfig]:
    """The config of each model of the run. Everything that can fail does so here, before any training."""
    dataset.check_context(config.context_len)
    if config.uses_circuits:  # an unavailable backend fails now, not after the twin has trained
        get_backend(config.backend, shots=config.shots, **config.backend_options)
    configs = {"twin": config.classical(), "qelm": config}
    if settings.matched:  # before any training: a config no classical model can match fails now
        configs["matched"] = matched_config(config)
    if settings.batch_size % world:
        raise ValueError(f"batch_size={settings.batch_size} does not split over {world} processes: use a multiple "
                         f"of {world}")
    return configs


def _prepare_folder(out: Path, *, resume: bool, overwrite: bool, rank: int, world: int) -> None:
    """Check the output folder (every rank, so that an error stops all of them rather than hanging some);
    a new run clears the files of an earlier one, so none is mistaken for this one's."""
    ensure_writable_dir(out)
    previous = [out / n / WEIGHTS for n in MODEL_NAMES] + [out / SUMMARY]
    if not resume and not overwrite and any(p.exists() for p in previous):
        raise ValueError(f"output folder {str(out)!r} already holds a training run: resume it (--resume), replace "
                         f"it (--overwrite), or choose another --out")
    if world > 1:
        dist.barrier()  # every rank has looked before rank 0 clears
    if rank == 0 and not resume:
        for path in [out / SUMMARY, out / LOSS_CURVE] + [out / n / f for n in MODEL_NAMES
                                                         for f in (WEIGHTS, CONFIG, TOKENIZER, TRAINING_STATE, METRICS)]:
            if path.is_file():
                path.unlink()


def _write_report(result: TrainResult, config: QELMConfig, settings: TrainSettings, world: int, device) -> None:
    """``summary.json`` and ``loss_curve.png`` of a finished run (rank 0)."""
    runs = result.runs()
    models = {name: run.figures() for name, run in runs.items()}
    result.summary = summary(models, result.unigram, result.dataset, config, settings, world, device)
    atomic_write(result.out / SUMMARY, json.dumps(result.summary, indent=2) + "\n")
    baselines = " and ".join(LABELS[n] for n in list(runs)[1:])
    ds = result.dataset
    plot_curves({LABELS[n]: run.history for n, run in runs.items()}, result.out / LOSS_CURVE,
                unigram_loss=result.unigram["loss"],
                title=f"QELM{' vs ' + baselines if baselines else ''}: {ds.vocab_size}-token {ds.tokenizer.kind} "
                      f"corpus, batch {settings.batch_size} x {config.context_len} tokens")
