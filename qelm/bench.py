"""Speed and memory of a QELM beside its classical twin, across sequence lengths, backends and qubit counts.

What is measured, per model (the QELM on each backend, and ``ClassicalLM`` at the same config), per
sequence length ``T`` (the config's ``context_len`` is set to ``T``) and per mode:

* ``inference``: one ``forward(idx)`` of a ``(batch, T)`` batch in eval mode under ``torch.no_grad``;
  tokens/s = ``batch * T / median``;
* ``training``: one optimizer step, ``forward(idx, targets)`` + ``loss.backward()`` + ``AdamW.step()``,
  really run; tokens/s = ``batch * T / median``;
* ``generation``: ``model.generate`` of ``gen_tokens`` new tokens after a ``T``-token prompt. The model has
  no KV cache, so every new token is a full forward over the last ``T`` tokens; tokens/s =
  ``batch * gen_tokens / median``.

Each measurement runs ``warmup`` untimed iterations, then up to ``repeats`` timed ones
(``time.perf_counter``; ``torch.cuda.synchronize`` before each clock read on CUDA), stopping early (at
least one timed run) when one more would pass the ``max_seconds`` budget; each row records how many ran.
The median, quartiles and min/max are kept. Each measurement uses one torch thread unless ``threads`` says
otherwise, and runs in a fresh process forked from a server that has only imported qelm (POSIX), so
allocator caches and lazily built state of one measurement never flatter or burden the next. Peak memory is, on the CPU, the
process's peak resident set (Linux ``VmHWM``, reset through ``/proc/self/clear_refs`` when the
measurement starts) minus its resident set at that moment, less the growth of file-backed pages (library
code first touched, the same ~15-20 MB for any model); so it counts what the warm-up and the timed runs
allocated on top of the built model. On CUDA it is ``torch.cuda.max_memory_allocated`` minus the
allocation at the start.

Sequence lengths run in increasing order. Before each one, the seconds per iteration and the peak memory
are predicted from a least-squares fit on log-log axes of the (up to three) lengths measured last, or from
an assumed ``T^1`` after a single one; a length whose warm-up plus one timed run is predicted to exceed
``max_seconds`` (or whose memory, 80% of the machine's) is not run but recorded as skipped, with the
prediction labelled "extrapolated, not measured". The qubit sweep does the same over qubit counts with an
exponential fit (``x2`` per qubit assumed after one point). A measurement still running at
``2 * max_seconds + 60`` seconds is killed and recorded as a timeout. A backend that fails records its
error; the run goes on.

The library returns results and never prints; ``qelm bench`` and ``benchmarks/speed.py`` print them.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import gc
import importlib.metadata
import io
import json
import math
import os
import platform
import select
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from .config import QELMConfig
from .files import atomic_write

__all__ = [
    "MODES",
    "EXTRAPOLATED",
    "BenchSettings",
    "BenchResult",
    "run_benchmark",
    "expected_rows",
    "measure",
    "fit_power_law",
    "machine_description",
    "format_table",
    "format_scaling",
    "write_json",
    "plot",
]

MODES = ("inference", "training", "generation")
#: the label every figure that was predicted rather than run carries
EXTRAPOLATED = "extrapolated, not measured"
TWIN_BACKEND = "torch"  # the twin runs no circuits: plain torch on the chosen device
_MEMORY_SHARE = 0.8  # a length predicted to need more than this share of the machine's memory is skipped
_SCHEMA = "qelm.bench/1"


# --- settings -----------------------------------------------------------------------------------------
@dataclass
class BenchSettings:
    """What to measure. ``quick()`` gives the reduced sweep that finishes in a few minutes on a laptop."""

    seq_lens: tuple[int, ...] = (128, 256, 512, 1024, 2048)  # sequence lengths (config.context_len per run)
    batch: int = 2  # sequences per forward / training step / generate call
    modes: tuple[str, ...] = MODES  # any of inference, training, generation
    backends: tuple[str, ...] = ()  # QELM backends; empty: the config's backend
    qubits: tuple[int, ...] = ()  # qubit-count sweep (n_qubits per circuit); empty: no sweep
    qubit_seq_len: int | None = None  # sequence length of the qubit sweep; None: the shortest of seq_lens
    repeats: int = 5  # timed iterations per measurement (after warm-up); fewer if the budget runs out
    warmup: int = 1  # untimed iterations first (compiles circuits, fills caches)
    gen_tokens: int = 8  # new tokens per generate call
    max_seconds: float = 120.0  # per-measurement budget: trims repeats; lengths predicted past it are skipped
    device: str = "cpu"  # "cpu" or "cuda"
    seed: int = 0  # weights, inputs and sampling
    lr: float = 1e-3  # AdamW learning rate of the training step
    twin: bool = True  # measure ClassicalLM at the same config beside the QELM
    # torch intra-op threads per measurement; 0: torch's default (one per core). 1 by default: with more,
    # OpenMP threads spin-waiting on a machine where other processes run stalled ~100 ms per forward here
    threads: int = 1

    @classmethod
    def quick(cls, **changes: Any) -> "BenchSettings":
        """Short sequences, batch 2, 3 repeats: the default config's table in well under 5 minutes."""
        base = dict(seq_lens=(16, 32, 64), batch=2, repeats=3, gen_tokens=4, max_seconds=30.0)
        base.update(changes)
        return cls(**base)

    def __post_init__(self) -> None:
        self.seq_lens = tuple(self.seq_lens)
        self.modes = tuple(self.modes)
        self.backends = tuple(self.backends)
        self.qubits = tuple(self.qubits)
        self.validate()

    def validate(self) -> None:
        def positive_ints(name: str, values: Sequence[int], allow_empty: bool = False) -> None:
            if not values and not allow_empty:
                raise ValueError(f"{name} is empty: give at least one integer >= 1")
            for v in values:
                if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                    raise ValueError(f"{name} value {v!r} is invalid: use integers >= 1")
            if len(set(values)) != len(values):
                raise ValueError(f"{name} {list(values)} has duplicates: list each value once")

        positive_ints("seq_lens", self.seq_lens)
        positive_ints("qubits", self.qubits, allow_empty=True)
        for name in ("batch", "repeats", "gen_tokens"):
            positive_ints(name, (getattr(self, name),))
        if isinstance(self.warmup, bool) or not isinstance(self.warmup, int) or self.warmup < 0:
            raise ValueError(f"warmup={self.warmup!r} is invalid: use an integer >= 0")
        if isinstance(self.threads, bool) or not isinstance(self.threads, int) or self.threads < 0:
            raise ValueError(f"threads={self.threads!r} is invalid: use an integer >= 1, or 0 for torch's default")
        if self.qubit_seq_len is not None:
            positive_ints("qubit_seq_len", (self.qubit_seq_len,))
        bad = [m for m in self.modes if m not in MODES]
        if bad or not self.modes:
            raise ValueError(f"mode(s) {bad or self.modes!r} invalid: choose from {', '.join(MODES)}")
        if not (isinstance(self.max_seconds, (int, float)) and self.max_seconds > 0):
            raise ValueError(f"max_seconds={self.max_seconds!r} is invalid: use a number of seconds > 0")
        if self.device not in ("cpu", "cuda"):
            raise ValueError(f"device {self.device!r} is invalid: use cpu or cuda")
        if self.device == "cuda" and not torch.cuda.is_available():
            raise ValueError("device 'cuda' was asked for but torch sees no CUDA GPU here: use device cpu")
        from .backends import BACKENDS

        for b in self.backends:
            if b not in BACKENDS:
                raise ValueError(f"unknown backend {b!r}: valid backends are {', '.join(sorted(BACKENDS))}")


