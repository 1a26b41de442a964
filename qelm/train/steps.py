"""Training one model of a run: built fresh or restored from its checkpoint (optimizer, sampler and RNG
states), then step by step, with every rank drawing its slice of the same global batch; rank 0 logs to
``metrics.jsonl``, evaluates and saves checkpoints: the last one in the model's folder, and the best by
validation loss so far in its ``best/`` sub-folder (its manifest's ``info`` records the step and loss).

A step whose loss or gradient norm is not finite, or whose update overflows, stops the run there, naming
the step; the last checkpoint stays as it was, since weights that are not finite, or give a loss that is
not, are never saved.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import math
import resource
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

from ..checkpoint import load_checkpoint, save_checkpoint
from ..config import QELMConfig, config_differences
from ..data import BatchSampler, TextDataset
from ..distributed import local_device
from ..errors import CheckpointError, ConfigError
from ..evaluate import evaluate
from ..files import atomic_write
from ..memory import memory_bytes
from ..metrics import METRICS, read_metrics, write_metrics
from ..model import QELM, ClassicalLM
from ..model_files import BEST, TRAINING_STATE, checkpoint_files, ensure_writable_dir, has_checkpoint
from .report import LABELS
from .results import Callback, ModelRun
from .settings import TrainSettings

_log = logging.getLogger(__name__)  # what a run does, for `qelm -v` (the library never prints)

__all__ = ["train_one"]


@dataclass
class _Model:
    """One model of the run in training: where it starts and what it has logged so far."""

    name: str
    model: QELM
    optimizer: torch.optim.Optimizer
    sampler: BatchSampler
    folder: Path
    start: int  # optimizer steps already taken (0, or the resumed checkpoint's step)
    history: list[dict[str, Any]]  # rank 0: metrics records of the steps before ``start``
    metrics_bytes: int = 0  # rank 0: bytes of metrics.jsonl written so far, and their sha256 (kept running)
    metrics_sha256: Any = dataclasses.field(default_factory=hashlib.sha256)
    saved: int | None = None  # the step of the last checkpoint (None: none yet)
    best: dict[str, Any] | None = None  # the best checkpoint so far: step, val_loss, val_perplexity (rank 0)


def train_one(name: str, config: QELMConfig, dataset: TextDataset, settings: TrainSettings, run_record: dict[str, Any],
               folder: Path, *, resume: bool, device: torch.device, callback: Callback | None, rank: int,
               world: int) -> ModelRun:
    """Train one model of the run (fresh, or from its checkpoint in ``folder``); see :func:`~qelm.train.train`."""
    device = local_device(device, world)
    sampler = BatchSampler(dataset.train_ids, config.context_len, settings.batch_size, settings.seed, rank, world)
    if resume and has_checkpoint(folder) and TRAINING_STATE in checkpoint_files(folder):
        m = _restore(name, config, folder, settings, sampler, device, rank)
    else:
        torch.manual_seed(settings.seed)
        model = (QELM if name == "qelm" else ClassicalLM)(config).to(device).train()  # the matched config is shrunk
        m = _Model(name, model, _optimizer(model, settings), sampler, folder, start=0, history=[])
        if rank == 0:
            ensure_writable_dir(folder)
            write_metrics(folder / METRICS, [])
    val = _run_steps(m, dataset, settings, run_record, device=device, callback=callback, rank=rank, world=world)
    if rank == 0:
        if not val:  # nothing left to run (resumed a finished model): measure it now
            val = evaluate(m.model, dataset.val_ids, batch_size=_eval_batch(config, settings.batch_size, device),
                           context_len=config.context_len)
        if callback:
            callback("end", name, {"val": val})
    return ModelRun(name=name, model=m.model, path=folder, history=m.history, val=val, steps_run=settings.steps - m.start,
                    best=m.best)


def _restore(name: str, config: QELMConfig, folder: Path, settings: TrainSettings, sampler: BatchSampler,
             device: torch.device, rank: int) -> _Model:
    """The model of ``folder``'s checkpoint with its optimizer, sampler and RNG states, checked to be the
    model this run builds; its metrics keep only the steps up to the checkpoint (rank 0)."""
    ck = load_checkpoint(folder, backend=config.backend, shots=config.shots, **config.backend_options)
    kind = "qelm" if name == "qelm" else "classical"
    differences = config_differences(ck.config, config)
    if ck.kind != kind:
        differences.append(f"kind: {ck.kind!r} vs {kind!r}")
    if differences:
        raise CheckpointError(f"cannot resume the {LABELS[name]} in {str(folder)!r}: its checkpoint holds another model "
                         f"than this run builds ({'; '.join(differences)}; saved vs expected); start a new run in "
                         f"another --out")
    state = ck.training_state
    assert state is not None  # resumed only from a checkpoint that holds its training state
    model = ck.model.to(device).train()
    start = int(state["step"])
    if start > settings.steps:
        raise ConfigError(f"the {LABELS[name]} in {str(folder)!r} already took {start} steps, more than "
                         f"steps={settings.steps}: steps is the total, so pass at least {start}")
    optimizer = _optimizer(model, settings)
    optimizer.load_state_dict(state["optimizer"])
    sampler.load_state_dict(state["sampler"])
    torch.set_rng_state(state["torch_rng"])
    m = _Model(name, model, optimizer, sampler, folder, start=start, history=[], saved=start, best=state.get("best"))
    if rank == 0:
        _restore_metrics(m, state)
    return m


def _restore_metrics(m: _Model, state: dict[str, Any]) -> None:
    """Cut ``metrics.jsonl`` back to the checkpoint's step (the steps logged after it run again), checked
    against the size and sha256 the checkpoint recorded of it: a line edited or lost is an error, never
    silently dropped."""
    path = m.folder / METRICS
    data = path.read_bytes() if path.is_file() else b""
    n = state.get("metrics_bytes")
    if n is None:  # a checkpoint of an older qelm: keep the records up to its step
        kept = [r for r in read_metrics(path) if r["step"] <= m.start] if data else []
        data = "".join(json.dumps(r) + "\n" for r in kept).encode()
    elif len(data) < n or hashlib.sha256(data[:n]).hexdigest() != state.get("metrics_sha256"):
        raise CheckpointError(f"{path} is not what the run wrote up to its checkpoint at step {m.start}: its first {n} bytes "
                         f"{'are missing' if len(data) < n else 'differ from the sha256 the checkpoint recorded'} (edited "
                         f"or damaged); restore the file, or start a new run in another --out")
    else:
        data = data[:n]
    m.history = [json.loads(line) for line in data.decode("utf-8").splitlines() if line.strip()]
    atomic_write(path, data)
    m.metrics_bytes, m.metrics_sha256 = len(data), hashlib.sha256(data)


def _run_steps(m: _Model, dataset: TextDataset, settings: TrainSettings, run_record: dict[str, Any], *,
               device: torch.device, callback: Callback | None, rank: int, world: int) -> dict[str, float]:
    """Take the steps from ``m.start`` to ``settings.steps``; log, evaluate and save on rank 0. Returns the
    last validation figures (empty when no step evaluated)."""
    net: torch.nn.Module = m.model
    if world > 1:
        net = DistributedDataParallel(m.model, device_ids=[device.index] if device.type == "cuda" else None)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    T = m.model.config.context_len
    tokens_per_step = settings.batch_size * T  # global
    if rank == 0:
        _log.info("%s: steps %d to %d of %d tokens each, into %s", m.name, m.start + 1, settings.steps,
                  tokens_per_step, m.folder)
    if rank == 0 and callback:
        callback("start", m.name, {"step": m.start, "steps": settings.steps, "tokens_per_step": tokens_per_step})
    val: dict[str, float] = {}
    eval_batch = _eval_batch(m.model.config, settings.batch_size, device)
    metrics_file = open(m.folder / METRICS, "ab") if rank == 0 else None
    try:
        for step in range(m.start + 1, settings.steps + 1):
            loss, seconds = _step(m, net, settings, device, world, step)
            if rank != 0:
                continue
            assert metrics_file is not None  # rank 0 opened it
            is_eval = step % settings.eval_every == 0 or step == settings.steps
            record = {"step": step, "loss": loss, "perplexity": math.exp(min(loss, 700.0)),
                      "tokens_per_s": tokens_per_step / seconds, "peak_memory_bytes": _peak_memory_bytes(device),
                      "tokens": tokens_per_step, "step_seconds": seconds, "lr": settings.lr_at(step)}
            if is_eval:
                val = evaluate(m.model, dataset.val_ids, batch_size=eval_batch, context_len=T)
                record.update(val_loss=val["loss"], val_perplexity=val["perplexity"])
                _keep_if_best(m, step, val, dataset)
            if is_eval or step % settings.log_every == 0:
                m.history.append(record)
                line = (json.dumps(record) + "\n").encode()
                metrics_file.write(line)
                metrics_file.flush()
                m.metrics_bytes += len(line)
                m.metrics_sha256.update(line)
                _log.debug("%s: %s", m.name, json.dumps(record))
                if callback:
                    callback("step", m.name, record)
            if step % settings.save_every == 0 or step == settings.steps:
                _save(m, step, dataset, run_record)
    finally:
        if metrics_file is not None:
            metrics_file.close()
    return val


def _keep_if_best(m: _Model, step: int, val: dict[str, float], dataset: TextDataset) -> None:
    """Save ``m`` into ``best/`` when its validation loss is the lowest so far (the first of equal ones
    stays). Its step and loss go into that checkpoint's manifest and into the next training state, so a
    resumed run compares against the same best."""
    if not math.isfinite(val["loss"]) or (m.best is not None and val["loss"] >= m.best["val_loss"]):
        return
    best = {"step": step, "val_loss": val["loss"], "val_perplexity": val["perplexity"]}
    save_checkpoint(m.folder / BEST, m.model, dataset.tokenizer, info={"role": "best", **best})
    m.best = best


def _eval_batch(config: QELMConfig, batch_size: int, device: torch.device) -> int:
    """Windows per evaluation pass: at least 64 (fewer passes), but never more than fit in memory."""
    per_window = config.circuit_memory(1)[2]
    if not per_window:
        return max(64, batch_size)
    return max(1, min(max(64, batch_size), memory_bytes(device) // per_window))


def _diverged(m: _Model, settings: TrainSettings, step: int, what: str) -> FloatingPointError:
    kept = (f"the last good checkpoint, of step {m.saved}, is kept in {m.folder}" if m.saved
            else "no checkpoint had been saved yet")
    return FloatingPointError(f"the {LABELS[m.name]}'s {what} at step {step}; training stopped there and {kept}: "
                              f"train again with a smaller learning rate (lr={settings.lr}) or a gradient clip "
                              f"(grad_clip={settings.grad_clip})")


def _step(m: _Model, net: torch.nn.Module, settings: TrainSettings, device: torch.device, world: int,
          step: int) -> tuple[float, float]:
    """One optimizer step on the next batch: ``(global-batch loss, seconds)``. A loss or gradient that is
    not finite raises ``FloatingPointError`` before the optimizer touches the weights."""
    t0 = time.perf_counter()
    x, y = m.sampler.next()  # this rank's slice: (b, T) each
    _, loss = net(x.to(device), y.to(device))
    m.optimizer.zero_grad(set_to_none=True)
    loss.backward()
    value = loss.detach()
    if world > 1:
        dist.all_reduce(value)  # mean of equal slices = the global-batch mean
        value /= world
    value = float(value)
    if not math.isfinite(value):
        raise _diverged(m, settings, step, f"training loss became {value}")
    if settings.grad_clip:
        norm = float(torch.nn.utils.clip_grad_norm_(m.model.parameters(), settings.grad_clip))
        if not math.isfinite(norm):
            raise _diverged(m, settings, step, f"gradient norm became {norm}")
    for group in m.optimizer.param_groups:  # the schedule's rate for this step (a function of the step alone)
        group["lr"] = settings.lr_at(step)
    try:
        m.optimizer.step()
    except RuntimeError as e:  # an update too large for float32 (lr * weight_decay, lr / (1 - beta1), ...)
        if "overflow" not in str(e):
            raise
        raise _diverged(m, settings, step, "optimizer update overflowed float32") from None
    return value, time.perf_counter() - t0


def _save(m: _Model, step: int, dataset: TextDataset, run_record: dict[str, Any]) -> None:
    """Save a checkpoint of ``m`` at ``step``, unless its weights are not finite or give a loss that is not
    (a model that diverged is never saved over a good checkpoint)."""
    kept = (f"the last good checkpoint, of step {m.saved}, is kept in {m.folder}" if m.saved
            else "no checkpoint had been saved yet")
    advice = (f"train again with a smaller learning rate (lr={m.optimizer.defaults['lr']}) or weight decay "
              f"(weight_decay={m.optimizer.defaults['weight_decay']})")
    bad = [name for name, p in m.model.named_parameters() if not bool(torch.isfinite(p).all())]
    if bad:  # the step itself was finite, but it left weights that are not (a huge weight decay, say)
        raise FloatingPointError(f"the {LABELS[m.name]}'s weights ({', '.join(bad[:3])}) became NaN or infinite at "
                                 f"step {step}; they are not saved, and {kept}: {advice}")
    loss = _probe_loss(m.model, dataset)
    if not math.isfinite(loss):  # finite weights so large that the model's outputs overflow
        raise FloatingPointError(f"the {LABELS[m.name]}'s weights after step {step} give a loss of {loss}; they are "
                                 f"not saved, and {kept}: {advice}")
    state = {"step": step, "optimizer": m.optimizer.state_dict(), "sampler": m.sampler.state_dict(),
             "torch_rng": torch.get_rng_state(), "run": run_record, "best": m.best,
             "metrics_bytes": m.metrics_bytes, "metrics_sha256": m.metrics_sha256.hexdigest()}
    save_checkpoint(m.folder, m.model, dataset.tokenizer, training_state=state)
    m.saved = step


@torch.no_grad()
def _probe_loss(model: QELM, dataset: TextDataset) -> float:
    """The loss of ``model`` on the first validation window: a cheap check that its outputs are finite.
    Leaves every random state and the training mode as they were (the run stays exact)."""
    T = model.config.context_len
    window = dataset.val_ids[:T + 1].unsqueeze(0).to(next(model.parameters()).device)  # (1, <= T+1)
    was_training = model.training
    with torch.random.fork_rng(devices=[window.device] if window.device.type == "cuda" else []):
        model.eval()
        try:
            _, loss = model(window[:, :-1], window[:, 1:])
        finally:
            model.train(was_training)
    return float(loss)


def _optimizer(model: torch.nn.Module, settings: TrainSettings) -> torch.optim.Optimizer:
    return torch.optim.AdamW(model.parameters(), lr=settings.lr, weight_decay=settings.weight_decay)


def _peak_memory_bytes(device: torch.device) -> int:
    """CUDA: the most memory torch has allocated on ``device``; CPU: the process's peak resident set."""
    if device.type == "cuda":
        return int(torch.cuda.max_memory_allocated(device))
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak if sys.platform == "darwin" else peak * 1024)  # Linux reports KiB, macOS bytes
