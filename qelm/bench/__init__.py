"""Speed and memory of a QELM beside its classical twin, across sequence lengths, backends and qubit counts.

What is measured, per model (the QELM on each backend, and ``ClassicalLM`` at the same config), per
sequence length ``T`` (the config's ``context_len`` is set to ``T``) and per mode:

* ``inference``: one ``forward(idx)`` of a ``(batch, T)`` batch in eval mode under ``torch.no_grad``;
  tokens/s = ``batch * T / median``;
* ``training``: one optimizer step, ``forward(idx, targets)`` + ``loss.backward()`` + ``AdamW.step()``,
  really run; tokens/s = ``batch * T / median``;
* ``generation``: ``model.generate`` of ``gen_tokens`` new tokens after a prompt of ``T - gen_tokens``
  tokens, with the KV cache (each new token runs only its own circuits) and without it (each new token
  re-reads the window); tokens/s = ``batch * gen_tokens / median``, and whether both gave the same tokens.

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

The package: :mod:`.settings` (what to measure), :mod:`.worker` (one measurement in a worker process),
:mod:`.server` (the fork server that isolates them), :mod:`.sweep` (the sweep and its budget),
:mod:`.fits` (scaling fits), :mod:`.machine` (where it ran), :mod:`.results` (:class:`BenchResult`),
:mod:`.report` (tables, JSON) and :mod:`.figure` (the figure).
"""

from .figure import plot
from .fits import fit_power_law
from .machine import machine_description
from .report import format_scaling, format_table, write_json
from .results import METHOD, BenchResult
from .settings import EXTRAPOLATED, MODES, TWIN_BACKEND, BenchSettings
from .sweep import expected_rows, run_benchmark
from .worker import measure

__all__ = [
    "MODES",
    "EXTRAPOLATED",
    "TWIN_BACKEND",
    "METHOD",
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