# --- one measurement (runs inside a worker process) -------------------------------------------------
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
        self.baseline_bytes: int | None = None
        self.file_growth_bytes: int | None = None
        self.peak_rss_bytes: int | None = None
        self.method = ""

    def __enter__(self) -> "_PeakMemory":
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
            import resource

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
            import resource

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

    def __enter__(self) -> "_CircuitClock":
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


def measure(spec: dict[str, Any]) -> dict[str, Any]:
    """Run one measurement described by ``spec`` (keys: ``config`` (a QELMConfig dict), ``model``
    ("qelm" or "twin"), ``mode``, ``batch``, ``repeats``, ``warmup``, ``gen_tokens``, ``device``, ``seed``,
    ``lr``; optional ``threads`` (0: torch's default) and ``budget_s``) in this process and return its
    measured fields. Errors propagate. :func:`run_benchmark` calls it in a fresh process per measurement."""
    from .model import QELM, ClassicalLM

    device, mode, B = spec["device"], spec["mode"], spec["batch"]
    if spec.get("threads"):
        torch.set_num_threads(spec["threads"])
    config = QELMConfig.from_dict(spec["config"])
    T = config.context_len
    torch.manual_seed(spec["seed"])
    model = (QELM(config) if spec["model"] == "qelm" else ClassicalLM(config)).to(device)
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

        warm = step
    elif mode == "inference":
        model.eval()

        def step() -> None:
            with torch.no_grad():
                model(idx)

        warm = step
    else:
        model.eval()

        def step() -> None:
            model.generate(idx, spec["gen_tokens"], generator=gen)

        def warm() -> None:  # one new token: the same forward at T and the same sampling path
            model.generate(idx, 1, generator=gen)

    backend = model.backend if spec["model"] == "qelm" else None
    clock = _CircuitClock(backend, device) if backend is not None and mode == "inference" else None
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
    q25, q75 = _quartiles(times)
    median = statistics.median(times)
    tokens = B * (spec["gen_tokens"] if mode == "generation" else T)
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
        "circuit_time_fraction": (clock.seconds / sum(times)) if clock is not None else None,
        "n_parameters": model.num_parameters(),
        "circuit_parameters": model.circuit_parameters(),
        "backend_described": backend.describe() if backend is not None else TWIN_BACKEND,
        "threads": torch.get_num_threads(),
    }


# --- isolation: a fork server ------------------------------------------------------------------------
# Each measurement runs in a fresh process, so that one measurement's allocator caches, compiled circuits
# and peak memory never leak into the next. Starting Python and importing torch + PennyLane per
# measurement would cost seconds each, so one server process (``python -m qelm.bench``) imports them
# once and forks a child per measurement. The server never runs a torch operation itself, so its children
# start with no thread pool to inherit. Protocol: one JSON job per line on the server's stdin
# (``spec``, ``result`` path, ``timeout``); one JSON line back on its stdout when the child has finished
# or was killed at the timeout; the child writes its row to the ``result`` path.


def _child(spec: dict[str, Any], result_path: str) -> None:
    os.dup2(2, 1)  # anything a library prints must not reach the server's protocol stream
    try:
        row = measure(spec)
    except BaseException as e:  # a failing backend or config is a result, not a crash of the run
        row = {"status": "error", "error": f"{type(e).__name__}: {e}".strip()}
    atomic_write(result_path, json.dumps(row))


