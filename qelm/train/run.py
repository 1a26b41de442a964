"""The training run: train a QELM and two classical baselines on the same batches, measure all three on
the same validation text (:mod:`qelm.evaluate`), and write the run folder.

:func:`train` runs the whole job. A run folder ``OUT`` holds::

    OUT/twin/    checkpoint of the classical twin (ClassicalLM at the same config) + metrics.jsonl
    OUT/matched/ checkpoint of the parameter-matched classical model + metrics.jsonl
    OUT/qelm/    checkpoint of the QELM + metrics.jsonl (the last step's)
    OUT/*/best/  the checkpoint of each model with the lowest validation loss so far
    OUT/summary.json    every figure of the run, with the method that measured it (:mod:`.report`)
    OUT/loss_curve.png  training loss of every model, validation points, the unigram baseline
    OUT/.lock           held while a process trains in OUT: a second one is refused, told who holds it

A new run goes only into an empty folder, a new one, or an earlier run's (with ``overwrite``): a folder
holding anything else is refused, so no file of the user's is ever replaced.

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
A run killed at any moment (even inside a save) resumes from each model's newest complete checkpoint
(:mod:`qelm.checkpoint`); its ``metrics.jsonl`` is checked against the hash the checkpoint recorded of
it and cut back to the checkpoint's step.

Data parallel: when ``torch.distributed`` is initialised (``torchrun``; :mod:`qelm.distributed`), every
rank draws the same global batch and keeps its slice, ``DistributedDataParallel`` averages gradients, and
only rank 0 evaluates and writes. The losses equal a one-process run with the same global batch, up to
floating-point summation order.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

from ..backends import BackendSpec
from ..config import QELMConfig, check_fits, config_differences, split_runtime
from ..data import TextDataset
from ..distributed import rank_and_world
from ..errors import CheckpointError, ConfigError, DataError
from ..evaluate import unigram_baseline
from ..files import FolderLock, atomic_write, remove_stray_temps
from ..folders import check_folder, refuse_links
from ..memory import memory_bytes
from ..metrics import METRICS
from ..model import QELM, ClassicalLM
from ..model_contents import read_training_state
from ..model_files import (BEST, FILES, MANIFEST, TOKENIZER, TRAINING_STATE, checkpoint_files, ensure_writable_dir,
                           has_checkpoint, recover_checkpoint)
from ..plot import plot_curves
from ..tokenizer import load_tokenizer
from .layout import LOCK, LOSS_CURVE, MODEL_NAMES, SUMMARY, run_layout  # MODEL_NAMES: the training order
from .report import LABELS, summary
from .results import Callback, TrainResult
from .settings import MATCH_TOLERANCE, TrainOverrides, TrainSettings, load_run_config, resolve_settings
from .steps import train_one

__all__ = ["train", "matched_config", "SUMMARY", "LOSS_CURVE", "LOCK", "MODEL_NAMES"]



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
            raise ConfigError(f"{e}: train without the parameter-matched baseline (matched=False, --no-matched) or "
                             f"use a larger model") from None


# --- the run -----------------------------------------------------------------------------------------------
def train(config: QELMConfig | str | os.PathLike | None = None, data: str | os.PathLike | TextDataset | None = None,
          settings: TrainOverrides | None = None, *, out: str | os.PathLike, resume: bool = False,
          overwrite: bool = False, backend: str | None = None, backend_options: dict[str, Any] | None = None,
          device: str = "cpu", callback: Callback | None = None, config_changes: dict[str, Any] | None = None,
          **changes: Any) -> TrainResult:
    """Train a QELM (and, unless ``twin=False``, its classical twin; unless ``matched=False``, the
    parameter-matched classical model) on ``data`` and write the run folder ``out`` (layout in the module
    docstring). Returns a :class:`TrainResult` with every measured figure.

    ``config``: a :class:`QELMConfig`, a TOML file (its ``[train]`` table gives defaults for the settings)
    or ``None`` for the tiny demo config; ``vocab_size`` is always set from the tokenizer.
    ``data``: a UTF-8 text file or a :class:`TextDataset`; on resume it may be omitted (the run's file is
    reread and checked against the hash it was trained on). ``settings``: a :class:`TrainOverrides`; any
    of its fields may also be given as a keyword (``steps=100``), which takes precedence. Settings left
    ``None`` come from the resumed run, the config file or :data:`TRAIN_DEFAULTS`; ``steps`` is the total.
    ``config_changes`` (``{"n_qubits": 6}``) changes fields of the model config (on resume they must
    match the run's). ``backend`` (+ ``backend_options``, ``shots`` among them) runs the circuits elsewhere
    than the config file's ``[runtime]`` (or, on resume, the run's; default: exact on qelm.fused) says.
    ``callback(event, model_name, info)`` is called on rank 0 at "start", each logged "step" (``info`` is
    the metrics record) and "end" of each model (a progress bar hooks in here; this function never prints).

    Args:
        config: a :class:`QELMConfig`, a TOML file, or None for the tiny demo config.
        data: a UTF-8 text file or a :class:`TextDataset` (optional on resume).
        settings: the :class:`TrainOverrides` given; keywords of the same names take precedence.
        out: the run folder (new or empty, or this run's own with ``resume`` or ``overwrite``).
        resume: continue the run in ``out`` from each model's newest complete checkpoint.
        overwrite: replace an earlier run in ``out``.
        backend: run the circuits on this backend instead of the config's.
        backend_options: that backend's options.
        device: ``"cpu"``, ``"cuda"`` or ``"cuda:N"``.
        callback: called with progress events (above).
        config_changes: changes to the model config's fields.
        **changes: fields of :class:`TrainOverrides` (``steps=100``, ``twin=False``, ...).

    Returns:
        TrainResult: every model's run and measured figures, the verdict, and the run folder. See
        :class:`TrainResult` for an example.
    """
    rank, world = rank_and_world()
    out, where = Path(out), _check_device(device)
    given = _given(settings, changes)
    model_config, file_spec, file_settings = (config, None, {}) if isinstance(config, QELMConfig) or \
        (config is None and resume) else load_run_config(config)
    lock = _on_rank0(lambda: _lock_for_resume(out), rank, world) if resume else None
    try:
        resumed = _Resumed.load(out) if resume else None
        if resumed is not None and model_config is None:
            model_config = resumed.config
        if config_changes:
            model_config = _changed(model_config or QELMConfig(), config_changes)
        data = _corpus(data, resumed)
        resolved = resolve_settings(given, file_settings, resumed.run if resumed else None)
        dataset = _dataset(data, resolved, resumed)
        config = _run_config(model_config or QELMConfig(), dataset, resumed)
        spec = (file_spec or (resumed.spec if resumed else BackendSpec())).replaced(backend, backend_options or {}).check()
        configs = _model_configs(config, spec, dataset, resolved, world, where)
        if not resume:
            lock = _on_rank0(lambda: _prepare_folder(out, overwrite=overwrite), rank, world)
        run_record = {**resolved.to_dict(), "data": str(Path(dataset.source).resolve()) if dataset.source != "<text>" else None,
                      "data_sha256": dataset.sha256, "config": config.to_dict(), "runtime": spec.to_table()}
        runs = {name: train_one(name, configs[name], spec, dataset, resolved, run_record, out / name, resume=resume,
                                device=where, callback=callback, rank=rank, world=world)
                for name in MODEL_NAMES if name == "qelm" or getattr(resolved, name)}
        unigram = unigram_baseline(dataset.train_ids, dataset.val_ids, dataset.vocab_size)
        result = TrainResult(out=out, qelm=runs["qelm"], twin=runs.get("twin"), matched=runs.get("matched"),
                             unigram=unigram, dataset=dataset)
        if rank == 0:
            _write_report(result, config, spec, resolved, world, where)
        if world > 1:
            dist.barrier()  # no rank returns before rank 0 has written the run folder
        return result
    finally:
        if lock is not None:
            lock.release()


def _on_rank0(fn, rank: int, world: int):
    """``fn()`` on rank 0 only (the one that writes the run folder); with several processes every rank
    waits for it and raises if it failed, so an error stops all of them rather than hanging some."""
    result, error = None, None
    if rank == 0:
        try:
            result = fn()
        except Exception as e:  # handed to the other ranks, then raised here
            error = e
    if world > 1:
        message = [f"{type(error).__name__}: {error}" if error is not None else None]
        dist.broadcast_object_list(message, src=0)
        if rank != 0 and message[0] is not None:
            raise RuntimeError(f"rank 0 stopped: {message[0]}")
    if error is not None:
        raise error
    return result


def _given(settings: TrainOverrides | None, changes: dict[str, Any]) -> TrainOverrides:
    """``settings`` with the keyword settings of :func:`train` applied (``None`` ones leave a field alone)."""
    names = {f.name for f in dataclasses.fields(TrainOverrides)}
    for name in changes:
        if name not in names:
            raise TypeError(f"train() got an unexpected keyword argument {name!r}; settings are "
                            f"{', '.join(sorted(names))}")
    return (settings or TrainOverrides()).replace(**{k: v for k, v in changes.items() if v is not None})


def _changed(config: QELMConfig, changes: dict[str, Any]) -> QELMConfig:
    """``config`` with ``changes``; an unknown field is a ``ValueError`` naming it and the valid ones."""
    names = {f.name for f in dataclasses.fields(QELMConfig)}
    unknown = sorted(set(changes) - names)
    if unknown:
        raise ConfigError(f"unknown config field(s) {', '.join(unknown)}: valid fields are {', '.join(sorted(names))}")
    return config.replace(**changes)


def _check_device(device: str | torch.device) -> torch.device:
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        raise ConfigError(f"device {device!r} is invalid: use cpu or cuda") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device {device!r} is not available here (torch sees no CUDA GPU): use cpu")
    if dev.type not in ("cpu", "cuda"):
        raise ConfigError(f"device {device!r} is not supported: use cpu or cuda")
    return dev


@dataclass
class _Resumed:
    """What a run folder says about the run to resume: its saved settings, the checkpoint that holds them
    and the QELM's config and backend."""

    run: dict[str, Any]
    folder: Path
    config: QELMConfig
    spec: BackendSpec

    @classmethod
    def load(cls, out: Path) -> _Resumed:
        for name in MODEL_NAMES:
            state = read_training_state(out / name) if has_checkpoint(out / name) else None
            if state is not None:
                break
        else:
            raise FileNotFoundError(f"nothing to resume in {str(out)!r}: no checkpoint with a training state there "
                                    f"(the run saved none yet, or this is not a run folder); train without resume")
        if not isinstance(state.get("run"), dict):
            raise CheckpointError(f"checkpoint {str(out / name)!r} is corrupt: {TRAINING_STATE} holds no run settings")
        try:
            # the QELM's (the twin's is all classical); a run of an older qelm keeps its backend among the fields
            fields, spec = split_runtime(state["run"]["config"], state["run"].get("runtime"))
            config = QELMConfig.from_dict(fields)
        except ValueError as e:  # a whole config this process cannot build (an unregistered circuit, say)
            if not isinstance(state["run"].get("config"), dict):
                raise CheckpointError(f"checkpoint {str(out / name)!r} is corrupt: its run settings hold no config"
                                      ) from None
            raise CheckpointError(f"cannot resume {str(out)!r} here: its model config is not valid in this process "
                                  f"({e})") from None
        except (KeyError, TypeError) as e:
            raise CheckpointError(f"checkpoint {str(out / name)!r} is corrupt: its run settings hold no valid config "
                             f"({e})") from None
        return cls(run=state["run"], folder=out / name, config=config, spec=spec)


def _corpus(data: str | os.PathLike | TextDataset | None, resumed: _Resumed | None):
    """The corpus to train on: ``data``, or on resume the file the run was trained on."""
    if resumed is None:
        if data is None:
            raise DataError("no corpus given: pass data (--data) with a UTF-8 text file")
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
        tok = load_tokenizer(checkpoint_files(resumed.folder)[TOKENIZER]) if resumed is not None else settings.tokenizer
        dataset = TextDataset.from_file(data, tokenizer=tok, vocab_size=settings.vocab_size if isinstance(tok, str) else None)
    if resumed is not None and dataset.sha256 != resumed.run.get("data_sha256"):
        raise CheckpointError(f"cannot resume on a different corpus: {dataset.source} (sha256 {dataset.sha256[:12]}...) is "
                         f"not the text the run was trained on ({resumed.run.get('data')}, sha256 "
                         f"{str(resumed.run.get('data_sha256'))[:12]}...)")
    return dataset


def _run_config(model_config: QELMConfig, dataset: TextDataset, resumed: _Resumed | None) -> QELMConfig:
    """The QELM's config: the tokenizer's vocabulary; on resume the saved architecture."""
    config = model_config.replace(vocab_size=dataset.vocab_size)
    if resumed is not None:
        differences = config_differences(resumed.config, config)
        if differences:
            flags = ", ".join(dict.fromkeys("--" + d.split(":")[0].strip().replace("_", "-") for d in differences))
            raise CheckpointError(f"cannot resume {str(resumed.folder.parent)!r} with a different model config "
                                  f"({'; '.join(differences)}; saved vs given): a resumed run keeps its own model: drop "
                                  f"what changes it ({flags}, or the --config or --set that sets it), or start a new run "
                                  f"in another --out")
    return config


def _model_configs(config: QELMConfig, spec: BackendSpec, dataset: TextDataset, settings: TrainSettings, world: int,
                   device: torch.device) -> dict[str, QELMConfig]:
    """The config of each model of the run. Everything that can fail does so here, before any training."""
    dataset.check_context(config.context_len)
    if config.uses_circuits:  # an unavailable backend fails now, not after the twin has trained
        spec.build()
    configs = {"twin": config.classical(), "qelm": config}
    if settings.matched:  # before any training: a config no classical model can match fails now
        configs["matched"] = matched_config(config)
    if settings.batch_size % world:
        raise ConfigError(f"batch_size={settings.batch_size} does not split over {world} processes: use a multiple "
                         f"of {world}")
    _check_memory(config, settings.batch_size, world, device)
    return configs


def _check_memory(config: QELMConfig, batch_size: int, world: int, device: torch.device) -> None:
    """Refuse a batch whose circuits cannot fit in memory, saying which batch would (the batch each process
    will really run, on its device)."""
    check_fits(config, 1, memory_bytes(device))  # not even one sequence fits: the model's fields are the fix
    per_process = batch_size // world
    circuits, wires, need = config.circuit_memory(per_process)
    have = memory_bytes(device)
    if need <= have:
        return
    fits = have // config.circuit_memory(1)[2] * world  # the global batch whose share fits each process
    where = f"{device.type.upper()} {'GPU' if device.type == 'cuda' else 'memory'}"
    share = f" ({per_process} per process)" if world > 1 else ""
    advice = (f"use batch_size={fits} or less" if fits >= world else "not even one sequence fits: use fewer qubits or "
              "a shorter context_len")
    raise ConfigError(f"batch_size={batch_size}{share} does not fit: {circuits} circuits of {wires} qubits need about "
                     f"{need / 2**30:.1f} GiB of state vectors, more than the {have / 2**30:.1f} GiB of {where} here; "
                     f"{advice}")


def _lock_for_resume(out: Path) -> FolderLock:
    """Lock the run folder to resume, and bring each model's checkpoint to its newest complete one."""
    if not out.is_dir():
        raise FileNotFoundError(f"nothing to resume in {str(out)!r}: the folder does not exist; train without resume")
    ensure_writable_dir(out)
    refuse_links(out, what="run folder")
    lock = FolderLock(out, LOCK, what="run folder").acquire()
    try:
        _tidy(out)
    except BaseException:
        lock.release()
        raise
    return lock


def _tidy(out: Path) -> None:
    """Finish or discard a save a killed process left, and remove its temporary files (holding the lock)."""
    remove_stray_temps(out, (SUMMARY, LOSS_CURVE))
    for name in MODEL_NAMES:
        if (out / name).is_dir():
            recover_checkpoint(out / name)
            if (out / name / BEST).is_dir():
                recover_checkpoint(out / name / BEST)
            remove_stray_temps(out / name, (METRICS,))


def _prepare_folder(out: Path, *, overwrite: bool) -> FolderLock:
    """Lock the folder of a new run and clear the files of an earlier run there, so none is mistaken for
    this one's. A folder holding anything that is not a qelm run is refused: nothing of the user's is
    overwritten."""
    check_folder(out, run_layout, owner="a qelm run", hint=" with --out")  # before the lock file is made
    ensure_writable_dir(out)
    lock = FolderLock(out, LOCK, what="run folder").acquire()
    try:
        check_folder(out, run_layout, owner="a qelm run", hint=" with --out")  # nothing changed while locking
        if not overwrite and ((out / SUMMARY).exists() or any(has_checkpoint(out / n) for n in MODEL_NAMES)):
            raise CheckpointError(f"output folder {str(out)!r} already holds a training run: resume it (--resume), replace "
                             f"it (--overwrite), or choose another --out")
        _tidy(out)
        for path in [out / SUMMARY, out / LOSS_CURVE] + [out / n / f for n in MODEL_NAMES for f in FILES + (MANIFEST, METRICS)]:
            if path.is_file():
                path.unlink()
        for name in MODEL_NAMES:
            if (out / name / BEST).is_dir():  # the earlier run's best: never this run's
                shutil.rmtree(out / name / BEST)
    except BaseException:
        lock.release()
        raise
    return lock


def _write_report(result: TrainResult, config: QELMConfig, spec: BackendSpec, settings: TrainSettings, world: int,
                  device) -> None:
    """``summary.json`` and ``loss_curve.png`` of a finished run (rank 0)."""
    runs = result.runs()
    models = {name: run.figures() for name, run in runs.items()}
    result.summary = summary(models, result.unigram, result.dataset, config, spec, settings, world, device)
    atomic_write(result.out / SUMMARY, json.dumps(result.summary, indent=2) + "\n")
    baselines = " and ".join(LABELS[n] for n in list(runs)[1:])
    ds = result.dataset
    plot_curves({LABELS[n]: run.history for n, run in runs.items()}, result.out / LOSS_CURVE,
                unigram_loss=result.unigram["loss"],
                title=f"QELM{' vs ' + baselines if baselines else ''}: {ds.vocab_size}-token {ds.tokenizer.kind} "
                      f"corpus, batch {settings.batch_size} x {config.context_len} tokens")
