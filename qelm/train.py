"""Training, evaluation and generation: train a QELM and two classical baselines on the same batches,
measure all three on the same validation text, and say how the QELM compares with each.

:func:`train` runs the whole job. A run folder ``OUT`` holds::

    OUT/twin/    checkpoint of the classical twin (ClassicalLM at the same config) + metrics.jsonl
    OUT/matched/ checkpoint of the parameter-matched classical model + metrics.jsonl
    OUT/qelm/    checkpoint of the QELM + metrics.jsonl
    OUT/summary.json    every figure of the run, with the method that measured it
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

Data parallel: when ``torch.distributed`` is initialised (``torchrun``; :func:`init_distributed`), every
rank draws the same global batch and keeps its slice, ``DistributedDataParallel`` averages gradients, and
only rank 0 evaluates and writes. The losses equal a one-process run with the same global batch, up to
floating-point summation order.

Validation loss is the mean cross-entropy (nats/token) over every token of the validation split, read in
non-overlapping windows of ``context_len`` tokens; perplexity is its exponential. The unigram baseline is
a token-frequency model fitted on the training split (add-one smoothing), scored on the same tokens.
"""

from __future__ import annotations

import json
import math
import os
import resource
import sys
import time
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch
import torch.distributed as dist
import torch.nn.functional as F

from .checkpoint import (CONFIG, TOKENIZER, TRAINING_STATE, WEIGHTS, atomic_path, atomic_write, config_differences,
                         ensure_writable_dir, load_checkpoint, save_checkpoint, with_backend)
from .backends import get_backend
from .config import QELMConfig
from .data import BatchSampler, TextDataset, bundled_config
from .model import QELM, ClassicalLM
from .tokenizer import Tokenizer, load_tokenizer

__all__ = ["train", "evaluate", "unigram_baseline", "generate_text", "matched_config", "TrainResult", "ModelRun",
           "load_run_config", "init_distributed", "plot_loss_curves", "read_metrics", "TRAIN_DEFAULTS", "METRICS",
           "SUMMARY", "LOSS_CURVE"]

METRICS = "metrics.jsonl"
SUMMARY = "summary.json"
LOSS_CURVE = "loss_curve.png"
MODEL_NAMES = ("twin", "matched", "qelm")  # training order (see the module docstring)
LABELS = {"qelm": "QELM", "twin": "classical twin", "matched": "matched classical", "unigram": "unigram baseline"}
MATCH_TOLERANCE = 0.02  # the matched model's parameter count is within this fraction of the QELM's

#: training settings when neither the caller nor the config file's [train] table gives one
TRAIN_DEFAULTS: dict[str, Any] = {
    "steps": 300,
    "batch_size": 8,
    "lr": 1e-2,
    "seed": 0,
    "tokenizer": "char",
    "vocab_size": None,
    "eval_every": None,  # None: five evaluations over the run, the last at the final step
    "save_every": None,  # None: five checkpoints over the run
    "log_every": 1,
    "grad_clip": 1.0,
    "weight_decay": 0.0,
    "twin": True,
    "matched": True,  # train ClassicalLM.matched_to(qelm) too
}
#: settings a resumed run must keep: each changes the numbers the run computes
_FIXED_ON_RESUME = ("batch_size", "lr", "seed", "tokenizer", "vocab_size", "grad_clip", "weight_decay")

Callback = Callable[[str, str, dict], None]  # (event: "start" | "step" | "end", model name, info)


# --- evaluation -------------------------------------------------------------------------------------------
@torch.no_grad()
def evaluate(model: torch.nn.Module, token_ids: torch.Tensor, *, batch_size: int, context_len: int) -> dict[str, float]:
    """Mean next-token cross-entropy of ``model`` over every token of ``token_ids`` (1-D), read in
    non-overlapping windows of ``context_len`` (the last, shorter window takes the remainder), so each
    token but the first is predicted exactly once. Returns ``loss`` (nats/token), ``perplexity``
    (``exp(loss)``) and ``tokens`` (how many were scored). Deterministic; uses no RNG."""
    model = getattr(model, "module", model)
    ids = torch.as_tensor(token_ids, dtype=torch.long).reshape(-1)
    if ids.numel() < 2:
        raise ValueError(f"evaluation needs at least 2 tokens, got {ids.numel()}")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size={batch_size!r} is invalid: use an integer >= 1")
    device = next(model.parameters()).device
    n_full = (ids.numel() - 1) // context_len
    full = ids[: n_full * context_len + 1]
    # (W, T+1) windows sharing their boundary token: window w covers tokens w*T .. (w+1)*T
    windows = full.unfold(0, context_len + 1, context_len) if n_full else ids.new_empty(0, context_len + 1)
    chunks = list(windows.split(batch_size)) if n_full else []
    rest = (ids.numel() - 1) - n_full * context_len
    if rest:
        chunks.append(ids[-(rest + 1):].unsqueeze(0))  # (1, rest+1)
    was_training = model.training
    model.eval()
    total = torch.zeros((), dtype=torch.float64)
    try:
        for chunk in chunks:  # batches of windows, not tokens
            chunk = chunk.to(device)
            logits, _ = model(chunk[:, :-1])  # (b, t, V)
            loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), chunk[:, 1:].reshape(-1), reduction="sum")
            total += loss.double().cpu()
    finally:
        model.train(was_training)
    count = ids.numel() - 1
    mean = float(total) / count
    return {"loss": mean, "perplexity": math.exp(mean), "tokens": count}


