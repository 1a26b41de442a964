"""CUDA-graph replay: of a backend's forward + backward, for training calls whose batch shape repeats
(:class:`GraphPool`), and of a whole no-grad call, a model's forward or one decode step (:class:`Replays`).

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

import contextlib
import threading
import warnings
import weakref
from collections import OrderedDict
from collections.abc import Callable, Hashable

import torch

__all__ = ["GraphPool", "Replays", "record_graph", "capturing", "fixed_weights", "fixed_store"]


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
        return (not torch.compiler.is_compiling() and all(t.is_cuda for t in tensors)
                and any(t.requires_grad for t in tensors) and torch.is_grad_enabled()
                and not torch.cuda.is_current_stream_capturing())

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


_recording = threading.local()  # on while record_graph warms up and captures


_fixed = threading.local()  # the store of fixed_weights while its block runs


@contextlib.contextmanager
def fixed_weights(store: dict):
    """Within the block, the caller promises that the weights will not change while what it records is in
    use, so a backend may keep what it derives from them (``qelm.fused``: its blocks' matrices) in ``store``
    and reuse it without reading the weights again, also while a CUDA graph records. A recorded decode step
    then applies the matrices instead of rebuilding them every token. ``store`` must live as long as the
    recording (its tensors are read by address); whoever keeps the recording checks that the weights are
    the same before replaying it (:func:`qelm.decode.decoder_for` keys it by their versions)."""
    held = getattr(_fixed, "store", None)
    _fixed.store = store
    try:
        yield
    finally:
        _fixed.store = held


def fixed_store() -> dict | None:
    """The store of the :func:`fixed_weights` block running now, or None."""
    return getattr(_fixed, "store", None)


def capturing(device: torch.device) -> bool:
    """Whether a call on ``device`` is being recorded into a CUDA graph, its warm-up runs included: then no
    op may read a tensor on the host and no shape may depend on values, so code takes its fixed-shape path
    (the warm-up takes it too, so that what it builds lazily is what the recorded run uses)."""
    if device.type != "cuda" or torch.compiler.is_compiling():  # the compiler traces fixed shapes itself
        return False
    return getattr(_recording, "on", False) or torch.cuda.is_current_stream_capturing()


@contextlib.contextmanager
def _recording_on():
    held = getattr(_recording, "on", False)
    _recording.on = True
    try:
        yield
    finally:
        _recording.on = held


def record_graph(fn: Callable[..., torch.Tensor], inputs: tuple[torch.Tensor, ...],
                 warmup: int = 2) -> Callable[..., torch.Tensor]:
    """Record ``fn(*inputs)`` (no autograd) into a ``torch.cuda.CUDAGraph`` and return ``replay(*args)``: it
    copies ``args`` into the graph's static inputs, replays, and returns the graph's static output (the same
    tensor every time: a caller clones what it keeps). ``warmup`` eager runs on a side stream first fill the
    caches a call builds lazily (plans, constants, cuBLAS workspaces), as torch's docs ask; they and the
    recorded run see :func:`capturing` true."""
    static = tuple(t.clone() for t in inputs)
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with _recording_on():
        with torch.cuda.stream(side):
            for _ in range(warmup):
                fn(*static)
        torch.cuda.current_stream().wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            out = fn(*static)

    def replay(*args: torch.Tensor) -> torch.Tensor:
        for buffer, a in zip(static, args, strict=True):
            buffer.copy_(a)
        graph.replay()
        return out

    replay.graph = graph  # type: ignore[attr-defined]  # kept alive with the callable
    return replay


class Replays:
    """Recorded no-grad calls, one per key (the caller's key: shapes, dtypes, device, the weights' addresses),
    at most ``size`` alive, the least recently used dropped first (each holds its own memory).

    ``__call__(key, fn, *tensors)`` replays the graph recorded for ``key`` (recording it on the first call),
    or runs ``fn`` eagerly where recording failed: an op that reads a tensor on the host, a shape that
    depends on values, or anything else ``torch.cuda.graph`` refuses. The first failure warns once, naming
    the cause; that key then stays eager. The result is the same either way, only the speed differs.
    Outputs are cloned (``clone=True``) so a caller never sees them change under a later replay.

    Args:
        size: recorded calls kept.
        record: ``record(fn, tensors)`` -> a replaying callable (default :func:`record_graph`); tests pass a
            CPU stand-in, or one that raises.
    """

    def __init__(self, size: int = 4, record: Callable | None = None) -> None:
        self.size = size
        self.record = record or record_graph
        self._held: OrderedDict[Hashable, Callable] = OrderedDict()
        self._failed: set[Hashable] = set()
        self.warned = False
        self.replays = 0
        self.eager_calls = 0

    def __call__(self, key: Hashable, fn: Callable[..., torch.Tensor], *tensors: torch.Tensor,
                 clone: bool = True) -> torch.Tensor:
        replay = self._held.get(key)
        if replay is None and key not in self._failed:
            replay = self._recorded(key, fn, tensors)
        if replay is None:
            self.eager_calls += 1
            return fn(*tensors)
        self._held.move_to_end(key)
        self.replays += 1
        out = replay(*tensors)
        return out.clone() if clone else out

    def _recorded(self, key: Hashable, fn: Callable, tensors: tuple[torch.Tensor, ...]) -> Callable | None:
        replay = self.attempt(fn, tensors)
        if replay is None:
            self._failed.add(key)
            return None
        self._held[key] = replay
        while len(self._held) > self.size:
            self._held.popitem(last=False)
        return replay

    def attempt(self, fn: Callable, tensors: tuple[torch.Tensor, ...]) -> Callable | None:
        """Record ``fn(*tensors)`` and return its replaying callable, not kept here (a caller that holds its
        own, as a decode step does); None where recording failed, with this pool's one warning."""
        try:
            return self.record(fn, tensors)
        except Exception as e:  # recording refused: eager, one warning for this pool
            if not self.warned:
                self.warned = True
                cause = str(e).strip().splitlines()[0][:300] if str(e).strip() else ""
                warnings.warn(f"CUDA graph recording failed ({type(e).__name__}: {cause}); running eagerly "
                              f"(the same results, without the replay's speed)", stacklevel=4)
            return None

    def clear(self) -> None:
        """Drop every recorded call (their memory is freed once nothing else holds it)."""
        self._held.clear()
        self._failed.clear()

    def __len__(self) -> int:
        return len(self._held)

    def __deepcopy__(self, memo: dict) -> Replays:
        return Replays(self.size, None if self.record is record_graph else self.record)  # graphs stay behind

    def __getstate__(self) -> dict:
        return {"size": self.size}

    def __setstate__(self, state: dict) -> None:
        self.__init__(state["size"])  # type: ignore[misc]
