"""What a benchmark measures: :class:`BenchSettings` (lengths, batch, modes, backends, budget) and the
names every part of the benchmark shares."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from ..backends import BACKENDS
from ..errors import ConfigError

__all__ = ["MODES", "EXTRAPOLATED", "TWIN_BACKEND", "BenchSettings", "row_label"]

MODES = ("inference", "training", "generation")
#: the label every figure that was predicted rather than run carries
EXTRAPOLATED = "extrapolated, not measured"
TWIN_BACKEND = "torch"  # the twin runs no circuits: plain torch on the chosen device


@dataclass
class BenchSettings:
    """What to measure. ``quick()`` gives the reduced sweep that finishes in a few minutes on a laptop."""

    seq_lens: tuple[int, ...] = (128, 256, 512, 1024, 2048)  # sequence lengths (config.context_len per run)
    batch: int = 2  # sequences per forward / training step / generate call
    modes: tuple[str, ...] = MODES  # any of inference, training, generation
    backends: tuple[str, ...] = ()  # QELM backends; empty: run_benchmark's spec's (qelm.fused)
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
    # replay recorded CUDA graphs in inference and generation on CUDA (model.cuda_graphs, qelm.decode); the
    # eager time is measured beside it (eager_*); no effect on the CPU
    cuda_graphs: bool = True
    compile: bool = False  # torch.compile the forward and the decode step (qelm.decode.compile_model)

    @classmethod
    def quick(cls, **changes: Any) -> BenchSettings:
        """Short sequences, batch 2, 3 repeats: the default config's table in well under 5 minutes."""
        base: dict[str, Any] = dict(seq_lens=(16, 32, 64), batch=2, repeats=3, gen_tokens=4, max_seconds=30.0)
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
                raise ConfigError(f"{name} is empty: give at least one integer >= 1")
            for v in values:
                if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                    raise ConfigError(f"{name} value {v!r} is invalid: use integers >= 1")
            if len(set(values)) != len(values):
                raise ConfigError(f"{name} {list(values)} has duplicates: list each value once")

        positive_ints("seq_lens", self.seq_lens)
        positive_ints("qubits", self.qubits, allow_empty=True)
        for name in ("batch", "repeats", "gen_tokens"):
            positive_ints(name, (getattr(self, name),))
        if isinstance(self.warmup, bool) or not isinstance(self.warmup, int) or self.warmup < 0:
            raise ConfigError(f"warmup={self.warmup!r} is invalid: use an integer >= 0")
        if isinstance(self.threads, bool) or not isinstance(self.threads, int) or self.threads < 0:
            raise ConfigError(f"threads={self.threads!r} is invalid: use an integer >= 1, or 0 for torch's default")
        for name in ("cuda_graphs", "compile"):
            if not isinstance(getattr(self, name), bool):
                raise ConfigError(f"{name}={getattr(self, name)!r} is invalid: use True or False")
        if self.qubit_seq_len is not None:
            positive_ints("qubit_seq_len", (self.qubit_seq_len,))
        bad = [m for m in self.modes if m not in MODES]
        if bad or not self.modes:
            raise ConfigError(f"mode(s) {bad or self.modes!r} invalid: choose from {', '.join(MODES)}")
        if not (isinstance(self.max_seconds, (int, float)) and self.max_seconds > 0):
            raise ConfigError(f"max_seconds={self.max_seconds!r} is invalid: use a number of seconds > 0")
        if self.device not in ("cpu", "cuda"):
            raise ConfigError(f"device {self.device!r} is invalid: use cpu or cuda")
        if self.device == "cuda" and not torch.cuda.is_available():
            raise ConfigError("device 'cuda' was asked for but torch sees no CUDA GPU here: use device cpu")
        for b in self.backends:
            if b not in BACKENDS:
                raise ConfigError(f"unknown backend {b!r}: valid backends are {', '.join(sorted(BACKENDS))}")


def row_label(model: str, backend: str) -> str:
    """How tables and figures name a row's model: ``"QELM default.qubit"`` or ``"twin (classical)"``."""
    return f"QELM {backend}" if model == "qelm" else "twin (classical)"