def unigram_baseline(train_ids: torch.Tensor, val_ids: torch.Tensor, vocab_size: int) -> dict[str, float]:
    """The unigram model (token frequencies of ``train_ids``, add-one smoothed) scored like
    :func:`evaluate`: mean cross-entropy over ``val_ids[1:]``, its perplexity and the token count."""
    counts = torch.bincount(torch.as_tensor(train_ids).reshape(-1), minlength=vocab_size).double() + 1.0  # (V,)
    logp = counts.log() - counts.sum().log()
    targets = torch.as_tensor(val_ids).reshape(-1)[1:]
    mean = float(-logp[targets].mean())
    return {"loss": mean, "perplexity": math.exp(mean), "tokens": int(targets.numel())}


# --- generation --------------------------------------------------------------------------------------------
def generate_text(model: QELM, tokenizer: Tokenizer, prompt: str, *, max_new_tokens: int = 200,
                  temperature: float = 1.0, top_k: int | None = None, seed: int = 0) -> str:
    """Sample a continuation of ``prompt`` (the new text only). The same seed gives the same text."""
    if not prompt:
        raise ValueError("the prompt is empty: give at least one character to continue from")
    if isinstance(max_new_tokens, bool) or not isinstance(max_new_tokens, int) or max_new_tokens < 0:
        raise ValueError(f"max_new_tokens={max_new_tokens!r} is invalid: use an integer >= 0")
    if not temperature > 0:
        raise ValueError(f"temperature={temperature!r} is invalid: use a number > 0 (1.0 samples the model as trained)")
    if top_k is not None and (isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1):
        raise ValueError(f"top_k={top_k!r} is invalid: use an integer >= 1, or leave it out")
    ids = tokenizer.encode(prompt)  # raises, naming characters outside the vocabulary
    model = getattr(model, "module", model)
    device = next(model.parameters()).device
    generator = torch.Generator(device=device).manual_seed(seed)
    was_training = model.training
    model.eval()
    try:
        idx = torch.tensor([ids], dtype=torch.long, device=device)  # (1, T0)
        out = model.generate(idx, max_new_tokens, temperature=temperature, top_k=top_k, generator=generator)
    finally:
        model.train(was_training)
    return tokenizer.decode(out[0, len(ids):].tolist())


# --- configuration -----------------------------------------------------------------------------------------
def load_run_config(path: str | os.PathLike | None = None) -> tuple[QELMConfig, dict[str, Any]]:
    """``(model config, training settings)`` from a TOML file: the ``[model]`` table (or top-level fields)
    and the optional ``[train]`` table (keys of :data:`TRAIN_DEFAULTS`). ``None``: the tiny demo config."""
    p = Path(path) if path is not None else bundled_config()
    if not p.is_file():
        raise FileNotFoundError(f"config file {str(p)!r} does not exist")
    try:
        data = tomllib.loads(p.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"config file {str(p)!r} is not valid TOML: {e}") from None
    settings = data.get("train", {}) if "model" in data else {}
    if not isinstance(settings, dict):
        raise ValueError(f"config file {str(p)!r}: [train] must be a table")
    unknown = sorted(set(settings) - set(TRAIN_DEFAULTS))
    if unknown:
        raise ValueError(f"config file {str(p)!r}: unknown [train] setting(s) {', '.join(unknown)}; valid settings are "
                         f"{', '.join(TRAIN_DEFAULTS)}")
    try:
        config = QELMConfig.from_dict(data["model"] if "model" in data else data)
    except TypeError as e:
        raise ValueError(f"config file {str(p)!r}: {e}") from None
    except ValueError as e:
        raise ValueError(f"config file {str(p)!r}: {e}") from None
    return config, dict(settings)


