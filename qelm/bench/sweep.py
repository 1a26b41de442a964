"""The sweep: measure the QELM on each backend and its classical twin at every sequence length (and
qubit count) and mode, each in its own process (:mod:`.server`), skipping a point predicted to pass the
budget (:mod:`.fits`), then derive the ratios, fits and notes of a :class:`BenchResult`."""

from __future__ import annotations

import datetime as _dt
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict
from typing import Any

from ..backends import BackendSpec
from ..backends.spec import DEFAULT_BACKEND
from ..circuits import imports_for
from ..config import QELMConfig, check_fits
from ..memory import memory_bytes
from .fits import fit_for, predict, scaling
from .machine import load_average, machine_description
from .results import BenchResult
from .server import Server
from .settings import EXTRAPOLATED, TWIN_BACKEND, BenchSettings, row_label

__all__ = ["run_benchmark", "expected_rows"]

_MEMORY_SHARE = 0.8  # a length predicted to need more than this share of the machine's memory is skipped


def _measurement_cost(seconds_per_iteration: float, spec: dict[str, Any]) -> float:
    """Seconds a measurement takes at that per-iteration time (a generation warm-up makes one token)."""
    warm = seconds_per_iteration / spec["gen_tokens"] if spec["mode"] == "generation" else seconds_per_iteration
    return spec["repeats"] * seconds_per_iteration + spec["warmup"] * warm


def _plan_or_skip(done: list[dict[str, Any]], x: int, spec: dict[str, Any], settings: BenchSettings,
                  mem_limit: int, axis: str = "seq_len") -> dict[str, Any] | None:
    """A skipped row, with its extrapolation, if point ``x`` (a length, or a qubit count on the qubit
    sweep) is predicted to need more than the budget for its warm-up and one timed run, or more than 80%
    of the memory; else None. Predictions come from the last (up to) three measured points."""
    ok = [r for r in done if r["status"] == "ok"][-3:]
    if not ok:
        return None
    xs = [r[axis] for r in ok]
    time_fit = fit_for(axis, xs, [r["median_s"] for r in ok])
    assert time_fit is not None  # one measured point is enough: its exponent is assumed
    mem_ok = [r for r in ok if r["peak_memory_bytes"] and r["peak_memory_bytes"] > 0]
    mem_fit = fit_for(axis, [r[axis] for r in mem_ok], [r["peak_memory_bytes"] for r in mem_ok]) if mem_ok else None
    per_iter = predict(time_fit, time_fit["x"](x))
    least = _measurement_cost(per_iter, {**spec, "repeats": 1})  # warm-up + one timed run
    peak = predict(mem_fit, mem_fit["x"](x)) if mem_fit else None
    reason = None
    if least > settings.max_seconds:
        reason = f"skipped: predicted {least:.0f} s for warm-up + 1 run > budget {settings.max_seconds:g} s"
    elif peak is not None and peak > _MEMORY_SHARE * mem_limit:
        reason = (f"skipped: predicted peak {peak / 2**20:.0f} MB > {_MEMORY_SHARE:.0%} of "
                  f"{mem_limit / 2**20:.0f} MB")
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


def _point(model: str, backend: str, mode: str, T: int, qubits: int | None, config: QELMConfig,
           settings: BenchSettings, runtime: BackendSpec) -> tuple[dict[str, Any], dict[str, Any]]:
    """``(spec, head)`` of one measurement: what the worker runs (``changes`` to the config still to
    apply) and the fields its row starts with."""
    changes: dict[str, Any] = {"context_len": T}
    if qubits is not None:
        changes["n_qubits"] = qubits
    spec = {"model": model, "backend": backend, "mode": mode, "batch": settings.batch, "seq_len": T,
            "repeats": settings.repeats, "warmup": settings.warmup, "gen_tokens": settings.gen_tokens,
            "device": settings.device, "seed": settings.seed, "lr": settings.lr,
            "threads": settings.threads, "budget_s": settings.max_seconds, "changes": changes,
            "cuda_graphs": settings.cuda_graphs, "compile": settings.compile,
            "runtime": BackendSpec(backend, runtime.shots, runtime.options).to_table() if model == "qelm"
            else BackendSpec().to_table()}
    head = {"model": model, "backend": backend, "label": row_label(model, backend), "seq_len": T,
            "mode": mode, "batch": settings.batch, "n_qubits": qubits or config.n_qubits,
            "device": settings.device, "warmup": settings.warmup,
            "gen_tokens": settings.gen_tokens if mode == "generation" else None}
    return spec, head


