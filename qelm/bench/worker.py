"""One measurement, run inside a worker process: build the model a spec describes, time its inference,
training or generation iterations within a budget, and record the peak memory they added and the share
of time spent in the circuit simulator."""

from __future__ import annotations

import contextlib
import gc
import platform
import resource
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from ..backends import BackendSpec
from ..circuits import import_circuits
from ..config import QELMConfig
from ..decode import compile_model, static_reason
from ..model import QELM, ClassicalLM
from .settings import TWIN_BACKEND

__all__ = ["measure"]


def _proc_status_kib(key: str) -> int | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return None


class _PeakMemory:
    """Peak memory added while the ``with`` block runs, in bytes (see the module docstring)."""

    def __init__(self, device: str) -> None:
        self.device = device
        self.peak_bytes: int | None = None
        self.baseline_bytes = 0  # set on entering
        self.file_growth_bytes: int | None = None
        self.peak_rss_bytes: int | None = None
        self.method = ""

    def __enter__(self) -> _PeakMemory:
        gc.collect()
        if self.device == "cuda":
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            self.baseline_bytes = torch.cuda.memory_allocated()
            self.method = "torch.cuda.max_memory_allocated minus memory_allocated at the start"
            return self
        rss = _proc_status_kib("VmRSS")
        self._file_start = _proc_status_kib("RssFile")
        try:
            with open("/proc/self/clear_refs", "w") as f:  # "5": reset VmHWM to the current RSS (Linux >= 4.0)
                f.write("5")
            self._hwm = True
            self.method = ("peak RSS (Linux VmHWM, reset via /proc/self/clear_refs) minus RSS at the start, minus the "
                           "growth of file-backed RSS (library code pages first touched)")
        except OSError:  # not Linux, or not allowed: ru_maxrss is monotone, so this can under-count
            self._hwm = False
            self._maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
            self.method = "growth of ru_maxrss (monotone: a lower bound)"
        self.baseline_bytes = (rss or 0) * 1024
        return self

    def __exit__(self, *exc) -> None:
        if self.device == "cuda":
            torch.cuda.synchronize()
            self.peak_bytes = torch.cuda.max_memory_allocated() - self.baseline_bytes
            self.peak_rss_bytes = None
        elif self._hwm:
            self.peak_rss_bytes = (_proc_status_kib("VmHWM") or 0) * 1024 - self.baseline_bytes
            self.peak_bytes = self.peak_rss_bytes
            if self._file_start is not None:
                # RSS also counts file-backed pages: library code first touched by this run (~15-20 MB of
                # torch kernels whatever the model). They are loaded in the warm-up, before the peak, so
                # subtracting their growth leaves the peak of the memory the run allocated.
                self.file_growth_bytes = ((_proc_status_kib("RssFile") or 0) - self._file_start) * 1024
                self.peak_bytes = max(0, self.peak_rss_bytes - self.file_growth_bytes)
        else:
            scale = 1 if platform.system() == "Darwin" else 1024  # bytes on macOS, KiB on Linux
            self.peak_bytes = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - self._maxrss) * scale
            self.peak_rss_bytes = self.peak_bytes


class _CircuitClock:
    """Seconds spent inside the backend's circuit executions (forward only): an observer of
    :meth:`qelm.backends.Backend.run` for the life of the ``with`` block."""

    def __init__(self, backend, device: str) -> None:
        self.backend, self.device, self.seconds, self.on = backend, device, 0.0, False
        self._start = 0.0

    def before(self, circuit, kind) -> None:
        if self.on:
            _sync(self.device)
            self._start = time.perf_counter()

    def after(self, circuit, kind, executions, out) -> None:
        if self.on:
            _sync(self.device)
            self.seconds += time.perf_counter() - self._start

    def __enter__(self) -> _CircuitClock:
        self._observing = self.backend.observe(self)
        self._observing.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        self._observing.__exit__(*exc)


def _sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def _quartiles(times: list[float]) -> tuple[float, float]:
    if len(times) == 1:
        return times[0], times[0]
    q = statistics.quantiles(times, n=4, method="inclusive")
    return q[0], q[2]


