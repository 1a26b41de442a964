"""What a benchmark run hands back: :class:`BenchResult` (every row, ratio and fit, the settings and the
machine) and the method behind each figure, both written into its JSON."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from .settings import EXTRAPOLATED

__all__ = ["BenchResult", "METHOD", "SCHEMA"]

SCHEMA = "qelm.bench/1"


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
        return {"schema": SCHEMA, "method": METHOD, **d}

    def ok_rows(self) -> list[dict[str, Any]]:
        return [r for r in self.rows if r["status"] == "ok"]


METHOD = {
    "inference": "median of the timed forward passes (`repeats` per row) of a (batch, T) batch, eval mode, no_grad, after "
                 "`warmup` untimed ones; tokens/s = batch*T/median",
    "training": "median of the timed optimizer steps (forward + loss.backward() + AdamW.step()); "
                "tokens/s = batch*T/median",
    "generation": "median of the timed model.generate calls of gen_tokens new tokens after a prompt of "
                  "T - gen_tokens tokens, with the KV cache (tokens_per_s) and re-reading the window at every "
                  "step (no_cache_tokens_per_s); tokens/s = batch*gen_tokens/median; cache_same_tokens: the "
                  "same seed gave the same tokens both ways; static_same_tokens: the static KV cache gave the "
                  "growing (dynamic) cache's tokens",
    "cuda_graphs": "on CUDA with cuda_graphs (the default), inference replays a recorded forward and generation "
                   "one recorded decode step per token on a static KV cache (qelm.decode); the same measurement "
                   "with every call eager (generation: the growing cache, as before graphs) is in eager_median_s "
                   "and eager_tokens_per_s, and the circuit share then comes from those eager runs",
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
