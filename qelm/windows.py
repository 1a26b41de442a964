"""The windowed last-token protocol of the Quixer paper, as a qelm training and evaluation mode.

A split's token stream is cut into ``streams`` contiguous streams (1,024 in the paper: 32 x 32), laid side by
side; step ``i`` takes the ``window`` tokens before row ``i`` of every stream (the first rows borrow the end of
the previous stream, or ``<pad>``) and predicts only row ``i``: ``streams`` windows, one prediction each. An
epoch visits every row once in a shuffled order, so every training token is predicted once per epoch;
evaluation visits them in order, so every validation and test token is predicted once, from a full window.
Perplexity is ``exp`` of the mean cross-entropy.

Training (:func:`train_windows`): Adam (L2 weight decay), gradient-norm clipping, a cosine learning rate
stepped every batch (``CosineAnnealingWarmRestarts`` with period ``restart_steps``), validation after every
epoch, the best-validation weights kept and tested at the end. After every epoch the whole state (weights,
optimizer, schedule, best weights, history) is written atomically, so a run that is stopped (a time budget,
a kill) continues where it stopped when the same command runs again.
"""

from __future__ import annotations

import json
import math
import os
import platform
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, fields
from pathlib import Path, PurePosixPath

import torch
import torch.nn as nn
import torch.nn.functional as F

from .errors import CheckpointError, ConfigError
from .folders import temp_of

__all__ = ["WindowSettings", "stream_source", "window_batch", "evaluate_windows", "train_windows",
           "CheckpointMismatch", "atomic_save", "RUN_FILES", "window_run_layout"]


#: every file a windowed run writes into its folder (``vocab.json``: the command's tokenizer); nothing else
RUN_FILES = ("state.pt", "best.pt", "results.json", "vocab.json")


def window_run_layout(inside: PurePosixPath, path: Path) -> bool:
    """What a windowed run's folder holds (its layout for :mod:`qelm.folders`): :data:`RUN_FILES` and their
    temporary files, each a plain file at the top; a folder holding anything else is the user's."""
    name = inside.name
    return len(inside.parts) == 1 and not path.is_dir() and (name in RUN_FILES or temp_of(name, RUN_FILES))


