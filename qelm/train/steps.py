"""Training one model of a run: built fresh or restored from its checkpoint (optimizer, sampler and RNG
states), then step by step, with every rank drawing its slice of the same global batch; rank 0 logs to
``metrics.jsonl``, evaluates and saves checkpoints."""

from __future__ import annotations

import json
import math
import resource
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

from ..checkpoint import TRAINING_STATE, ensure_writable_dir, load_checkpoint, save_checkpoint
from ..config import QELMConfig, config_differences
from ..data import BatchSampler, TextDataset
from ..distributed import local_device
from ..evaluate import evaluate
from ..metrics import METRICS, read_metrics, write_metrics
from ..model import QELM, ClassicalLM
from .report import LABELS
from .results import Callback, ModelRun
from .settings import TrainSettings

__all__ = ["train_one"]


@dataclass
class _Model:
    """One model of the run in training: where it starts and what it has logged so far."""

    name: str
    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    sampler: BatchSampler
    folder: Path
    start: int  # optimizer steps already taken (0, or the resumed checkpoint's step)
    history: list[dict[str, Any]]  # rank 0: metrics records of the steps before ``start``


def train_one(name: str, config: QELMConfig, dataset: TextDataset, settings: TrainSettings, run_record: dict[str, Any],
               folder: Path, *, resume: bool, device: torch.device, callback: Callback | None, rank: int,
               world: int) -> ModelRun:
    """Train one model of the run (fresh, or from its checkpoint in ``folder``); see :func:`~qelm.train.train`."""
    device = local_device(device, world)
    sampler = BatchSampler(dataset.train_ids, config.context_len, settings.batch_size, settings.seed, rank, world)
    if resume and (folder / TRAINING_STATE).is_file():
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
            val = evaluate(m.model, dataset.val_ids, batch_size=max(64, settings.batch_size), context_len=config.context_len)
        if callback:
            callback("end", name, {"val": val})
    return ModelRun(name=name, model=m.model, path=folder, history=m.history, val=val, steps_run=settings.steps - m.start)


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
        raise ValueError(f"cannot resume the {LABELS[name]} in {str(folder)!r}: its checkpoint holds another model "
                         f"than this run builds ({'; '.join(differences)}; saved vs expected); start a new run in "
                         f"another --out")
    state = ck.training_state
    model = ck.model.to(device).train()
    start = int(state["step"])
    if start > settings.steps:
        raise ValueError(f"the {LABELS[name]} in {str(folder)!r} already took {start} steps, more than "
                         f"steps={settings.steps}: steps is the total, so pass at least {start}")
    optimizer = _optimizer(model, settings)
    optimizer.load_state_dict(state["optimizer"])
    sampler.load_state_dict(state["sampler"])
    torch.set_rng_state(state["torch_rng"])
    history = []
    if rank == 0:  # steps logged after the checkpoint (before a kill) are run again: drop them
        logged = read_metrics(folder / METRICS) if (folder / METRICS).is_file() else []
        history = [r for r in logged if r["step"] <= start]
        write_metrics(folder / METRICS, history)
    return _Model(name, model, optimizer, sampler, folder, start=start, history=history)


def _run_steps(m: _Model, dataset: TextDataset, settings: TrainSettings, run_record: dict[str, Any], *,
               device: torch.device, callback: Callback | None, rank: int, world: int) -> dict[str, float]:
    """Take the steps from ``m.start`` to ``settings.steps``; log, evaluate and save on rank 0. Returns the
    last validation figures (empty when no step evaluated)."""
    net = m.model
    if world > 1:
        from torch.nn.parallel import DistributedDataParallel

        net = DistributedDataParallel(m.model, device_ids=[device.index] if device.type == "cuda" else None)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    T = m.model.config.context_len
    tokens_per_step = settings.batch_size * T  # global
    if rank == 0 and callback:
        callback("start", m.name, {"step": m.start, "steps": settings.steps, "tokens_per_step": tokens_per_step})
    val: dict[str, float] = {}
    metrics_file = open(m.folder / METRICS, "a", encoding="utf-8") if rank == 0 else None
    try:
        for step in range(m.start + 1, settings.steps + 1):
            loss, seconds = _step(m, net, settings, device, world)
            if not math.isfinite(loss):
                raise FloatingPointError(f"the {LABELS[m.name]}'s training loss became {loss} at step {step}: "
                                         f"lower the learning rate (lr={settings.lr})")
            if rank != 0:
                continue
            is_eval = step % settings.eval_every == 0 or step == settings.steps
            record = {"step": step, "loss": loss, "perplexity": math.exp(min(loss, 700.0)),
                      "tokens_per_s": tokens_per_step / seconds, "peak_memory_bytes": _peak_memory_bytes(device),
                      "tokens": tokens_per_step, "step_seconds": seconds}
            if is_eval:
                val = evaluate(m.model, dataset.val_ids, batch_size=max(64, settings.batch_size), context_len=T)
                record.update(val_loss=val["loss"], val_perplexity=val["perplexity"])
            if is_eval or step % settings.log_every == 0:
                m.history.append(record)
                metrics_file.write(json.dumps(record) + "\n")
                metrics_file.flush()
                if callback:
                    callback("step", m.name, record)
            if step % settings.save_every == 0 or step == settings.steps:
                _save(m, step, dataset, run_record)
    finally:
        if metrics_file is not None:
            metrics_file.close()
    return val


def _step(m: _Model, net: torch.nn.Module, settings: TrainSettings, device: torch.device, world: int) -> tuple[float, float]:
    """One optimizer step on the next batch: ``(global-batch loss, seconds)``."""
    t0 = time.perf_counter()
    x, y = m.sampler.next()  # this rank's slice: (b, T) each
    _, loss = net(x.to(device), y.to(device))
    m.optimizer.zero_grad(set_to_none=True)
    loss.backward()
    if settings.grad_clip:
        torch.nn.utils.clip_grad_norm_(m.model.parameters(), settings.grad_clip)
    m.optimizer.step()
    value = loss.detach()
    if world > 1:
        dist.all_reduce(value)  # mean of equal slices = the global-batch mean
        value /= world
    value = float(value)
    return value, time.perf_counter() - t0


def _save(m: _Model, step: int, dataset: TextDataset, run_record: dict[str, Any]) -> None:
    state = {"step": step, "optimizer": m.optimizer.state_dict(), "sampler": m.sampler.state_dict(),
             "torch_rng": torch.get_rng_state(), "run": run_record}
    save_checkpoint(m.folder, m.model, dataset.tokenizer, training_state=state)


def _optimizer(model: torch.nn.Module, settings: TrainSettings) -> torch.optim.Optimizer:
    return torch.optim.AdamW(model.parameters(), lr=settings.lr, weight_decay=settings.weight_decay)


def _peak_memory_bytes(device: torch.device) -> int:
    """CUDA: the most memory torch has allocated on ``device``; CPU: the process's peak resident set."""
    if device.type == "cuda":
        return int(torch.cuda.max_memory_allocated(device))
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak if sys.platform == "darwin" else peak * 1024)  # Linux reports KiB, macOS bytes