def _imports(config: QELMConfig) -> list[str]:
    """What a measurement process imports before it builds the model: the :func:`qelm.circuits.import_circuits`
    (the command line's ``--import``) that registered each circuit of your own the config names; a process of
    its own knows only the built-in circuits."""
    return imports_for({config.embedding_circuit, config.attention_circuit, config.feed_forward_circuit})


def _sweep(models: list[tuple[str, str]], points: Sequence[tuple[int, int | None]], axis: str, config: QELMConfig,
           settings: BenchSettings, progress: Callable[[dict[str, Any]], None] | None, mem_limit: int,
           server: Server, runtime: BackendSpec) -> list[dict[str, Any]]:
    """Measure every model and mode at every ``(seq_len, n_qubits or None)`` point, in order of ``axis``;
    each point first passes the budget check against the points measured before it."""
    rows = []
    timeout = 2 * settings.max_seconds + 60
    for model, backend in models:
        for mode in settings.modes:
            done: list[dict[str, Any]] = []
            failed: dict[str, Any] | None = None
            for T, qubits in points:
                spec, head = _point(model, backend, mode, T, qubits, config, settings, runtime)
                try:
                    changed = config.replace(**spec.pop("changes"))
                    check_fits(changed, settings.batch)
                    spec["config"] = changed.to_dict()
                    spec["imports"] = _imports(changed)
                except ValueError as e:  # e.g. the memory check: cannot run here
                    result: dict[str, Any] = {"status": "error", "error": str(e)}
                else:
                    if failed is not None:
                        what = "failed" if failed["status"] == "error" else "timed out"
                        result = {"status": f"not run: {what} at {axis} {failed[axis]}", "error": failed["error"]}
                    else:
                        result = _plan_or_skip(done, head[axis], spec, settings, mem_limit, axis) or \
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
                  progress: Callable[[dict[str, Any]], None] | None = None,
                  spec: BackendSpec | None = None) -> BenchResult:
    """Measure ``config`` (default: ``QELMConfig()``) as ``settings`` say: the QELM on each backend and
    the classical twin, per sequence length and mode, then the qubit sweep; fit exponents and ratios.
    ``spec`` (default: exact on qelm.fused): the backend when ``settings`` names none, and the shots and
    options the QELM runs with on each. ``progress(row)`` is called after every row (the CLI draws a progress
    bar with it)."""
    config = config or QELMConfig()
    settings = settings or BenchSettings()
    spec = spec or BackendSpec()
    backends = settings.backends or (spec.name,)
    start = time.perf_counter()
    result = BenchResult(settings=asdict(settings) | {"backends": list(backends)}, config=config.to_dict(),
                         machine=machine_description(settings.device),
                         created=_dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"))
    mem_limit = memory_bytes(settings.device)
    models = [("qelm", b) for b in backends] + ([("twin", TWIN_BACKEND)] if settings.twin else [])
    with Server() as server:
        points: list[tuple[int, int | None]] = [(T, None) for T in sorted(settings.seq_lens)]
        result.rows = _sweep(models, points, "seq_len", config, settings, progress, mem_limit, server, spec)
        if settings.qubits:
            T = settings.qubit_seq_len or min(settings.seq_lens)
            modes = tuple(m for m in settings.modes if m != "generation") or ("inference",)
            sweep = BenchSettings(**{**asdict(settings), "modes": modes})
            points = [(T, n) for n in sorted(settings.qubits)]
            result.qubit_rows = _sweep([("qelm", b) for b in backends], points, "n_qubits", config, sweep, progress,
                                       mem_limit, server, spec)
    result.ratios = _ratios(result.rows)
    result.scaling = scaling(result.rows, result.qubit_rows)
    result.machine["load_average_end"] = load_average()
    result.notes = _notes(config, result)
    result.wall_s = time.perf_counter() - start
    return result


def _notes(config: QELMConfig, result: BenchResult) -> list[str]:
    """Caveats a reader of the figures needs, decided from the config and the machine."""
    notes = []
    if "generation" in result.settings["modes"]:
        notes.append("generation: gen_tokens new tokens after a prompt of T - gen_tokens tokens, with the KV cache "
                     "(each new token runs its own circuits and attends to cached keys; on CUDA with graphs a static "
                     "cache and one recorded decode step per token, the growing cache eagerly in eager_tokens_per_s) "
                     "and without it (each new token re-reads the window: no_cache_tokens_per_s); cache_same_tokens "
                     "says whether the two gave the same tokens from the same seed, static_same_tokens whether the "
                     "static cache gave the growing one's.")
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
    n_backends = len(settings.backends or (DEFAULT_BACKEND,))  # one backend: the spec's
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