def _serve() -> None:
    """The server loop (runs as ``python -m qelm.bench``); returns when its stdin closes."""
    import pennylane  # noqa: F401  (imported once here, inherited by every child)
    import torch._dynamo  # noqa: F401  (the first optimizer imports it: ~1.5 s that is no part of a step)

    from . import model  # noqa: F401

    gc.collect()
    gc.freeze()  # the imported objects never need collecting: children's gc (and its page copies) skip them
    out = os.fdopen(os.dup(1), "w")
    for line in sys.stdin:
        job = json.loads(line)
        pid = os.fork()
        if pid == 0:
            try:
                _child(job["spec"], job["result"])
            finally:
                os._exit(0)
        out.write(json.dumps(_wait(pid, job["timeout"])) + "\n")
        out.flush()


def _wait(pid: int, timeout: float) -> dict[str, Any]:
    """Wait for child ``pid``; kill it at ``timeout`` seconds. Sleeps in ``select`` on a pidfd (Linux),
    so the server takes no CPU from the measurement; polls every 10 ms where pidfds do not exist."""
    deadline = time.monotonic() + timeout
    try:
        fd = os.pidfd_open(pid)
    except (AttributeError, OSError):
        fd = None
    try:
        while True:
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                return {"timed_out": False, "exit": os.waitstatus_to_exitcode(status)}
            left = deadline - time.monotonic()
            if left <= 0:
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
                return {"timed_out": True}
            if fd is not None:
                select.select([fd], [], [], left)
            else:
                time.sleep(min(left, 0.01))
    finally:
        if fd is not None:
            os.close(fd)


class _Server:
    """Parent side of the fork server (POSIX: it needs ``os.fork``)."""

    def __init__(self) -> None:
        self.proc: subprocess.Popen | None = None
        self.tmp = tempfile.TemporaryDirectory(prefix="qelm-bench-")
        self.stderr = open(Path(self.tmp.name) / "stderr.log", "w+b")
        self.count = 0

    def _start(self) -> subprocess.Popen:
        env = dict(os.environ)
        root = str(Path(__file__).resolve().parent.parent)  # so the server imports this very qelm
        env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
        return subprocess.Popen([sys.executable, "-m", "qelm.bench"], stdin=subprocess.PIPE,
                                stdout=subprocess.PIPE, stderr=self.stderr, env=env, text=True, bufsize=1)

    def measure(self, spec: dict[str, Any], timeout: float) -> dict[str, Any]:
        self.count += 1
        result = Path(self.tmp.name) / f"row{self.count}.json"
        start = time.perf_counter()
        if self.proc is None or self.proc.poll() is not None:
            self.proc = self._start()
        try:
            self.proc.stdin.write(json.dumps({"spec": spec, "result": str(result), "timeout": timeout}) + "\n")
            self.proc.stdin.flush()
            line = self.proc.stdout.readline()
        except (BrokenPipeError, OSError):
            line = ""
        reply = json.loads(line) if line.strip() else None
        if result.exists():
            row = json.loads(result.read_text())
        elif reply is not None and reply["timed_out"]:
            row = {"status": f"timeout: killed after {timeout:.0f} s", "error": None}
        else:
            code = reply["exit"] if reply else (self.proc.poll() if self.proc else None)
            row = {"status": "error", "error": f"the measurement process died (exit code {code}): "
                                               f"{self._last_stderr_line()}"}
        row["wall_s"] = time.perf_counter() - start  # server start (first call), fork, build, measure
        return row

    def _last_stderr_line(self) -> str:
        self.stderr.flush()
        self.stderr.seek(0)
        lines = [ln for ln in self.stderr.read().decode(errors="replace").splitlines() if ln.strip()]
        self.stderr.seek(0, os.SEEK_END)
        return lines[-1].strip() if lines else "no message"

    def close(self) -> None:
        if self.proc is not None:
            try:
                self.proc.stdin.close()
                self.proc.wait(timeout=30)
            except (OSError, subprocess.TimeoutExpired):
                self.proc.kill()
                self.proc.wait()
        self.stderr.close()
        self.tmp.cleanup()

    def __enter__(self) -> "_Server":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


# --- fits and extrapolation ---------------------------------------------------------------------------
def fit_power_law(xs: Sequence[float], ys: Sequence[float]) -> dict[str, float] | None:
    """Least squares of ``log y = log a + k log x``: ``{"exponent": k, "prefactor": a, "r2": ...}``, or
    None with fewer than two distinct x. ``y ~ a * x**k``."""
    pts = [(math.log(x), math.log(y)) for x, y in zip(xs, ys) if x > 0 and y > 0]
    if len({p[0] for p in pts}) < 2:
        return None
    n = len(pts)
    mx = sum(p[0] for p in pts) / n
    my = sum(p[1] for p in pts) / n
    sxx = sum((p[0] - mx) ** 2 for p in pts)
    k = sum((p[0] - mx) * (p[1] - my) for p in pts) / sxx
    b = my - k * mx
    ss_tot = sum((p[1] - my) ** 2 for p in pts)
    ss_res = sum((p[1] - (b + k * p[0])) ** 2 for p in pts)
    return {"exponent": k, "prefactor": math.exp(b), "r2": 1.0 - ss_res / ss_tot if ss_tot > 0 else 1.0}


def _predict(fit: dict[str, float], x: float) -> float:
    return fit["prefactor"] * x ** fit["exponent"]