def _check_settings(s: dict[str, Any]) -> None:
    def bad(name: str, fix: str) -> None:
        raise ValueError(f"{name}={s[name]!r} is invalid: {fix}")

    for name in ("steps", "batch_size", "seed", "log_every"):
        if isinstance(s[name], bool) or not isinstance(s[name], int) or s[name] < (0 if name == "seed" else 1):
            bad(name, "use a non-negative integer" if name == "seed" else "use an integer >= 1")
    for name in ("eval_every", "save_every"):
        if s[name] is not None and (isinstance(s[name], bool) or not isinstance(s[name], int) or s[name] < 1):
            bad(name, "use an integer >= 1")
    if isinstance(s["lr"], bool) or not isinstance(s["lr"], (int, float)) or not s["lr"] > 0:
        bad("lr", "use a positive learning rate, e.g. 0.01")
    for name in ("grad_clip", "weight_decay"):
        if isinstance(s[name], bool) or not isinstance(s[name], (int, float)) or s[name] < 0:
            bad(name, "use a number >= 0 (0 turns it off)")
    for name in ("twin", "matched"):
        if not isinstance(s[name], bool):
            bad(name, "use true or false")


# --- distributed -------------------------------------------------------------------------------------------
def init_distributed(device: str = "cpu") -> tuple[int, int]:
    """Join the process group that ``torchrun`` describes in the environment (gloo on CPU, NCCL on CUDA)
    and return ``(rank, world_size)``; ``(0, 1)`` when not launched by torchrun."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return 0, 1
    if str(device).startswith("cuda"):
        local = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(local)
        dist.init_process_group(backend="nccl", device_id=local)  # one GPU per process
    else:
        dist.init_process_group(backend="gloo")
    return dist.get_rank(), dist.get_world_size()


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


def _dist() -> tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def _peak_memory_bytes(device: torch.device) -> int:
    """CUDA: the most memory torch has allocated on ``device``; CPU: the process's peak resident set."""
    if device.type == "cuda":
        return int(torch.cuda.max_memory_allocated(device))
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak if sys.platform == "darwin" else peak * 1024)  # Linux reports KiB, macOS bytes


# --- metrics -----------------------------------------------------------------------------------------------
def read_metrics(path: str | os.PathLike) -> list[dict[str, Any]]:
    """The records of a ``metrics.jsonl`` file (a torn last line, from a kill mid-write, is skipped)."""
    p = Path(path)
    if not p.is_file():
        return []
    records = []
    for line in p.read_text(encoding="utf-8").splitlines():
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return records


def _write_metrics(path: Path, records: list[dict[str, Any]]) -> None:
    atomic_write(path, "".join(json.dumps(r) + "\n" for r in records))


# --- results -----------------------------------------------------------------------------------------------
@dataclass
class ModelRun:
    """One trained model of a run and its measured figures."""

    name: str  # "qelm", "twin" or "matched"
    model: QELM  # QELM or ClassicalLM, in train mode, on the training device
    path: Path  # its checkpoint folder
    history: list[dict[str, Any]]  # metrics records, earlier (resumed) steps included; rank 0 only
    val: dict[str, float]  # final evaluate() on the validation split; empty on ranks other than 0
    steps_run: int  # optimizer steps taken in this call (fewer than the total after a resume)

    @property
    def losses(self) -> list[float]:
        return [r["loss"] for r in self.history]

    def figures(self) -> dict[str, Any]:
        """Parameter counts, validation loss/perplexity, throughput, memory: the summary.json entry."""
        secs = [r["step_seconds"] for r in self.history if "step_seconds" in r]
        tokens = sum(r["tokens"] for r in self.history if "step_seconds" in r)
        return {
            "class": type(self.model).__name__,
            "d_model": self.model.config.d_model,
            "d_hidden": self.model.config.d_hidden,
            "parameters": self.model.num_parameters(),
            "circuit_parameters": self.model.circuit_parameters(),
            "val_loss": self.val.get("loss"),
            "val_perplexity": self.val.get("perplexity"),
            "val_tokens": self.val.get("tokens"),
            "final_train_loss": self.history[-1]["loss"] if self.history else None,
            "tokens_per_s": tokens / sum(secs) if secs else None,  # over all logged steps
            "train_seconds": sum(secs),  # logged steps only: forward, backward, optimizer
            "peak_memory_bytes": max((r["peak_memory_bytes"] for r in self.history), default=None),
            "steps": self.history[-1]["step"] if self.history else 0,
        }