@dataclass(frozen=True)
class WindowSettings:
    """How a model is trained in the windowed protocol (defaults: the paper's Quixer settings)."""

    epochs: int = 30
    streams: int = 1024
    window: int = 32
    lr: float = 2e-3
    weight_decay: float = 1e-4
    eps: float = 1e-10
    clip: float = 5.0
    #: period of the cosine schedule in steps (the reference's ``restart_epochs``, stepped per batch)
    restart_steps: int = 30000
    seed: int = 0

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise ConfigError(f"setting {f.name}={value!r} is invalid: use a finite number")
        for name in ("epochs", "streams", "window", "restart_steps"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 1:
                raise ConfigError(f"setting {name}={getattr(self, name)!r} is invalid: use an integer >= 1")
        if self.lr <= 0 or self.eps <= 0 or self.weight_decay < 0 or self.clip < 0 or self.seed < 0:
            raise ConfigError("settings lr and eps must be > 0, weight_decay, clip and seed >= 0")


class CheckpointMismatch(CheckpointError):
    """The run folder holds a run of another model, protocol or vocabulary."""


def stream_source(ids: torch.Tensor, streams: int, window: int, pad_id: int) -> torch.Tensor:
    """``(rows + window, streams)``: the stream of ids cut into ``streams`` contiguous streams (the tail that does
    not fill a row is dropped), preceded by ``window`` rows of context: ``<pad>`` for the first stream, the end
    of the previous stream for the others (the reference's ``batchify_s2s``)."""
    rows = (ids.numel() - 1) // streams
    if rows < 1:
        raise ConfigError(f"{ids.numel():,} tokens are too few for {streams:,} streams: use fewer streams or more text")
    body = ids[: rows * streams].reshape(streams, rows).T  # (rows, streams): column j is stream j
    context = torch.cat([torch.full((window, 1), pad_id, dtype=ids.dtype), body[-window:, :-1]], dim=1) \
        if rows >= window else torch.full((window, streams), pad_id, dtype=ids.dtype)
    return torch.cat([context, body])


def window_batch(source: torch.Tensor, i: int | torch.Tensor, window: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Row ``i``'s windows ``(streams, window)`` and targets ``(streams,)``."""
    return source[i : i + window].T, source[i + window]


def n_rows(source: torch.Tensor, window: int) -> int:
    return source.shape[0] - window


@torch.no_grad()
def evaluate_windows(model: nn.Module, source: torch.Tensor, window: int, forward: Callable | None = None) -> float:
    """Mean cross-entropy over every row of ``source`` (every token predicted once, in order)."""
    was_training = model.training
    model.eval()
    forward = model if forward is None else forward
    total = torch.zeros((), dtype=torch.float64, device=source.device)
    rows = n_rows(source, window)
    for i in range(rows):
        x, y = window_batch(source, i, window)
        total += F.cross_entropy(forward(x).float(), y).double()
    model.train(was_training)
    return float(total) / rows


def atomic_save(obj, path: Path) -> None:
    """``torch.save`` to a temporary file in the same folder, then rename: a reader never sees a half file."""
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        torch.save(obj, tmp)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def _schedule_lr(settings: WindowSettings, step: int) -> float:
    """CosineAnnealingWarmRestarts(T_0=restart_steps, eta_min=0) at ``step`` (closed form, resumable)."""
    t = step % settings.restart_steps
    return settings.lr * (1 + math.cos(math.pi * t / settings.restart_steps)) / 2


def train_windows(model: nn.Module, data: dict[str, torch.Tensor], settings: WindowSettings, out: str | os.PathLike,
                  spec: dict, pad_id: int, device: str | torch.device = "cpu", compile: bool = False,
                  max_seconds: float | None = None, log: Callable[[str], None] = print) -> dict:
    """Train ``model`` (``(W, window)`` ids -> ``(W, V)`` logits) on ``data["train"]`` by the protocol,
    validating on ``data["valid"]`` and testing the best epoch on ``data["test"]``; everything goes to ``out``.

    ``spec`` describes the run (model, sizes, tokenizer, data); a folder holding a run of another spec is
    refused. ``max_seconds``: stop after the epoch that would overrun it (the run resumes later). Returns the
    results dictionary (also written to ``out/results.json``)."""
    device = torch.device(device)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    sources = {k: stream_source(v, settings.streams, settings.window, pad_id).to(device) for k, v in data.items()}
    model.to(device)
    params = [p for p in model.parameters() if p.requires_grad]
    use_fused = device.type == "cuda"
    optimizer = torch.optim.Adam(params, lr=settings.lr, weight_decay=settings.weight_decay, eps=settings.eps,
                                 fused=True if use_fused else None)
    full_spec = {"spec": spec, "settings": asdict(settings)}
    state_path, best_path, results_path = out / "state.pt", out / "best.pt", out / "results.json"
    history: list[dict] = []
    epoch0, best_val, best_epoch = 0, float("inf"), -1
    if state_path.exists():
        try:
            state = torch.load(state_path, map_location=device, weights_only=True)
        except Exception as e:
            raise CheckpointMismatch(f"{str(state_path)!r} cannot be read ({type(e).__name__}): it is damaged; move "
                                     "the folder away to start again") from None
        if state.get("spec") != json.loads(json.dumps(full_spec)):
            theirs, ours = state.get("spec", {}), json.loads(json.dumps(full_spec))
            diff = sorted(k for part in ("spec", "settings") for k in set(theirs.get(part, {})) | set(ours[part])
                          if theirs.get(part, {}).get(k) != ours[part].get(k))
            raise CheckpointMismatch(f"{str(out)!r} holds a run with other {', '.join(diff) or 'settings'}: give "
                                     "another --out, or the same settings to resume it")
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        epoch0, best_val, best_epoch, history = state["epoch"], state["best_val"], state["best_epoch"], state["history"]
        log(f"resuming after epoch {epoch0} of {settings.epochs} (best validation ppl {math.exp(best_val):.2f})")
    forward = torch.compile(model) if compile else model
    train = sources["train"]
    rows = n_rows(train, settings.window)
    step = epoch0 * rows
    for epoch in range(epoch0, settings.epochs):
        t0 = time.perf_counter()
        model.train()
        order = torch.randperm(rows, generator=torch.Generator().manual_seed(settings.seed * 100003 + epoch)).tolist()
        total = torch.zeros((), dtype=torch.float64, device=device)
        for i in order:
            lr = _schedule_lr(settings, step)
            for g in optimizer.param_groups:
                g["lr"] = lr
            x, y = window_batch(train, i, settings.window)
            loss = F.cross_entropy(forward(x).float(), y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if settings.clip:
                torch.nn.utils.clip_grad_norm_(params, settings.clip, foreach=True)
            optimizer.step()
            total += loss.detach().double()
            step += 1
        train_loss = float(total) / rows
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        train_seconds = time.perf_counter() - t0
        val = evaluate_windows(model, sources["valid"], settings.window, forward)
        seconds = time.perf_counter() - t0
        history.append({"epoch": epoch + 1, "train_loss": train_loss, "train_ppl": math.exp(train_loss),
                        "valid_loss": val, "valid_ppl": math.exp(val), "train_seconds": train_seconds,
                        "step_ms": 1000 * train_seconds / rows, "seconds": seconds})
        if val < best_val:
            best_val, best_epoch = val, epoch + 1
            atomic_save({k: v.detach().cpu() for k, v in model.state_dict().items()}, best_path)
        atomic_save({"spec": full_spec, "model": model.state_dict(), "optimizer": optimizer.state_dict(),
                     "epoch": epoch + 1, "best_val": best_val, "best_epoch": best_epoch, "history": history},
                    state_path)
        log(f"epoch {epoch + 1}/{settings.epochs}: train ppl {math.exp(train_loss):.2f}, valid ppl {math.exp(val):.2f}, "
            f"{train_seconds:.1f} s ({1000 * train_seconds / rows:.2f} ms/step)")
        _write_results(results_path, full_spec, model, history, best_epoch, best_val, None, started)
        if max_seconds is not None and epoch + 1 < settings.epochs and \
                time.perf_counter() - started + 1.2 * seconds > max_seconds:
            log(f"stopping after epoch {epoch + 1} of {settings.epochs} to stay within {max_seconds:.0f} s: run the "
                "same command again to resume")
            return _write_results(results_path, full_spec, model, history, best_epoch, best_val, None, started)
    model.load_state_dict(torch.load(best_path, map_location=device, weights_only=True))
    test = evaluate_windows(model, sources["test"], settings.window, forward)
    val = evaluate_windows(model, sources["valid"], settings.window, forward)
    log(f"best epoch {best_epoch}: valid ppl {math.exp(val):.2f}, test ppl {math.exp(test):.2f}")
    return _write_results(results_path, full_spec, model, history, best_epoch, val, test, started)


def _command() -> str:
    """The command line that ran this, as the user would type it (``qelm ...`` for the CLI in any form)."""
    first = Path(sys.argv[0])
    if first.name == "qelm" or (first.name == "__main__.py" and first.parent.name == "qelm"):
        return " ".join(["qelm"] + sys.argv[1:])
    return " ".join([first.name] + sys.argv[1:])


def _write_results(path: Path, full_spec: dict, model: nn.Module, history: list, best_epoch: int, best_val: float,
                   test: float | None, started: float) -> dict:
    device = next(model.parameters()).device
    results = {
        **full_spec,
        "parameters": sum(p.numel() for p in model.parameters()),
        "epochs_done": len(history),
        "best_epoch": best_epoch,
        "valid_ppl": math.exp(best_val) if best_epoch > 0 else None,
        "test_ppl": None if test is None else math.exp(test),
        "complete": test is not None,
        "median_step_ms": sorted(h["step_ms"] for h in history)[len(history) // 2] if history else None,
        "train_seconds": sum(h["train_seconds"] for h in history),
        "wall_seconds": sum(h["seconds"] for h in history),
        "history": history,
        "machine": {"device": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor()
                    or platform.machine(), "torch": torch.__version__, "python": platform.python_version()},
        "command": _command(),
    }
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(results, indent=2) + "\n")
    os.replace(tmp, path)
    return results