def _measurement_cost(seconds_per_iteration: float, spec: dict[str, Any]) -> float:
    """Seconds a measurement takes at that per-iteration time (a generation warm-up makes one token)."""
    warm = seconds_per_iteration / spec["gen_tokens"] if spec["mode"] == "generation" else seconds_per_iteration
    return spec["repeats"] * seconds_per_iteration + spec["warmup"] * warm


def _memory_limit(device: str) -> int:
    if device == "cuda":
        return torch.cuda.get_device_properties(0).total_memory
    from .config import available_memory_bytes

    return available_memory_bytes()


# --- machine ------------------------------------------------------------------------------------------
def _version(package: str) -> str | None:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _load_average() -> list[float] | None:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except (OSError, AttributeError):
        return None


def machine_description(device: str = "cpu") -> dict[str, Any]:
    """Where the figures were measured: CPU model and cores, memory, GPU, library versions, load."""
    from . import __version__

    desc: dict[str, Any] = {
        "cpu_model": _cpu_model(),
        "cpu_cores": os.cpu_count(),
        "cpu_cores_usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "torch_default_threads": torch.get_num_threads(),
        "memory_bytes": _memory_limit("cpu"),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "device": device,
        "gpu": None,
        "versions": {
            "qelm": __version__,
            "torch": torch.__version__,
            **{p: _version(p) for p in ("pennylane", "pennylane_lightning", "qiskit", "qiskit-aer", "numpy")},
        },
        "load_average_start": _load_average(),
    }
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        desc["gpu"] = {"name": props.name, "memory_bytes": props.total_memory, "count": torch.cuda.device_count(),
                       "cuda": torch.version.cuda}
    return desc


# --- the sweep ----------------------------------------------------------------------------------------
@dataclass
class BenchResult:
    """Everything one benchmark run measured. ``rows``: one dict per (model, backend, seq_len, mode);
    ``qubit_rows``: the qubit sweep; ``ratios``: QELM / twin at equal length and mode; ``scaling``:
    fitted exponents. ``to_dict()`` is the JSON written to disk."""

    settings: dict[str, Any]
    config: dict[str, Any]
    machine: dict[str, Any]
    rows: list[dict[str, Any]] = field(default_factory=list)
    qubit_rows: list[dict[str, Any]] = field(default_factory=list)
    ratios: list[dict[str, Any]] = field(default_factory=list)
    scaling: dict[str, list[dict[str, Any]]] = field(default_factory=lambda: {"seq_len": [], "qubits": []})
    notes: list[str] = field(default_factory=list)
    created: str = ""
    wall_s: float = 0.0
    command: str | None = None

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        return {"schema": _SCHEMA, "method": METHOD, **d}

    def ok_rows(self) -> list[dict[str, Any]]:
        return [r for r in self.rows if r["status"] == "ok"]


METHOD = {
    "inference": "median of the timed forward passes (`repeats` per row) of a (batch, T) batch, eval mode, no_grad, after "
                 "`warmup` untimed ones; tokens/s = batch*T/median",
    "training": "median of the timed optimizer steps (forward + loss.backward() + AdamW.step()); "
                "tokens/s = batch*T/median",
    "generation": "median of the timed model.generate calls of gen_tokens new tokens after a T-token "
                  "prompt; there is no KV cache, so each new token is a full forward over the last T tokens; "
                  "tokens/s = batch*gen_tokens/median",
    "spread": "q25_s/q75_s (inclusive quartiles) and min_s/max_s of the timed runs",
    "memory": "each measurement in a fresh forked process, warm-up included. CPU (peak_memory_bytes): peak RSS "
              "(VmHWM reset at the start) minus RSS at the start, minus the growth of file-backed RSS (library "
              "code first touched, ~15-20 MB whatever the model; kept in rss_file_growth_bytes, the total in "
              "peak_rss_bytes). CUDA: max_memory_allocated minus memory_allocated at the start",
    "circuit_time_fraction": "inference only: share of the timed forward passes spent inside backend "
                             "expval/state calls (the circuit simulation)",
    "twin": "ClassicalLM(config): the same config with every slot classical (not parameter-matched)",
    "ratios": "QELM value / twin value at equal seq_len, mode, batch and device; both measured",
    "scaling": "least squares on log-log axes over the measured lengths (or qubit counts): time ~ a * x^k; "
               "for qubits also the growth factor per added qubit from log time vs n",
    "budget": "timed runs stop early (at least one) when one more would pass max_seconds. Before each length, "
              "time per iteration and peak memory are predicted from a log-log fit of the last (up to 3) "
              "measured lengths (T^1 assumed after one; qubit sweep: exponential in n, x2 per qubit assumed "
              "after one); a length whose warm-up + one run is predicted past max_seconds, or whose memory past "
              f"80% of the machine's, is skipped and its prediction recorded as '{EXTRAPOLATED}'; a measurement "
              "running past 2*max_seconds+60 s is killed (status timeout)",
}


def _label(model: str, backend: str) -> str:
    return f"QELM {backend}" if model == "qelm" else "twin (classical)"