@dataclass
class TrainResult:
    """What :func:`train` returns. ``twin`` / ``matched`` are None when the run trains no twin / no
    parameter-matched model; ``summary`` is the content of ``summary.json`` (empty on ranks other than 0)."""

    out: Path
    qelm: ModelRun
    twin: ModelRun | None
    matched: ModelRun | None
    unigram: dict[str, float]
    dataset: TextDataset
    summary: dict[str, Any] = field(default_factory=dict)

    @property
    def winner(self) -> str | None:
        return self.summary.get("winner")

    @property
    def verdict(self) -> str:
        return self.summary.get("verdict", "")


_TIE = 1e-3  # perplexities whose logs differ by less than this (0.1%) are a tie
_NAMES = {"qelm": "the QELM", "twin": "the classical twin", "matched": "the parameter-matched classical model"}


def _verdict(figures: dict[str, dict[str, Any]], unigram: dict[str, float]) -> tuple[str | None, str]:
    """``(winner, verdict)`` from the measured validation perplexities. ``winner`` is the model with the
    lowest perplexity ("qelm", "twin" or "matched"), "tie" when the best two are within 0.1%, or None when
    only one model trained. ``verdict`` says plainly how the QELM compares with each classical model."""
    ppl = {n: f["val_perplexity"] for n, f in figures.items() if f.get("val_perplexity") is not None}
    params = {n: f["parameters"] for n, f in figures.items()}
    u = unigram["perplexity"]
    q = ppl.get("qelm")

    def same(a: float, b: float) -> bool:
        return abs(math.log(a) - math.log(b)) < _TIE

    parts: list[str] = []
    winner = None
    if len(ppl) > 1:
        ranked = sorted(ppl, key=ppl.get)
        best = ranked[0]
        if same(ppl[best], ppl[ranked[1]]):
            winner = "tie"
            tied = [n for n in ranked if same(ppl[n], ppl[best])]
            parts.append(f"a tie for best: {' and '.join(_NAMES[n] for n in tied)} reach validation perplexity "
                         f"{ppl[best]:.3f} (lower is better)")
        else:
            winner = best
            parts.append(f"{_NAMES[best]} won, with validation perplexity {ppl[best]:.3f} (lower is better)")
    elif q is not None:
        parts.append(f"the QELM reached validation perplexity {q:.3f} (no classical model trained)")

    outcome: dict[str, str] = {}  # baseline -> "beat" | "tied with" | "lost to", from the QELM's side
    if q is not None:
        for b in ("twin", "matched"):
            if b not in ppl:
                continue
            outcome[b] = "tied with" if same(q, ppl[b]) else "beat" if q < ppl[b] else "lost to"
            if b == "twin":
                who = f"its classical twin, which has {params[b] / params['qelm']:.2f}x its parameters"
            else:
                who = (f"the equally-sized classical model ({params[b]} parameters vs the QELM's "
                       f"{params['qelm']}, {100 * (params[b] / params['qelm'] - 1):+.1f}%)")
            parts.append(f"the QELM {outcome[b]} {who}: validation perplexity {q:.3f} vs {ppl[b]:.3f}")
    if "matched" in outcome:
        if outcome["matched"] == "lost to":
            parts.append("so at equal parameter count the classical model did better: on this run the circuits "
                         "were not worth their parameters")
        elif outcome["matched"] == "tied with":
            parts.append("so at equal parameter count the QELM and the classical model did equally well")
        elif outcome.get("twin", "beat") == "beat":
            parts.append("so the QELM did better than classical models of its own size and larger")
        else:
            parts.append("so the QELM did better than a classical model of its own size, but not than the larger twin")
    elif outcome.get("twin") == "lost to":
        parts.append("the twin is larger and no parameter-matched model was trained, so this does not tell size "
                     "from circuits")
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


