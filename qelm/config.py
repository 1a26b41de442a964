"""``QELMConfig``: the one dataclass that describes a QELM (and, with every slot classical, its twin).

Validation happens on construction, so an impossible model never gets built: each error names the field,
the bad value and what would be valid. Whether a model fits this machine is checked where it meets the
machine (:func:`check_fits`). Configs round-trip through TOML (``tomllib`` to read, ``tomli_w``
to write).
"""

from __future__ import annotations

import dataclasses
import os
import tomllib
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import tomli_w

from .backends import BackendSpec
from .backends.spec import BACKEND_FIELDS
from .circuits import CIRCUITS, READOUTS, SLOTS, build_circuit, slot_problem
from .errors import ConfigError
from .memory import available_memory_bytes, format_bytes, state_vector_bytes
from .paths import wrong_kind

__all__ = ["QELMConfig", "SLOT_CHOICES", "read_toml", "config_differences", "model_table", "split_runtime",
           "check_fits"]

SLOT_CHOICES = {
    "embedding": ("quantum", "classical"),
    "attention": ("quantum", "fidelity", "classical"),
    "feed_forward": ("quantum", "classical"),
    "fidelity_method": ("exact", "swap_test"),
    "readout": READOUTS,
}


@dataclass
class QELMConfig:
    """Architecture of a decoder-only QELM (and, with every slot classical, of its twin).

    The defaults give the tiny demo model. The config is validated on construction: an impossible model is
    refused before a tensor is allocated, with a `ConfigError` naming the field,
    the bad value and what would be valid. Configs round-trip through TOML ([`to_toml`][qelm.QELMConfig.to_toml],
    [`from_toml`][qelm.QELMConfig.from_toml]) and dictionaries.

    How the model runs (backend, shots, backend options) is not here: that is a `qelm.backends.BackendSpec`,
    the model's `spec`, written as the `[runtime]` table of config files and checkpoints. Whether the model
    fits this machine is checked where it meets the machine (`check_fits`).

    Examples:
        >>> from qelm import QELMConfig
        >>> config = QELMConfig(vocab_size=32, d_model=8, n_heads=2, n_qubits=3)
        >>> config.head_dim, config.uses_circuits
        (4, True)
        >>> config.classical().attention
        'classical'
        >>> QELMConfig(d_model=10, n_heads=4)
        Traceback (most recent call last):
        ...
        qelm.errors.ConfigError: config field d_model=10 is invalid: it must be divisible by n_heads=4 (try 8)
    """

    vocab_size: int = 64
    """Tokens in the vocabulary; set from the tokenizer when training."""
    d_model: int = 16
    """Width of the residual stream; divisible by `n_heads`."""
    n_heads: int = 2
    """Attention heads per block (one circuit set per head)."""
    d_hidden: int = 32
    """Hidden width of the classical feed-forward."""
    n_layers: int = 1
    """Transformer blocks."""
    context_len: int = 32
    """Longest sequence the model reads, in tokens."""
    n_qubits: int = 4
    """Data qubits per circuit (the swap test adds as many again, plus one)."""
    circuit_layers: int = 2
    """Variational (re-uploading) layers per circuit."""
    embedding: str = "quantum"
    """The embedding slot: `"quantum"` (the `embedding_circuit`) or `"classical"` (a lookup table)."""
    embedding_circuit: str = "angle"
    """The embedding circuit: `"angle"`, `"polar"`, `"amplitude"`, or one registered with
    `qelm.circuits.register_circuit` (kind `"embedding"`)."""
    attention: str = "quantum"
    """The attention slot: `"quantum"` (q/k/v feature circuits), `"fidelity"` (scores from state overlaps)
    or `"classical"`."""
    attention_circuit: str = "attention"
    """The attention heads' circuit: `"attention"` (data re-uploading), or one registered with
    `qelm.circuits.register_circuit` (kind `"attention"`): the query, key and value circuits of `"quantum"`
    attention, and the state of `"fidelity"` attention."""
    fidelity_method: str = "exact"
    """How `"fidelity"` attention measures overlaps: `"exact"` (from the states) or `"swap_test"` (a
    circuit, which also works with shots)."""
    adaptive_threshold: bool = False
    """Fidelity attention: keep only the scores >= their row's mean + 0.5 standard deviations."""
    feed_forward: str = "quantum"
    """The feed-forward slot: `"quantum"` or `"classical"`."""
    feed_forward_circuit: str = "feed_forward"
    """The feed-forward circuit: `"feed_forward"` (data re-uploading), or one registered with
    `qelm.circuits.register_circuit` (kind `"feed_forward"`)."""
    readout: str = "z"
    """What feature circuits are read out as: `"z"` (<Z_i> per qubit), `"zz"` (those and <Z_i Z_j> of every
    pair) or `"probs"` (the 2**n basis probabilities)."""

    def __post_init__(self) -> None:
        self.validate()

    # --- validation --------------------------------------------------------------------------------
    def validate(self) -> None:
        """Check every field; called on construction (and again by code that changes a field in place).

        Raises:
            ConfigError: a field is out of range or names an unknown choice; the message names the field, its
                value and what would be valid. (Whether the model fits this machine is `check_fits`'s question.)
        """
        def bad(name: str, valid: str) -> None:
            raise ConfigError(f"config field {name}={getattr(self, name)!r} is invalid: {valid}")

        for name in ("vocab_size", "d_model", "n_heads", "d_hidden", "n_layers", "context_len", "n_qubits",
                     "circuit_layers"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                bad(name, "use an integer >= 1")
        if self.vocab_size < 2:
            bad("vocab_size", "a language model needs at least 2 tokens")
        if self.d_model % self.n_heads:
            lower = self.d_model // self.n_heads * self.n_heads  # integers: a float rounds a large size
            near = lower if lower and self.d_model - lower <= lower + self.n_heads - self.d_model else lower + self.n_heads
            bad("d_model", f"it must be divisible by n_heads={self.n_heads} (try {near})")
        for name, choices in SLOT_CHOICES.items():
            if getattr(self, name) not in choices:
                bad(name, f"choose one of {', '.join(choices)}")
        for slot, (name, _) in SLOTS.items():  # a classical slot runs no circuit: its name need not be registered
            problem = None if getattr(self, slot) == "classical" else slot_problem(getattr(self, name), slot)
            if problem:
                bad(name, problem)
        if not isinstance(self.adaptive_threshold, bool):
            bad("adaptive_threshold", "use true or false")

    def parameter_bound(self) -> int:
        """An upper bound on the parameter count of this config's QELM and of its classical twin: the twin's
        exact count plus every circuit's gate angles (three per qubit and layer, one circuit set per head and
        slot). Cheap to compute for any sizes, so absurd ones are refused before a tensor is allocated."""
        V, C, d, h, L = self.vocab_size, self.context_len, self.d_model, self.d_hidden, self.n_layers
        classical = V * d + C * d + L * (6 * d + 4 * d * d + 4 * d + 2 * d * h + h + d) + 2 * d + d * V
        circuits = (L * (3 * self.n_heads + 1) + 1) * self.circuit_layers * self.n_qubits * 3
        return classical + circuits

    def widest_circuit_wires(self) -> int:
        """Qubits of the widest circuit this config runs (the swap test doubles the data register; a circuit of
        your own may have wires beyond its ``n_qubits``)."""
        wires = [self.n_qubits]
        for slot, (field, _) in SLOTS.items():
            if getattr(self, slot) != "classical" and getattr(self, field) in CIRCUITS:
                wires.append(self.circuit(getattr(self, field)).n_wires)
        if self.attention == "fidelity" and self.fidelity_method == "swap_test":
            wires.append(2 * self.circuit(self.attention_circuit).n_wires + 1)
        return max(wires)

    def circuit_memory(self, batch: int) -> tuple[int, int, int]:
        """``(circuits, qubits, bytes)``: the circuits a forward and backward pass over ``batch`` sequences
        of ``context_len`` tokens keeps in flight, the qubits of the widest, and about how much memory their
        state vectors take; ``(0, 0, 0)`` for a model without circuits."""
        if not self.uses_circuits:
            return 0, 0, 0
        wires = self.widest_circuit_wires()
        circuits = batch * self.context_len * self.n_heads * 3
        if self.attention == "fidelity" and self.fidelity_method == "swap_test":
            circuits = batch * self.n_heads * self.context_len * (self.context_len + 1) // 2
        # x3: the simulator keeps the state, a work copy and (backprop) the saved activations; past 128 qubits
        # the exact (astronomical) figure is not worth computing
        return circuits, wires, 3 * state_vector_bytes(min(wires, 128), circuits)

    @property
    def uses_circuits(self) -> bool:
        """Whether any slot runs a circuit (False for the classical twin's config)."""
        return "quantum" in (self.embedding, self.feed_forward) or self.attention != "classical"

    @property
    def head_dim(self) -> int:
        """Width of one attention head: `d_model // n_heads`."""
        return self.d_model // self.n_heads

    # --- variants -----------------------------------------------------------------------------------
    def replace(self, **changes: Any) -> QELMConfig:
        """A validated copy with some fields changed.

        Args:
            **changes: field names and their new values.

        Returns:
            A new config; this one is unchanged.

        Examples:
            >>> QELMConfig().replace(n_qubits=6).n_qubits
            6
        """
        return dataclasses.replace(self, **changes)

    def classical(self) -> QELMConfig:
        """The same architecture with every slot classical: the config of the twin.

        Returns:
            A copy with `embedding`, `attention` and `feed_forward` set to `"classical"`.

        Examples:
            >>> QELMConfig().classical().uses_circuits
            False
        """
        return self.replace(embedding="classical", attention="classical", feed_forward="classical")

    # --- (de)serialisation ---------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """The fields as a dictionary, as TOML writes them (the `[model]` table).

        Returns:
            `{field: value}`; `QELMConfig.from_dict` reads it back.

        Examples:
            >>> d = QELMConfig(n_qubits=3).to_dict()
            >>> d["n_qubits"], "backend" in d
            (3, False)
        """
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> QELMConfig:
        """A config from a dictionary of fields (missing fields take their defaults).

        Args:
            data: `{field: value}`, as `to_dict` writes it or a TOML `[model]` table holds it.

        Returns:
            The validated config.

        Raises:
            ConfigError: a key is not a field (the message lists the valid ones), or a value is invalid.

        Examples:
            >>> QELMConfig.from_dict({"n_qubits": 3}) == QELMConfig(n_qubits=3)
            True
        """
        known = {f.name for f in fields(cls)}
        runtime = sorted(set(data) & set(RUNTIME_FIELDS))
        if runtime:
            raise ConfigError(f"config field(s) {', '.join(runtime)} say how the model runs, not what it is: give "
                              f"them under [runtime] (backend = \"qelm.fused\", shots = ..., backend_options = {{...}}) "
                              f"or as QELM(config, backend=BackendSpec(...))")
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(f"unknown config field(s) {', '.join(unknown)}: valid fields are {', '.join(sorted(known))}")
        return cls(**data)

    def to_toml(self, path: str | os.PathLike | None = None) -> str:
        """The config as TOML text, also written to `path` when one is given.

        Args:
            path: a file to write (UTF-8), or None to only return the text.

        Returns:
            The TOML text; `QELMConfig.from_toml` reads it back.

        Examples:
            >>> text = QELMConfig(n_qubits=3).to_toml()
            >>> "n_qubits = 3" in text and QELMConfig.from_toml(text) == QELMConfig(n_qubits=3)
            True
        """
        text = tomli_w.dumps(self.to_dict())
        if path is not None:
            Path(path).write_text(text, encoding="utf-8")
        return text

    @classmethod
    def from_toml(cls, path_or_text: str | os.PathLike) -> QELMConfig:
        """Load from a TOML file path, or from TOML text.

        Args:
            path_or_text: a path of a TOML file, or TOML text (a string with a line break). The fields are
                read from its `[model]` table, or from its top level when it has none.

        Returns:
            The validated config.

        Raises:
            ConfigError: the file is missing, not UTF-8 or not TOML, or a field is unknown or invalid.

        Examples:
            >>> QELMConfig.from_toml("[model]\\nn_qubits = 3\\n").n_qubits
            3
        """
        p = Path(path_or_text) if not (isinstance(path_or_text, str) and "\n" in path_or_text) else None
        if p is not None and wrong_kind(p):
            raise ConfigError(f"config file {str(p)!r} {wrong_kind(p)}: give a TOML file")
        if p is not None and not p.exists():
            raise ConfigError(f"config file {str(p)!r} does not exist")
        try:
            text = p.read_text(encoding="utf-8") if p is not None else str(path_or_text)
        except UnicodeDecodeError as e:
            raise ConfigError(f"config file {str(p)!r} is not UTF-8 text (byte 0x{e.object[e.start]:02x} at offset "
                              f"{e.start}; a binary file?): give a TOML file") from None
        try:
            data = tomllib.loads(text)
        except tomllib.TOMLDecodeError as e:
            raise ConfigError(f"config {str(p) if p else 'text'} is not valid TOML: {e}") from None
        return cls.from_dict(model_table(data, f"config file {str(p)!r}" if p else "config text"))

    def circuit(self, name: str):
        """The circuit `name` (built-in or registered) at this config's qubits and layers (and readout, for the
        circuits whose outputs are features: embeddings, attention features, feed-forward).

        Args:
            name: a name of `qelm.CIRCUITS`.

        Returns:
            Circuit: the circuit, built by `qelm.build_circuit`.

        Examples:
            >>> QELMConfig(n_qubits=3).circuit("angle").n_qubits
            3
        """
        fixed = name in ("fidelity", "swap_test")
        return build_circuit(name, self.n_qubits, self.circuit_layers, "z" if fixed else self.readout)


# --- helpers for code that loads or compares configs ------------------------------------------------------
def read_toml(path: str | os.PathLike, *, what: str | None = None) -> dict[str, Any]:
    """The tables of the TOML file ``path``. A missing file raises ``FileNotFoundError``, a file that is
    not UTF-8 TOML ``ValueError``; both messages start with ``what`` (default ``config file 'PATH'``)."""
    p = Path(path)
    what = what or f"config file {str(p)!r}"
    if wrong_kind(p):
        raise ConfigError(f"{what} {wrong_kind(p)}: give a TOML file")
    if not p.is_file():
        raise FileNotFoundError(f"{what} does not exist")
    try:
        return tomllib.loads(p.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise ConfigError(f"{what} is not valid TOML ({e})") from None


CONFIG_FILE_LAYOUT = ("a config file holds the model's fields under [model] (d_model = 16, n_qubits = 4, ...; an "
                      "empty [model] is the default model) and training settings under [train] (steps = 300, ...)")


def model_table(data: dict[str, Any], what: str) -> dict[str, Any]:
    """The model fields of a config file's tables: its ``[model]`` table, or its top-level fields when it
    has none. A file with a ``[train]`` table must put the model under ``[model]``: say so, rather than
    calling ``train`` an unknown field."""
    if "model" in data:
        if not isinstance(data["model"], dict):
            raise ConfigError(f"{what}: model must be a table ([model]); {CONFIG_FILE_LAYOUT}")
        return data["model"]
    if "train" in data:
        raise ConfigError(f"{what} has a [train] table but no [model] table: {CONFIG_FILE_LAYOUT}")
    return data


#: fields a config file written before ``[runtime]`` existed holds among the model's: how it runs (``batch_hint``,
#: the batch an old memory check assumed, is read and dropped)
RUNTIME_FIELDS = (*BACKEND_FIELDS, "batch_hint")


def split_runtime(fields: dict[str, Any], runtime: dict[str, Any] | None = None) -> tuple[dict[str, Any], BackendSpec]:
    """``(model fields, spec)`` of a config file's tables: the model's fields without the runtime ones an older
    file holds among them, and the :class:`BackendSpec` of its ``runtime`` table (or, in an older file, of those
    fields)."""
    if runtime is not None and not isinstance(runtime, dict):
        raise ConfigError("runtime must be a table ([runtime]) of backend, shots and backend_options")
    unknown = sorted(set(runtime or {}) - set(BACKEND_FIELDS))
    if unknown:
        raise ConfigError(f"unknown runtime field(s) {', '.join(unknown)}: valid fields are {', '.join(BACKEND_FIELDS)}")
    both = sorted(set(fields) & set(BACKEND_FIELDS)) if runtime is not None else []
    if both:
        raise ConfigError(f"{both[0]} is given twice, among the model's fields and in [runtime]: keep the [runtime] one")
    model = {k: v for k, v in fields.items() if k not in RUNTIME_FIELDS}
    return model, BackendSpec.from_fields(runtime if runtime is not None else fields)


def config_differences(a: QELMConfig, b: QELMConfig) -> list[str]:
    """``["d_model: 16 vs 8", ...]`` for every architecture field where ``a`` and ``b`` differ."""
    da, db = a.to_dict(), b.to_dict()
    names = list(dict.fromkeys([*da, *db]))
    return [f"{n}: {da.get(n)!r} vs {db.get(n)!r}" for n in names if da.get(n) != db.get(n)]


def _check_parameters(config: QELMConfig, have: int) -> None:
    # x16: float32 weights, their gradients and AdamW's two moments
    need = 16 * config.parameter_bound()
    if need > have:
        sizes = {n: getattr(config, n) for n in ("vocab_size", "d_model", "d_hidden", "n_layers", "context_len",
                                                 "n_heads", "n_qubits", "circuit_layers")}
        largest = max(sizes, key=lambda n: sizes[n])
        model = ", ".join(f"{k}={v}" for k, v in sizes.items())
        raise ConfigError(
            f"config field {largest}={sizes[largest]!r} is invalid: a model of {model} has about "
            f"{config.parameter_bound():.3g} parameters, which need about {format_bytes(need)} to train, more than "
            f"this machine's {format_bytes(have)}; use smaller sizes"
        )


def check_fits(config: QELMConfig, batch: int | None = None, have: int | None = None) -> None:
    """Refuse a model this machine cannot train: its parameters (with their gradients and optimizer moments)
    and, given ``batch`` (sequences per pass), its circuits' state vectors, against ``have`` bytes (default:
    the memory available here). Where the model meets its machine (building it, training it) calls this."""
    have = available_memory_bytes() if have is None else have
    _check_parameters(config, have)
    if batch is None:
        return
    circuits, wires, need = config.circuit_memory(batch)
    if need > have:
        raise ConfigError(
            f"config field n_qubits={config.n_qubits!r} is invalid: {circuits} circuits of {wires} qubits need "
            f"about {format_bytes(need)} of state vectors, more than this machine's {format_bytes(have)}; "
            f"use fewer qubits, a shorter context_len or a smaller batch"
        )