def _fit_for(axis: str, xs: list[float], ys: list[float]) -> dict[str, Any] | None:
    """The model a prediction extrapolates: a power law in T (``axis="seq_len"``), an exponential in the
    qubit count (``"n_qubits"``: state vectors double per qubit). One point: the exponent is assumed
    (T^1, x2 per qubit), and the fit says so."""
    if axis == "n_qubits":  # log y = log a + n log b: a power-law fit of y against e^n
        fit = fit_power_law([math.exp(x) for x in xs], ys)
        if fit is None and len(xs) >= 1:
            fit = {"exponent": math.log(2.0), "prefactor": ys[-1] / 2.0 ** xs[-1], "r2": None,
                   "assumed": "x2 per qubit (one measured point)"}
        if fit is not None:
            fit["describe"] = f"x{math.exp(fit['exponent']):.2f} per qubit"
            fit["x"] = math.exp
        return fit
    fit = fit_power_law(xs, ys)
    if fit is None and len(xs) >= 1:
        fit = {"exponent": 1.0, "prefactor": ys[-1] / xs[-1], "r2": None, "assumed": "T^1 (one measured length)"}
    if fit is not None:
        fit["describe"] = f"T^{fit['exponent']:.2f}"
        fit["x"] = float
    return fit


def _plan_or_skip(done: list[dict[str, Any]], x: int, spec: dict[str, Any], settings: BenchSettings,
                  memory_limit: int, axis: str = "seq_len") -> dict[str, Any] | None:
    """A skipped row, with its extrapolation, if point ``x`` (a length, or a qubit count on the qubit
    sweep) is predicted to need more than the budget for its warm-up and one timed run, or more than 80%
    of the memory; else None. Predictions come from the last (up to) three measured points."""
    ok = [r for r in done if r["status"] == "ok"][-3:]
    if not ok:
        return None
    xs = [r[axis] for r in ok]
    time_fit = _fit_for(axis, xs, [r["median_s"] for r in ok])
    mem_ok = [r for r in ok if r["peak_memory_bytes"] and r["peak_memory_bytes"] > 0]
    mem_fit = _fit_for(axis, [r[axis] for r in mem_ok], [r["peak_memory_bytes"] for r in mem_ok]) if mem_ok else None
    per_iter = _predict(time_fit, time_fit["x"](x))
    least = _measurement_cost(per_iter, {**spec, "repeats": 1})  # warm-up + one timed run
    peak = _predict(mem_fit, mem_fit["x"](x)) if mem_fit else None
    reason = None
    if least > settings.max_seconds:
        reason = f"skipped: predicted {least:.0f} s for warm-up + 1 run > budget {settings.max_seconds:g} s"
    elif peak is not None and peak > _MEMORY_SHARE * memory_limit:
        reason = (f"skipped: predicted peak {peak / 2**20:.0f} MB > {_MEMORY_SHARE:.0%} of "
                  f"{memory_limit / 2**20:.0f} MB")
    if reason is None:
        return None
    tokens = spec["batch"] * (spec["gen_tokens"] if spec["mode"] == "generation" else spec["seq_len"])
    return {
        "status": reason,
        "extrapolated": {
            "label": EXTRAPOLATED,
            "median_s": per_iter,
            "tokens_per_s": tokens / per_iter,
            "measurement_s": least,
            "peak_memory_bytes": peak,
            "time_model": time_fit["describe"] + (f", assumed: {time_fit['assumed']}" if "assumed" in time_fit else ""),
            "memory_model": (mem_fit["describe"] + (f", assumed: {mem_fit['assumed']}" if "assumed" in mem_fit
                                                     else "")) if mem_fit else None,
            "from": {axis: xs},
        },
    }


def _sweep(models: list[tuple[str, str]], points: Sequence[tuple[int, int | None]], axis: str, config: QELMConfig,
           settings: BenchSettings, progress: Callable[[dict[str, Any]], None] | None, memory_limit: int,
           server: _Server) -> list[dict[str, Any]]:
    """Measure every model and mode at every ``(seq_len, n_qubits or None)`` point, in order of ``axis``;
    each point first passes the budget check against the points measured before it."""
    rows = []
    timeout = 2 * settings.max_seconds + 60
    for model, backend in models:
        for mode in settings.modes:
            done: list[dict[str, Any]] = []
            failed: dict[str, Any] | None = None
            for T, qubits in points:
                changes: dict[str, Any] = {"context_len": T, "batch_hint": settings.batch}
                if model == "qelm":
                    changes["backend"] = backend
                if qubits is not None:
                    changes["n_qubits"] = qubits
                spec = {"model": model, "backend": backend, "mode": mode, "batch": settings.batch, "seq_len": T,
                        "repeats": settings.repeats, "warmup": settings.warmup, "gen_tokens": settings.gen_tokens,
                        "device": settings.device, "seed": settings.seed, "lr": settings.lr,
                        "threads": settings.threads, "budget_s": settings.max_seconds}
                head = {"model": model, "backend": backend, "label": _label(model, backend), "seq_len": T,
                        "mode": mode, "batch": settings.batch, "n_qubits": qubits or config.n_qubits,
                        "device": settings.device, "warmup": settings.warmup,
                        "gen_tokens": settings.gen_tokens if mode == "generation" else None}
                try:
                    spec["config"] = config.replace(**changes).to_dict()
                except ValueError as e:  # e.g. the memory check of the config: cannot run here
                    result: dict[str, Any] = {"status": "error", "error": str(e)}
                else:
                    if failed is not None:
                        what = "failed" if failed["status"] == "error" else "timed out"
                        result = {"status": f"not run: {what} at {axis} {failed[axis]}", "error": failed["error"]}
                    else:
                        result = _plan_or_skip(done, head[axis], spec, settings, memory_limit, axis) or \
                            server.measure(spec, timeout)
                row = {**head, **result}
                row.setdefault("error", None)
                row.setdefault("extrapolated", None)
                if failed is None and (row["status"] == "error" or row["status"].startswith("timeout")):
                    failed = row
                done.append(row)
                rows.append(row)
                if progress is not None:
                    progress(row)
    return rows


