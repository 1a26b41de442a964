"""One intra-op thread for ``qelm.fused``'s CPU calls, forward and backward, unless the caller asks otherwise.

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
"""

from __future__ import annotations

import contextlib
import threading

import torch

__all__ = ["limited"]

_state = threading.local()  # the caller's thread count while a backward pass runs limited, else absent


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
    limit = threads or 0

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
