"""One intra-op thread for a model's CPU work (forward, backward, and the optimizer step over its parameters)
and ``qelm.fused``'s CPU calls, unless the caller asks otherwise.

A qelm circuit call is a few hundred small operations on states of ~10^4-10^5 numbers. torch splits every
operation above ~32k elements across its intra-op threads (OpenMP), and every split ends at a barrier:
when another process holds one of the cores, each barrier waits for a time slice of the scheduler. On a
loaded 2-core machine a QELM training step at T = 128, batch 8 took ~40 ms on one thread and 340-440 ms on
torch's default two (the twin: 4-8 ms against 19-66 ms); idle, a second thread gains little on states this
small. ``qelm`` on the command line has run on one thread by default for that reason; this gives a library
user who never calls ``torch.set_num_threads`` the same default, for the circuit calls only.

:func:`limited` sets the thread count for the forward call and leaves it as it was after. For the backward
pass, a hook on the call's output sets it again when the gradient reaches the circuit, and a callback of
the autograd engine puts the caller's count back when that backward pass ends (the circuit's backward and
everything upstream of it run on the limited count; what runs before, the loss and the layers after the
circuit, on the caller's).

Why the optimizer too: on a loaded 2-core machine the step of ``torch.optim.AdamW`` over a twin's parameters
took ~1 ms on one thread and 40-100 ms on two, although its tensors are tiny: ``sqrt`` and the other MKL
vector kernels split tensors from 2,048 elements, and each split waits at a barrier for the second thread's
time slice. :func:`guard_optimizers` registers torch's global optimizer step hooks once; they run a step on
the limit of the model whose parameters it updates (:func:`mark_parameters`), any optimizer, and leave
others alone.
"""

from __future__ import annotations

import contextlib
import threading

import torch

from ..errors import ConfigError

__all__ = ["limited", "check", "mark_parameters", "guard_optimizers"]

_state = threading.local()  # the caller's thread count while a backward pass runs limited, else absent


def check(threads, what: str = "cpu_threads") -> int | None:
    """``threads`` if it is a thread count (a positive int) or None (torch's own setting); else a
    :class:`~qelm.errors.ConfigError` in one line (``torch.set_num_threads(0)`` would fail later, mid-call)."""
    if threads is not None and (isinstance(threads, bool) or not isinstance(threads, int) or threads < 1):
        raise ConfigError(f"{what}={threads!r} is invalid: use a positive integer, or None for torch's own "
                          "setting (torch.set_num_threads)")
    return threads


#: the attribute a model sets on its parameters: its thread limit, read by the optimizer step hook
_MARK = "_qelm_cpu_threads"
_hooks: list = []


def mark_parameters(parameters, threads: int | None) -> None:
    """Tell :func:`guard_optimizers`' hook to step these parameters on ``threads`` (None: the caller's)."""
    for p in parameters:
        setattr(p, _MARK, threads)


def guard_optimizers() -> None:
    """Register (once per process) the global optimizer hooks that run a step on the limit its parameters
    carry: the first marked CPU parameter of its first group decides."""
    if _hooks:
        return

    def pre(optimizer, args, kwargs):
        limit = None
        for group in optimizer.param_groups:
            for p in group["params"]:
                if hasattr(p, _MARK):
                    limit = getattr(p, _MARK) if p.device.type == "cpu" else None
                    break
            else:
                continue
            break
        left = getattr(_state, "step", None)
        if left is not None:  # the last step raised before its post hook ran: give its threads back first
            torch.set_num_threads(left)
            _state.step = None
        held = torch.get_num_threads()
        if limit is not None and held > limit and not torch.compiler.is_compiling():
            _state.step = held
            torch.set_num_threads(limit)

    def post(optimizer, args, kwargs):
        held = getattr(_state, "step", None)
        if held is not None:
            torch.set_num_threads(held)
            _state.step = None

    from torch.optim.optimizer import register_optimizer_step_post_hook, register_optimizer_step_pre_hook
    _hooks.extend([register_optimizer_step_pre_hook(pre), register_optimizer_step_post_hook(post)])


def _restore() -> None:
    held = getattr(_state, "held", None)
    if held is not None:
        torch.set_num_threads(held)
        _state.held = None


def _limit_backward(threads: int):
    def hook(grad: torch.Tensor) -> torch.Tensor:
        if getattr(_state, "held", None) is None and torch.get_num_threads() > threads:
            _state.held = torch.get_num_threads()
            torch.set_num_threads(threads)
            torch.autograd.Variable._execution_engine.queue_callback(_restore)
        return grad
    return hook


@contextlib.contextmanager
def limited(threads: int | None, device: torch.device):
    """Run the block with at most ``threads`` intra-op threads on the CPU (None or another device: as is).
    ``out`` of the block, passed to the yielded function, gets the hook that limits its backward pass too."""
    limit = check(threads) or 0

    def mark(out: torch.Tensor) -> torch.Tensor:
        if active and out.requires_grad:
            out.register_hook(_limit_backward(limit))
        return out

    # under torch.compile the thread count is the caller's to set (dynamo cannot trace reading it)
    active = threads is not None and device.type == "cpu" and not torch.compiler.is_compiling()
    held = torch.get_num_threads() if active else 0
    active = active and held > limit
    if active:
        torch.set_num_threads(limit)
    try:
        yield mark
    finally:
        if active:
            torch.set_num_threads(held)