def run_benchmark(config: QELMConfig | None = None, settings: BenchSettings | None = None, *,
                  progress: Callable[[dict[str, Any]], None] | None = None) -> BenchResult:
    """Measure ``config`` (default: ``QELMConfig()``) as ``settings`` say: the QELM on each backend and
    the classical twin, per sequence length and mode, then the qubit sweep; fit exponents and ratios.
    ``progress(row)`` is called after every row (the CLI draws a progress bar with it)."""
    config = config or QELMConfig()
    settings = settings or BenchSettings()
    backends = settings.backends or (config.backend,)
    start = time.perf_counter()
    result = BenchResult(settings=asdict(settings) | {"backends": list(backends)}, config=config.to_dict(),
                         machine=machine_description(settings.device),
                         created=_dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"))
    memory_limit = _memory_limit(settings.device)
    models = [("qelm", b) for b in backends] + ([("twin", TWIN_BACKEND)] if settings.twin else [])
    with _Server() as server:
        points = [(T, None) for T in sorted(settings.seq_lens)]
        result.rows = _sweep(models, points, "seq_len", config, settings, progress, memory_limit, server)
        if settings.qubits:
            T = settings.qubit_seq_len or min(settings.seq_lens)
            modes = tuple(m for m in settings.modes if m != "generation") or ("inference",)
            sweep = BenchSettings(**{**asdict(settings), "modes": modes})
            points = [(T, n) for n in sorted(settings.qubits)]
            result.qubit_rows = _sweep([("qelm", b) for b in backends], points, "n_qubits", config, sweep, progress,
                                       memory_limit, server)
    result.ratios = _ratios(result.rows)
    result.scaling = _scaling(result.rows, result.qubit_rows)
    result.machine["load_average_end"] = _load_average()
    result.notes = _notes(config, result)
    result.wall_s = time.perf_counter() - start
    return result


def _notes(config: QELMConfig, result: BenchResult) -> list[str]:
    """Caveats a reader of the figures needs, decided from the config and the machine."""
    notes = []
    if "generation" in result.settings["modes"]:
        notes.append("generation: the model has no KV cache, so each new token costs a full forward over the "
                     "last T tokens (generation tok/s ~ inference tok/s / T).")
    if config.attention == "fidelity":
        what = ("T(T+1)/2 swap-test circuits" if config.fidelity_method == "swap_test"
                else "T state vectors and T^2 overlaps")
        notes.append(f"fidelity attention runs {what} per head and sequence: its cost grows ~T^2 "
                     "(the default config uses feature attention, ~T circuits).")
    # the run itself keeps about one core busy; a 1-min load well above that means other work competed
    loads = [m[0] for m in (result.machine.get("load_average_start"), result.machine.get("load_average_end")) if m]
    cores = result.machine.get("cpu_cores_usable") or 1
    if loads and max(loads) > 1 + 0.5 * cores:
        notes.append(f"the machine was busy (1-min load average {' -> '.join(f'{x:g}' for x in loads)} on {cores} "
                     "cores, start -> end): other processes competed for the CPU, so times are slower and noisier "
                     "than on an idle machine.")
    return notes


def expected_rows(config: QELMConfig | None, settings: BenchSettings) -> int:
    """How many rows ``run_benchmark`` will produce (for a progress bar)."""
    n_backends = len(settings.backends or ((config or QELMConfig()).backend,))
    models = n_backends + (1 if settings.twin else 0)
    qubit_modes = len([m for m in settings.modes if m != "generation"]) or 1
    return models * len(settings.modes) * len(settings.seq_lens) + n_backends * qubit_modes * len(settings.qubits)


def _ratios(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    twin = {(r["seq_len"], r["mode"]): r for r in rows if r["model"] == "twin" and r["status"] == "ok"}
    out = []
    for r in rows:
        t = twin.get((r["seq_len"], r["mode"]))
        if r["model"] != "qelm" or r["status"] != "ok" or t is None:
            continue
        out.append({
            "backend": r["backend"], "seq_len": r["seq_len"], "mode": r["mode"],
            "time_ratio": r["median_s"] / t["median_s"],  # > 1: the QELM is slower
            "tokens_per_s_ratio": r["tokens_per_s"] / t["tokens_per_s"],
            "memory_ratio": r["peak_memory_bytes"] / t["peak_memory_bytes"] if t["peak_memory_bytes"] > 0 else None,
            "parameter_ratio": r["n_parameters"] / t["n_parameters"],
        })
    return out


def _ok_groups(rows: list[dict[str, Any]], *fields: str) -> dict[tuple, list[dict[str, Any]]]:
    """The rows that ran, grouped by the values of ``fields`` (in first-seen order)."""
    groups: dict[tuple, list[dict[str, Any]]] = {}
    for r in rows:
        if r["status"] == "ok":
            groups.setdefault(tuple(r[f] for f in fields), []).append(r)
    return groups


def _scaling(rows: list[dict[str, Any]], qubit_rows: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    seq = []
    for (model, backend, mode), rs in _ok_groups(rows, "model", "backend", "mode").items():
        fit = fit_power_law([r["seq_len"] for r in rs], [r["median_s"] for r in rs])
        if fit:
            seq.append({"model": model, "backend": backend, "label": _label(model, backend), "mode": mode,
                        "seq_lens": [r["seq_len"] for r in rs], **fit,
                        "formula": f"time ~ T^{fit['exponent']:.2f}"})
    qub = []
    for (backend, mode, T), rs in _ok_groups(qubit_rows, "backend", "mode", "seq_len").items():
        ns, ts = [r["n_qubits"] for r in rs], [r["median_s"] for r in rs]
        fit = fit_power_law(ns, ts)
        if fit:
            # exponential view: slope of log t vs n, i.e. the time factor per added qubit
            n_mean = sum(ns) / len(ns)
            l_mean = sum(math.log(t) for t in ts) / len(ts)
            slope = sum((n - n_mean) * (math.log(t) - l_mean) for n, t in zip(ns, ts)) / \
                sum((n - n_mean) ** 2 for n in ns)
            qub.append({"backend": backend, "label": _label("qelm", backend), "mode": mode, "seq_len": T,
                        "qubits": ns, **fit, "per_qubit_factor": math.exp(slope),
                        "formula": f"time ~ n^{fit['exponent']:.2f} (x{math.exp(slope):.2f} per qubit)"})
    return {"seq_len": seq, "qubits": qub}


# --- output -------------------------------------------------------------------------------------------
def _fmt(x: float | None, digits: int = 3) -> str:
    """Three significant digits, thousands separated, never in e-notation."""
    if x is None:
        return "-"
    if abs(x) >= 10 ** (digits - 1):
        return f"{x:,.0f}"
    if x == 0:
        return "0"
    decimals = max(0, digits - 1 - math.floor(math.log10(abs(x))))
    return f"{x:.{decimals}f}"


def format_table(result: BenchResult | dict[str, Any]) -> str:
    """The markdown table of the main sweep: one line per model and sequence length. Extrapolated cells
    are marked ``~`` and footnoted; failed cells name their status below the table."""
    d = result.to_dict() if isinstance(result, BenchResult) else result
    rows = d["rows"]
    ratios = {(r["backend"], r["seq_len"], r["mode"]): r for r in d["ratios"]}
    index = {(r["model"], r["backend"], r["seq_len"], r["mode"]): r for r in rows}
    keys = list(dict.fromkeys((r["model"], r["backend"], r["seq_len"]) for r in rows))
    notes: list[str] = []

    def cell(r: dict[str, Any] | None, value: Callable[[dict[str, Any]], float | None]) -> str:
        if r is None:
            return "-"
        if r["status"] == "ok":
            return _fmt(value(r))
        if r["extrapolated"] is not None:
            return "~" + _fmt(value(r["extrapolated"])) + "*"
        # one footnote per model and cause: a backend that cannot start fails every cell the same way
        note = f"{r['label']}: {r['error'] or r['status']}"
        if note not in notes:
            notes.append(note)
        return f"n/a[{notes.index(note) + 1}]"

    header = ("| model | seq len | fwd ms median (IQR) | infer tok/s | train tok/s | gen tok/s | "
              "peak MB fwd / train | fwd x twin | train x twin |")
    lines = [header, "|" + "---|" * 9]
    for model, backend, T in keys:
        inf, trn, gen = (index.get((model, backend, T, m)) for m in MODES)
        if inf is not None and inf["status"] == "ok":
            fwd = f"{_fmt(inf['median_s'] * 1e3)} ({_fmt(inf['q25_s'] * 1e3)}-{_fmt(inf['q75_s'] * 1e3)})"
        else:
            fwd = cell(inf, lambda r: r["median_s"] * 1e3)
        mb = " / ".join(cell(r, lambda r: (r["peak_memory_bytes"] or 0) / 2**20 or None) for r in (inf, trn))

        def ratio(mode: str) -> str:
            rr = ratios.get((backend, T, mode)) if model == "qelm" else None
            return f"{_fmt(rr['time_ratio'])}x" if rr else "-"

        lines.append(f"| {_label(model, backend)} | {T} | {fwd} | {cell(inf, lambda r: r['tokens_per_s'])} | "
                     f"{cell(trn, lambda r: r['tokens_per_s'])} | {cell(gen, lambda r: r['tokens_per_s'])} | "
                     f"{mb} | {ratio('inference')} | {ratio('training')} |")
    s = d["settings"]
    foot = [f"batch {s['batch']}, up to {s['repeats']} timed runs after {s['warmup']} warm-up (fewer where the "
            f"{s['max_seconds']:g} s budget ran out), device {s['device']}"
            + f", torch threads {s['threads'] or 'default'}; "
            + (f"gen: {s['gen_tokens']} new tokens after a T-token prompt, no KV cache (each token is a full "
               "forward); " if "generation" in s["modes"] else "")
            + "x twin: QELM time / twin time (>1: the QELM is slower)."]
    if any(r["extrapolated"] for r in rows):
        foot.append(f"~X*: {EXTRAPOLATED}: predicted for a length over the budget (model in the JSON: time_model).")
    foot += [f"[{i + 1}] {n}" for i, n in enumerate(notes)]
    foot += [f"note: {n}" for n in d.get("notes", [])]
    return "\n".join(lines + [""] + foot)


def format_scaling(result: BenchResult | dict[str, Any]) -> str:
    """Fitted exponents, one line each: time vs sequence length, and vs qubits per circuit."""
    d = result.to_dict() if isinstance(result, BenchResult) else result
    lines = []
    for f in d["scaling"]["seq_len"]:
        lines.append(f"{f['label']:<24} {f['mode']:<10} {f['formula']:<16} (r2 {f['r2']:.3f}, "
                     f"T = {', '.join(map(str, f['seq_lens']))})")
    for f in d["scaling"]["qubits"]:
        lines.append(f"{f['label']:<24} {f['mode']:<10} {f['formula']} (r2 {f['r2']:.3f}, T = {f['seq_len']}, "
                     f"n = {', '.join(map(str, f['qubits']))})")
    failed: dict[tuple[str, str, str], list[str]] = {}  # (label, mode, cause) -> the qubit counts it hit
    for r in d["qubit_rows"]:
        if r["status"] != "ok":
            status = r["status"] if r["status"].startswith("skipped") or not r["error"] else "failed"
            cause = status + (f" ({r['error']})" if r["error"] else "")
            failed.setdefault((r["label"], r["mode"], cause), []).append(str(r["n_qubits"]))
    for (label, mode, cause), ns in failed.items():
        lines.append(f"{label:<24} {mode:<10} n={','.join(ns)}: {cause}")
    return "\n".join(lines)


def write_json(result: BenchResult, path: str | os.PathLike) -> Path:
    """Write ``result.to_dict()`` as indented JSON, atomically."""
    return atomic_write(path, json.dumps(result.to_dict(), indent=1) + "\n", make_parents=True)


def plot(result: BenchResult | dict[str, Any], path: str | os.PathLike) -> Path:
    """Log-log figure of time per iteration vs sequence length for each mode (measured: filled markers
    and the fitted line; extrapolated: hollow markers), and time vs qubits when a qubit sweep ran.
    The format follows the suffix (png, svg, pdf); written atomically."""
    from matplotlib.figure import Figure

    d = result.to_dict() if isinstance(result, BenchResult) else result
    path = Path(path)
    fmt = path.suffix.lstrip(".").lower() or "png"
    if fmt not in ("png", "svg", "pdf"):
        raise ValueError(f"plot path {str(path)!r} has suffix {path.suffix!r}: use .png, .svg or .pdf")
    modes = [m for m in MODES if any(r["mode"] == m for r in d["rows"])]
    panels = modes + (["qubits"] if d["qubit_rows"] else [])
    fig = Figure(figsize=(4.2 * len(panels), 4.2), dpi=100, layout="constrained")
    axes = fig.subplots(1, len(panels), squeeze=False)[0]
    labels = list(dict.fromkeys(r["label"] for r in d["rows"]))
    colors = {lab: f"C{i}" for i, lab in enumerate(labels)}
    for ax, mode in zip(axes, modes):
        for lab in labels:
            rs = [r for r in d["rows"] if r["label"] == lab and r["mode"] == mode]
            ok = [r for r in rs if r["status"] == "ok"]
            ex = [r for r in rs if r["extrapolated"]]
            fit = next((f for f in d["scaling"]["seq_len"] if f["label"] == lab and f["mode"] == mode), None)
            if ok:
                ax.plot([r["seq_len"] for r in ok], [r["median_s"] for r in ok], "o", color=colors[lab],
                        label=lab + (f" (T^{fit['exponent']:.2f})" if fit else ""))
                ax.vlines([r["seq_len"] for r in ok], [r["q25_s"] for r in ok], [r["q75_s"] for r in ok],
                          color=colors[lab])
            if fit:
                xs = [r["seq_len"] for r in ok]
                ax.plot(xs, [fit["prefactor"] * x ** fit["exponent"] for x in xs], "-", color=colors[lab], lw=0.8)
            if ex:
                ax.plot([r["seq_len"] for r in ex], [r["extrapolated"]["median_s"] for r in ex], "o", mfc="none",
                        ls=":", color=colors[lab])
        ax.plot([], [], "o", mfc="none", color="gray", label=EXTRAPOLATED)
        ax.set(xscale="log", yscale="log", xlabel="sequence length T", ylabel="seconds per iteration",
               title={"inference": "forward", "training": "training step",
                      "generation": f"generate {d['settings']['gen_tokens']} tokens"}[mode])
        lengths = sorted({r["seq_len"] for r in d["rows"]})
        ax.set_xticks(lengths, [str(t) for t in lengths])
        ax.set_xticks([], minor=True)
        ax.legend(fontsize=6)
    if d["qubit_rows"]:
        ax = axes[-1]
        for f in d["scaling"]["qubits"]:
            rs = [r for r in d["qubit_rows"] if r["backend"] == f["backend"] and r["mode"] == f["mode"]
                  and r["status"] == "ok"]
            ax.plot([r["n_qubits"] for r in rs], [r["median_s"] for r in rs], "o-" if f["mode"] == "inference"
                    else "s--", color=colors.get(f["label"], "k"),
                    label=f"{f['label'].removeprefix('QELM ')} {'fwd' if f['mode'] == 'inference' else 'train'}: "
                          f"x{f['per_qubit_factor']:.2f}/qubit")
        ax.set(yscale="log", xlabel="qubits per circuit", ylabel="seconds per iteration",
               title=f"qubit sweep (T = {d['qubit_rows'][0]['seq_len']})")
        ax.set_xticks(sorted({r["n_qubits"] for r in d["qubit_rows"]}))
        ax.legend(fontsize=6)
    m = d["machine"]
    fig.suptitle(f"qelm bench: batch {d['settings']['batch']}, {m['device']}, {m['cpu_model']}"
                 + (f", {m['gpu']['name']}" if m.get("gpu") and m["device"] == "cuda" else ""), fontsize=9)
    buf = io.BytesIO()
    fig.savefig(buf, format=fmt)
    return atomic_write(path, buf.getvalue(), make_parents=True)


if __name__ == "__main__":
    _serve()