class _Generation:
    """A timed generation with the KV cache (static where graphs apply); :meth:`without_cache` re-reads the
    window at every step, :meth:`dynamic` runs the growing cache eagerly, and ``same_tokens(a, b)`` says
    whether two of them give the same tokens from one seed."""

    def __init__(self, generate: Callable[..., Any], same_tokens: Callable[..., bool]) -> None:
        self._generate, self.same_tokens = generate, same_tokens

    def __call__(self) -> Any:
        return self._generate()

    def without_cache(self) -> Any:
        return self._generate(False)

    def dynamic(self) -> Any:
        return self._generate(True, implementation="dynamic")


def _workload(spec: dict[str, Any]):
    """``(model, step, warm)``: the model ``spec`` describes, built and seeded, the timed iteration of its
    mode and the untimed warm-up iteration (generation warms up with one new token)."""
    device, mode, B = spec["device"], spec["mode"], spec["batch"]
    config = QELMConfig.from_dict(spec["config"])
    T = config.context_len
    torch.manual_seed(spec["seed"])
    runtime = BackendSpec.from_fields(spec.get("runtime", {}))
    model = (QELM(config, runtime) if spec["model"] == "qelm" else ClassicalLM(config)).to(device)
    model.cuda_graphs = spec.get("cuda_graphs", True)
    if spec.get("compile"):
        compile_model(model)
    gen = torch.Generator(device=device).manual_seed(spec["seed"])
    idx = torch.randint(0, config.vocab_size, (B, T), generator=gen, device=device)  # (B, T)
    targets = torch.randint(0, config.vocab_size, (B, T), generator=gen, device=device)  # (B, T)
    if mode == "training":
        model.train()
        opt = torch.optim.AdamW(model.parameters(), lr=spec["lr"])

        def step() -> None:
            opt.zero_grad(set_to_none=True)
            _, loss = model(idx, targets)
            loss.backward()
            opt.step()

        return model, step, step
    model.eval()
    if mode == "inference":

        def forward() -> None:
            with torch.no_grad():
                model(idx)

        return model, forward, forward

    # the prompt leaves room for the new tokens: the KV cache is exact within one context window (positions
    # are absolute), so this is where it can be compared with re-reading the window at every step
    prompt = idx[:, : max(1, T - spec["gen_tokens"])]

    def generate(use_cache: bool = True, generator=gen, implementation: str | None = None):
        return model.generate(prompt, spec["gen_tokens"], generator=generator, use_cache=use_cache,
                              cache_implementation=implementation)

    def warm() -> None:  # two new tokens: the same prompt and sampling path, a decode step recorded
        model.generate(prompt, min(2, spec["gen_tokens"]), generator=gen)

    def same_tokens(*ways: dict) -> bool:  # the same seed gives the same tokens either way
        seeded = [torch.Generator(device=device).manual_seed(spec["seed"]) for _ in ways]
        return bool(torch.equal(*(generate(generator=g, **way) for g, way in zip(seeded, ways, strict=True))))

    return model, _Generation(generate, same_tokens), warm


def _timed_runs(spec: dict[str, Any], step, warm, clock: _CircuitClock | None) -> tuple[list[float], _PeakMemory]:
    """Warm up, then time up to ``repeats`` runs of ``step`` within the budget; the memory they took."""
    device = spec["device"]
    times: list[float] = []
    budget = spec.get("budget_s")
    begin = time.perf_counter()
    with _PeakMemory(device) as memory, clock or contextlib.nullcontext():
        for _ in range(spec["warmup"]):
            warm()
        if clock is not None:
            clock.on = True  # circuit time of the timed runs only
        for _ in range(spec["repeats"]):
            _sync(device)
            t = time.perf_counter()
            step()
            _sync(device)
            times.append(time.perf_counter() - t)
            # stay within the budget: stop when one more run would pass it (at least one run is kept)
            if budget is not None and time.perf_counter() - begin + statistics.median(times) > budget:
                break
    return times, memory


