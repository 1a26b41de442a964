"""CUDA-graph replay of a backend's forward + backward, for calls whose batch shape repeats.

On CUDA a default.qubit execution of a small circuit is bound by the host: PennyLane builds a tape, runs
its transforms and launches about a thousand small kernels per forward + backward, which costs tens of
milliseconds of Python whatever the batch (``benchmarks/backends.py --cuda-batch`` measures both). A CUDA
graph records those kernels once and replays them with one launch. ``torch.cuda.make_graphed_callables``
does the recording, forward and backward; this module only decides when a recorded graph may be replayed.

A replay writes into the graph's own static buffers, so a graph whose previous output has not yet been
through its backward pass must not be replayed (its saved activations would be overwritten). Each call
therefore takes a *free* graph from a small pool per (circuit, shape, dtype, device); a graph is busy from
its forward replay until the gradient reaches its output or its autograd node is freed. When every graph
of the pool is busy and the pool is full, or recording fails, the call runs eagerly: results are the same,
only slower. Outputs are cloned, so a caller never sees its tensor change under a later replay.
"""

from __future__ import annotations

import warnings
import weakref
from collections.abc import Callable, Hashable

import torch

__all__ = ["GraphPool"]


class _Slot:
    __slots__ = ("busy", "fn")

    def __init__(self, fn: Callable[..., torch.Tensor]) -> None:
        self.fn = fn
        self.busy = False

    def release(self, *_: object) -> None:
        self.busy = False


class GraphPool:
    """Replays recorded CUDA graphs of ``fn(*tensors)`` (forward and backward) for repeated shapes.

    ``fn`` must be a pure function of its tensors on CUDA with no host synchronisation inside (default.qubit
    with backprop is: its zero state and measurement signs are cached on the device; so is qelm.fused once
    its plan's constants are on the device, which the recorder's warm-up runs make sure of).
    """

    def __init__(self, per_key: int = 8, total: int = 64, record=None) -> None:
        # ``record(fn, (sample,))`` returns the replaying callable; tests pass a CPU stand-in
        self.record = record or torch.cuda.make_graphed_callables
        self.per_key = per_key  # graphs alive at once for one key: one per call made before a backward
        self.total = total  # bound on all recorded graphs (each holds its own activation buffers)
        self._slots: dict[Hashable, list[_Slot]] = {}
        self._failed: set[Hashable] = set()
        self.replays = 0
        self.eager_calls = 0

    @staticmethod
    def applies(*tensors: torch.Tensor) -> bool:
        """Graphs are recorded for CUDA calls that will be differentiated (training steps)."""
        return (all(t.is_cuda for t in tensors) and any(t.requires_grad for t in tensors)
                and torch.is_grad_enabled() and not torch.cuda.is_current_stream_capturing())

    def __call__(self, key: Hashable, fn: Callable[..., torch.Tensor], *tensors: torch.Tensor) -> torch.Tensor:
        key = (key,) + tuple((tuple(t.shape), t.dtype, t.device, t.requires_grad) for t in tensors)
        slot = self._free_slot(key, fn, tensors)
        if slot is None:
            self.eager_calls += 1
            return fn(*tensors)
        out = slot.fn(*tensors)
        slot.busy = True
        out.register_hook(lambda grad: slot.release())  # gradient reached it: backward replays now
        weakref.finalize(out.grad_fn, slot.release)  # or its graph was dropped without a backward pass
        self.replays += 1
        return out.clone()

    def _free_slot(self, key, fn, tensors) -> _Slot | None:
        slots = self._slots.setdefault(key, [])
        for slot in slots:
            if not slot.busy:
                return slot
        if key in self._failed or len(slots) >= self.per_key or self.n_graphs >= self.total:
            return None
        samples = tuple(t.detach().clone().requires_grad_(t.requires_grad) for t in tensors)
        try:
            graphed = self.record(fn, samples)
        except Exception as e:  # an op that syncs with the host cannot be recorded: stay eager for this key
            self._failed.add(key)
            warnings.warn(f"CUDA graph recording failed ({type(e).__name__}: {e}); running eagerly", stacklevel=3)
            return None
        slot = _Slot(graphed)
        slots.append(slot)
        return slot

    @property
    def n_graphs(self) -> int:
        return sum(len(s) for s in self._slots.values())