def plot_loss_curves(histories: dict[str, list[dict[str, Any]]], path: str | os.PathLike,
                     unigram_loss: float | None = None, title: str | None = None) -> Path:
    """PNG of the training loss (and validation points) of each model against the step, with the
    unigram baseline as a horizontal line. Written atomically. Uses matplotlib's object API (no pyplot
    global state, no display)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(7, 4.2), dpi=120)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    colors = {"qelm": "tab:purple", "twin": "tab:orange", "matched": "tab:green"}
    for name, records in histories.items():
        if not records:
            continue
        steps = torch.tensor([r["step"] for r in records], dtype=torch.float64)
        loss = torch.tensor([r["loss"] for r in records], dtype=torch.float64)
        color = colors.get(name)
        ax.plot(steps, loss, color=color, alpha=0.25, linewidth=0.8)
        k = max(1, len(records) // 30)  # moving average over ~1/30 of the run
        if len(records) > k:
            smooth = torch.nn.functional.avg_pool1d(loss.view(1, 1, -1), k, stride=1).view(-1)
            ax.plot(steps[k - 1:], smooth, color=color, linewidth=1.8, label=f"{LABELS.get(name, name)} train")
        else:
            ax.lines[-1].set_label(f"{LABELS.get(name, name)} train")
        val = [(r["step"], r["val_loss"]) for r in records if "val_loss" in r]
        if val:
            vs, vl = zip(*val)
            ax.plot(vs, vl, "o--", color=color, markersize=4, linewidth=1, label=f"{LABELS.get(name, name)} validation")
    if unigram_loss is not None:
        ax.axhline(unigram_loss, color="grey", linestyle=":", label="unigram baseline (validation)")
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("cross-entropy (nats / token)")
    ax.set_title(title or "Training loss: QELM vs classical models")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    return Path(path)


# --- training ----------------------------------------------------------------------------------------------
def _resolve(explicit: dict[str, Any], file_settings: dict[str, Any], stored: dict[str, Any] | None) -> dict[str, Any]:
    """Settings by precedence: explicit argument > the resumed run's > the config file's [train] > defaults.
    On resume an explicit setting that would change the computed numbers must equal the stored one; the
    others (the total steps, how often to evaluate, save, log) may change."""
    settings = {**TRAIN_DEFAULTS, **file_settings}
    if stored is not None:
        for name in TRAIN_DEFAULTS:
            if name in stored:
                settings[name] = stored[name]
        for name in _FIXED_ON_RESUME:
            if explicit.get(name) is not None and name in stored and explicit[name] != stored[name]:
                raise ValueError(f"cannot resume with {name}={explicit[name]!r}: the run was trained with "
                                 f"{name}={stored[name]!r}; drop that option to resume exactly, or start a new run "
                                 f"in another --out")
    settings.update({k: v for k, v in explicit.items() if v is not None})
    return settings


def _stored_run(out: Path) -> tuple[dict[str, Any], Path] | None:
    """The run settings saved in a checkpoint of ``out``, and that checkpoint's folder."""
    for name in MODEL_NAMES:
        path = out / name / TRAINING_STATE
        if path.is_file():
            try:
                state = torch.load(path, map_location="cpu", weights_only=True)
            except Exception as e:  # many types: zip, pickle, runtime
                raise ValueError(f"checkpoint {str(out / name)!r} is corrupt: {TRAINING_STATE} cannot be read "
                                 f"({type(e).__name__})") from None
            if not isinstance(state, dict) or not isinstance(state.get("run"), dict):
                raise ValueError(f"checkpoint {str(out / name)!r} is corrupt: {TRAINING_STATE} holds no run settings")
            return state["run"], out / name
    return None


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