def _graphed(spec: dict[str, Any]) -> bool:
    """Whether the measurement replays recorded CUDA graphs (inference and generation on CUDA, unless off)."""
    return spec["device"] == "cuda" and spec.get("cuda_graphs", True) and spec["mode"] != "training"


def measure(spec: dict[str, Any]) -> dict[str, Any]:
    """Run one measurement described by ``spec`` (keys: ``config`` (a QELMConfig dict), ``model``
    ("qelm" or "twin"), ``mode``, ``batch``, ``repeats``, ``warmup``, ``gen_tokens``, ``device``, ``seed``,
    ``lr``; optional ``threads`` (0: torch's default), ``budget_s``, ``cuda_graphs`` and ``compile``) in this
    process and return its measured fields; optional ``imports``: what :func:`qelm.circuits.import_circuits`
    imports first (circuits of your own). Errors propagate. :func:`~qelm.bench.run_benchmark` calls it in a fresh process per
    measurement."""
    for given in spec.get("imports", ()):
        import_circuits(given)
    if spec.get("threads"):
        torch.set_num_threads(spec["threads"])
    model, step, warm = _workload(spec)
    backend = model.backend if spec["model"] == "qelm" else None
    # recorded graphs replay where they apply; a clock on the circuit calls would stop them (it reads the time
    # per call), so with graphs the circuit share comes from the eager runs measured beside them
    graphed = _graphed(spec)
    clocked = backend is not None and spec["mode"] == "inference"
    clock = _CircuitClock(backend, spec["device"]) if clocked and not graphed else None
    times, memory = _timed_runs(spec, step, warm, clock)
    extra: dict[str, Any] = {"cuda_graphs": graphed}
    if graphed:  # the same measurement with every call eager: what the graphs save
        model.cuda_graphs = False
        clock = _CircuitClock(backend, spec["device"]) if clocked else None
        eager_step = step.dynamic if isinstance(step, _Generation) else step
        eager, _ = _timed_runs({**spec, "warmup": 1}, eager_step, eager_step, clock)
        model.cuda_graphs = True
        tokens = spec["batch"] * (spec["gen_tokens"] if spec["mode"] == "generation" else model.config.context_len)
        extra |= {"eager_median_s": statistics.median(eager), "eager_times_s": eager,
                  "eager_tokens_per_s": tokens / statistics.median(eager)}
        times_for_clock = eager
    else:
        times_for_clock = times
    if spec["mode"] == "generation":  # the same generation re-reading the window at every step
        assert isinstance(step, _Generation)
        plain, _ = _timed_runs({**spec, "warmup": 1}, step.without_cache, step.without_cache, None)
        extra |= {"no_cache_median_s": statistics.median(plain), "no_cache_times_s": plain,
                  "no_cache_tokens_per_s": spec["batch"] * spec["gen_tokens"] / statistics.median(plain),
                  "cache_same_tokens": step.same_tokens({}, {"use_cache": False}),
                  "static_same_tokens": None if static_reason(model.config) else
                  step.same_tokens({"implementation": "static"}, {"implementation": "dynamic"})}
    q25, q75 = _quartiles(times)
    median = statistics.median(times)
    tokens = spec["batch"] * (spec["gen_tokens"] if spec["mode"] == "generation" else model.config.context_len)
    return {
        "status": "ok",
        "repeats": len(times),
        "times_s": times,
        "median_s": median,
        "q25_s": q25,
        "q75_s": q75,
        "min_s": min(times),
        "max_s": max(times),
        "tokens_per_s": tokens / median,
        "seconds_per_token": median / tokens,
        "peak_memory_bytes": memory.peak_bytes,
        "memory_baseline_bytes": memory.baseline_bytes,
        "memory_method": memory.method,
        "peak_rss_bytes": memory.peak_rss_bytes,
        "rss_file_growth_bytes": memory.file_growth_bytes,
        "circuit_time_fraction": (clock.seconds / sum(times_for_clock)) if clock is not None else None,
        "n_parameters": model.num_parameters(),
        "circuit_parameters": model.circuit_parameters(),
        "backend_described": backend.describe() if backend is not None else TWIN_BACKEND,
        "threads": torch.get_num_threads(),
        **extra,
    }