def train(config: QELMConfig | str | os.PathLike | None = None, data: str | os.PathLike | TextDataset | None = None, *,
          steps: int | None = None, batch_size: int | None = None, lr: float | None = None, seed: int | None = None,
          out: str | os.PathLike, backend: str | None = None, resume: bool = False, overwrite: bool = False,
          twin: bool | None = None, matched: bool | None = None, tokenizer: str | None = None,
          vocab_size: int | None = None, eval_every: int | None = None, save_every: int | None = None,
          log_every: int | None = None,
          grad_clip: float | None = None, weight_decay: float | None = None, device: str = "cpu",
          backend_options: dict[str, Any] | None = None, callback: Callback | None = None) -> TrainResult:
    """Train a QELM (and, unless ``twin=False``, its classical twin; unless ``matched=False``, the
    parameter-matched classical model) on ``data`` and write the run folder ``out`` (layout in the module
    docstring). Returns a :class:`TrainResult` with every measured figure.

    ``config``: a :class:`QELMConfig`, a TOML file (its ``[train]`` table gives defaults for the settings
    below) or ``None`` for the tiny demo config; ``vocab_size`` is always set from the tokenizer.
    ``data``: a UTF-8 text file or a :class:`TextDataset`; on resume it may be omitted (the run's file is
    reread and checked against the hash it was trained on). Settings left ``None`` come from the resumed
    run, the config file or :data:`TRAIN_DEFAULTS`. ``steps`` is the total number of optimizer steps.
    ``backend`` (+ ``backend_options``) runs the circuits on another simulator than the config names.
    ``callback(event, model_name, info)`` is called on rank 0 at "start", each logged "step" (``info`` is
    the metrics record) and "end" of each model (a progress bar hooks in here; this function never prints).
    """
    rank, world = _dist()
    out = Path(out)
    device = _check_device(device)
    explicit = {"steps": steps, "batch_size": batch_size, "lr": lr, "seed": seed, "twin": twin, "matched": matched,
                "tokenizer": tokenizer, "vocab_size": vocab_size, "eval_every": eval_every, "save_every": save_every,
                "log_every": log_every, "grad_clip": grad_clip, "weight_decay": weight_decay}
    file_settings: dict[str, Any] = {}
    if isinstance(config, QELMConfig) or (config is None and resume):
        model_config = config
    else:
        model_config, file_settings = load_run_config(config)

    stored = None
    if resume:
        found = _stored_run(out)
        if found is None:
            raise FileNotFoundError(f"nothing to resume in {str(out)!r}: no checkpoint with a training state there "
                                    f"(the run saved none yet, or this is not a run folder); train without resume")
        stored, stored_folder = found
        try:
            saved_config = QELMConfig.from_dict(stored["config"])  # the QELM's config (the twin's is all classical)
        except (KeyError, TypeError, ValueError) as e:
            raise ValueError(f"checkpoint {str(stored_folder)!r} is corrupt: its run settings hold no valid config "
                             f"({e})") from None
        if model_config is None:
            model_config = saved_config
        if data is None:
            data = stored.get("data")
            if not data or not Path(data).is_file():
                raise FileNotFoundError(f"the corpus this run was trained on ({data!r}) is gone: pass the same text with --data")
    elif data is None:
        raise ValueError("no corpus given: pass data (--data) with a UTF-8 text file")
    settings = _resolve(explicit, file_settings, stored)
    _check_settings(settings)
    if model_config is None:
        model_config = QELMConfig()

    # -- data --
    if isinstance(data, TextDataset):
        dataset = data
    else:
        tok = settings["tokenizer"]
        if resume:  # the run's own tokenizer, not a new one
            tok = load_tokenizer(stored_folder / TOKENIZER)
        dataset = TextDataset.from_file(data, tokenizer=tok,
                                        vocab_size=settings["vocab_size"] if isinstance(tok, str) else None)
    if resume and dataset.sha256 != stored.get("data_sha256"):
        raise ValueError(f"cannot resume on a different corpus: {dataset.source} (sha256 {dataset.sha256[:12]}...) is "
                         f"not the text the run was trained on ({stored.get('data')}, sha256 "
                         f"{str(stored.get('data_sha256'))[:12]}...)")
    config = model_config.replace(vocab_size=dataset.vocab_size)
    if backend is not None or backend_options:
        config = with_backend(config, backend, backend_options or {})
    if resume:
        differences = config_differences(saved_config, config)
        if differences:
            raise ValueError(f"cannot resume {str(out)!r} with a different model config ({'; '.join(differences)}; "
                             f"saved vs given): drop --config to resume, or start a new run in another --out")
    dataset.check_context(config.context_len)
    if config.uses_circuits:  # an unavailable backend fails now, not after the twin has trained
        get_backend(config.backend, shots=config.shots, **config.backend_options)
    configs = {"twin": config.classical(), "qelm": config}
    if settings["matched"]:  # before any training: a config no classical model can match fails now
        configs["matched"] = matched_config(config)
    if settings["batch_size"] % world:
        raise ValueError(f"batch_size={settings['batch_size']} does not split over {world} processes: use a multiple "
                         f"of {world}")

    # -- output folder (every rank checks, so that an error stops all of them rather than hanging some) --
    ensure_writable_dir(out)
    previous = [out / n / WEIGHTS for n in MODEL_NAMES] + [out / SUMMARY]
    if not resume and not overwrite and any(p.exists() for p in previous):
        raise ValueError(f"output folder {str(out)!r} already holds a training run: resume it (--resume), replace "
                         f"it (--overwrite), or choose another --out")
    if world > 1:
        dist.barrier()  # every rank has looked before rank 0 clears
    if rank == 0 and not resume:  # a new run: no file of an earlier one may be mistaken for this one's
        _clear_run(out)
    steps_total = settings["steps"]
    every = max(1, steps_total // 5)
    settings["eval_every"] = settings["eval_every"] or every
    settings["save_every"] = settings["save_every"] or every

    run_record = {name: settings[name] for name in TRAIN_DEFAULTS}
    run_record.update(data=str(Path(dataset.source).resolve()) if dataset.source != "<text>" else None,
                      data_sha256=dataset.sha256, config=config.to_dict())

    names = [n for n in MODEL_NAMES if n == "qelm" or settings[n]]
    runs: dict[str, ModelRun] = {}
    for name in names:
        runs[name] = _train_one(name, configs[name], dataset, settings, run_record, out / name, resume=resume,
                                device=device, callback=callback, rank=rank, world=world)

    unigram = unigram_baseline(dataset.train_ids, dataset.val_ids, dataset.vocab_size)
    result = TrainResult(out=out, qelm=runs["qelm"], twin=runs.get("twin"), matched=runs.get("matched"),
                         unigram=unigram, dataset=dataset)
    if rank == 0:
        result.summary = _summary(result, config, settings, world, device)
        atomic_write(out / SUMMARY, json.dumps(result.summary, indent=2) + "\n")
        shown = [n for n in ("qelm", "twin", "matched") if n in runs]
        baselines = " and ".join(LABELS[n] for n in shown[1:])
        plot_loss_curves({n: runs[n].history for n in shown}, out / LOSS_CURVE, unigram_loss=unigram["loss"],
                         title=f"QELM{' vs ' + baselines if baselines else ''}\n"
                               f"{dataset.vocab_size}-token {dataset.tokenizer.kind} corpus, "
                               f"batch {settings['batch_size']} x {config.context_len} tokens")
    if world > 1:
        dist.barrier()  # no rank returns before rank 0 has written the run folder
    return result


def _clear_run(out: Path) -> None:
    """Remove the files a run writes (and nothing else) from ``out``."""
    for path in [out / SUMMARY, out / LOSS_CURVE] + [out / n / f for n in MODEL_NAMES
                                                     for f in (WEIGHTS, CONFIG, TOKENIZER, TRAINING_STATE, METRICS)]:
        if path.is_file():
            path.unlink()


_MEMORY_METHOD = {
    "cuda": "torch.cuda.max_memory_allocated on the training GPU, reset when each model starts",
    "cpu": "peak resident set of the process (getrusage), which includes everything the process did before",
}


def _summary(result: TrainResult, config: QELMConfig, settings: dict[str, Any], world: int, device: str) -> dict[str, Any]:
    models = {name: run.figures() for name, run in (("qelm", result.qelm), ("twin", result.twin),
                                                    ("matched", result.matched)) if run is not None}
    winner, verdict = _verdict(models, result.unigram)
    ds = result.dataset
    return {
        "method": (f"validation: mean next-token cross-entropy (nats/token) over all {ds.val_ids.numel() - 1} tokens of the "
                   f"last {ds.val_fraction:.0%} of the corpus, non-overlapping windows of {config.context_len} tokens; "
                   f"perplexity = exp(loss). Unigram baseline: add-one smoothed token frequencies of the training split, "
                   f"scored on the same tokens. tokens_per_s: training tokens (global batch x context) per second of "
                   f"forward + backward + optimizer step, over the logged steps. peak_memory_bytes: "
                   f"{_MEMORY_METHOD['cuda' if str(device).startswith('cuda') else 'cpu']}. Every model starts from "
                   f"seed {settings['seed']} and trains on the same batches for the same steps at the same lr. "
                   + _baselines_method(models)),
        "winner": winner,
        "verdict": verdict,
        "models": models,
        "unigram": {"val_loss": result.unigram["loss"], "val_perplexity": result.unigram["perplexity"],
                    "val_tokens": result.unigram["tokens"]},
        "data": {"source": ds.source, "sha256": ds.sha256, "chars": ds.chars, "tokenizer": ds.tokenizer.kind,
                 "vocab_size": ds.vocab_size, "train_tokens": int(ds.train_ids.numel()),
                 "val_tokens": int(ds.val_ids.numel()), "val_fraction": ds.val_fraction},
        "run": {"steps": settings["steps"], "batch_size": settings["batch_size"], "context_len": config.context_len,
                "lr": settings["lr"], "seed": settings["seed"], "grad_clip": settings["grad_clip"],
                "weight_decay": settings["weight_decay"], "optimizer": "AdamW", "world_size": world, "device": str(device),
                "backend": config.backend, "shots": config.shots, "torch_threads": torch.get_num_threads()},
        "config": config.to_dict(),
    }


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


def _train_one(name: str, config: QELMConfig, dataset: TextDataset, settings: dict[str, Any], run_record: dict[str, Any],
               folder: Path, *, resume: bool, device: torch.device, callback: Callback | None, rank: int,
               world: int) -> ModelRun:
    """Train one model of the run (fresh, or from its checkpoint in ``folder``); see :func:`train`."""
    steps, T = settings["steps"], config.context_len
    if world > 1 and device.type == "cuda":
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    cls = QELM if name == "qelm" else ClassicalLM  # config: the model's own (the matched model's is shrunk)
    sampler = BatchSampler(dataset.train_ids, T, settings["batch_size"], settings["seed"], rank, world)
    start = 0
    history: list[dict[str, Any]] = []
    metrics_path = folder / METRICS
    if resume and (folder / TRAINING_STATE).is_file():
        ck = load_checkpoint(folder, backend=config.backend, shots=config.shots, **config.backend_options)
        kind = "qelm" if cls is QELM else "classical"
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
        if start > steps:
            raise ValueError(f"the {LABELS[name]} in {str(folder)!r} already took {start} steps, more than steps={steps}: "
                             f"steps is the total, so pass at least {start}")
        optimizer = _optimizer(model, settings)
        optimizer.load_state_dict(state["optimizer"])
        sampler.load_state_dict(state["sampler"])
        torch.set_rng_state(state["torch_rng"])
        if rank == 0:  # steps logged after the checkpoint (before a kill) are run again: drop them
            history = [r for r in read_metrics(metrics_path) if r["step"] <= start]
            _write_metrics(metrics_path, history)
    else:
        torch.manual_seed(settings["seed"])
        model = cls(config).to(device).train()
        optimizer = _optimizer(model, settings)
        if rank == 0:
            ensure_writable_dir(folder)
            _write_metrics(metrics_path, [])
    net = model
    if world > 1:
        from torch.nn.parallel import DistributedDataParallel

        net = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)

    tokens_per_step = settings["batch_size"] * T  # global
    if rank == 0 and callback:
        callback("start", name, {"step": start, "steps": steps, "tokens_per_step": tokens_per_step})

    def save(step: int) -> None:
        state = {"step": step, "optimizer": optimizer.state_dict(), "sampler": sampler.state_dict(),
                 "torch_rng": torch.get_rng_state(), "run": run_record}
        save_checkpoint(folder, model, dataset.tokenizer, training_state=state)

    val: dict[str, float] = {}
    metrics_file = open(metrics_path, "a", encoding="utf-8") if rank == 0 else None
    try:
        for step in range(start + 1, steps + 1):
            t0 = time.perf_counter()
            x, y = sampler.next()  # this rank's slice: (b, T) each
            _, loss = net(x.to(device), y.to(device))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if settings["grad_clip"]:
                torch.nn.utils.clip_grad_norm_(model.parameters(), settings["grad_clip"])
            optimizer.step()
            loss_value = loss.detach()
            if world > 1:
                dist.all_reduce(loss_value)  # mean of equal slices = the global-batch mean
                loss_value /= world
            loss_value = float(loss_value)
            dt = time.perf_counter() - t0
            if not math.isfinite(loss_value):
                raise FloatingPointError(f"the {LABELS[name]}'s training loss became {loss_value} at step {step}: "
                                         f"lower the learning rate (lr={settings['lr']})")
            is_eval = step % settings["eval_every"] == 0 or step == steps
            if rank != 0:
                continue
            record = {"step": step, "loss": loss_value, "perplexity": math.exp(min(loss_value, 700.0)),
                      "tokens_per_s": tokens_per_step / dt, "peak_memory_bytes": _peak_memory_bytes(device),
                      "tokens": tokens_per_step, "step_seconds": dt}
            if is_eval:
                val = evaluate(model, dataset.val_ids, batch_size=max(64, settings["batch_size"]), context_len=T)
                record.update(val_loss=val["loss"], val_perplexity=val["perplexity"])
            if is_eval or step % settings["log_every"] == 0:
                history.append(record)
                metrics_file.write(json.dumps(record) + "\n")
                metrics_file.flush()
                if callback:
                    callback("step", name, record)
            if step % settings["save_every"] == 0 or step == steps:
                save(step)
    finally:
        if metrics_file is not None:
            metrics_file.close()
    if rank == 0:
        if not val:  # nothing left to run (resumed a finished model): measure it now
            val = evaluate(model, dataset.val_ids, batch_size=max(64, settings["batch_size"]), context_len=T)
        if callback:
            callback("end", name, {"val": val})
    return ModelRun(name=name, model=model, path=folder, history=history, val=val, steps_run=steps - start)


def _optimizer(model: torch.nn.Module, settings: dict[str, Any]) -> torch.optim.Optimizer:
    return torch.optim.AdamW(model.parameters(), lr=settings["lr"], weight_decay=settings["weight_decay"])


