"""The search space of a sweep: a TOML file, read and checked before any trial runs.

::

    [sweep]          how the sweep runs: trials, seeds, sampler (keys of SWEEP_DEFAULTS)
    [model]          QELMConfig fields every trial shares (over the demo config's [model])
    [train]          training settings every trial shares (over the demo config's [train]); ``tokens``
                     instead of ``steps`` gives a token budget: steps = tokens // (batch_size * context_len)
    [search.model]   QELMConfig fields the sampler chooses
    [search.train]   training settings the sampler chooses (those of SEARCHABLE_SETTINGS)
    [runtime]        how every trial's circuits run: backend, shots, backend_options (over the demo config's)

A searched value is a list of choices (``n_qubits = [2, 4, 6]``) or a range (``lr = { low = 0.003,
high = 0.03, log = true }``; ``step`` makes it a grid, integer bounds an integer range). Any field of
:class:`~qelm.config.QELMConfig` can be searched except ``vocab_size`` (the tokenizer sets it); names are
checked against the dataclass, so a field added to it is searchable at once. The backend is not the model: one
``[runtime]`` serves the whole sweep (a file that sets it under ``[model]`` is refused with that advice).

Every combination of the model choices must be a valid model: :func:`load_space` builds a
``QELMConfig`` for each (that check refuses, say, a ``d_model`` not divisible by an ``n_heads`` or more
qubits than memory holds at the largest batch) and refuses the file naming the field, before any trial.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..backends import BackendSpec
from ..config import RUNTIME_FIELDS, QELMConfig, check_fits, read_toml, split_runtime
from ..data import bundled_config
from ..errors import ConfigError
from ..evaluate import MAX_SAMPLE_TOKENS
from ..train import TRAIN_DEFAULTS, TrainOverrides
from ..train.settings import check_settings
from .dimensions import Dimension, combinations, parse_dimension

__all__ = ["Dimension", "SearchSpace", "load_space", "parse_space", "model_key", "SWEEP_DEFAULTS",
           "SEARCHABLE_SETTINGS", "SAMPLERS"]

#: the [sweep] table: what each key means is in examples/sweep.toml
SWEEP_DEFAULTS: dict[str, Any] = {
    "name": None,  # study name (default: the space file's name without .toml)
    "trials": 20,  # configurations the sampler proposes; each trains at every seed
    "seeds": [0, 1, 2],  # every configuration and its classical baselines train at each (>= 3 gives a spread)
    "sampler": "tpe",  # "tpe", "random" or "grid"
    "sampler_seed": 0,  # the same space and seed propose the same configurations (one worker)
    "sample_tokens": 400,  # tokens sampled per model for distinct-1/2 and the repetition rate (0: none)
}
SAMPLERS = ("tpe", "random", "grid")
#: training settings [search.train] may choose; the others are fixed for the whole sweep
SEARCHABLE_SETTINGS = ("steps", "tokens", "batch_size", "lr", "lr_schedule", "warmup_steps", "min_lr", "grad_clip",
                       "weight_decay")
_NOT_THE_MODEL = ("seed", "twin", "matched", "eval_every", "save_every", "log_every")  # settings that train the same model
_FIXED_SETTINGS = tuple(k for k in TRAIN_DEFAULTS if k not in ("seed", "twin", "matched")) + ("tokens",)
_UNSEARCHABLE_FIELDS = {"vocab_size": "the tokenizer sets it"}
_MAX_COMBINATIONS = 200_000  # model configurations load_space builds to prove each is valid
#: fields that do not change a model when no slot runs circuits (or no embedding / fidelity circuit)
_CIRCUIT_FIELDS = ("n_qubits", "circuit_layers", "embedding_circuit", "fidelity_method", "adaptive_threshold",
                   "backend", "shots", "backend_options", "readout")


@dataclass
class SearchSpace:
    """A checked search space: fixed model fields and settings, the searched dimensions, the sweep's options."""

    source: str  # the file it came from, for messages
    text: str  # the TOML text (a resumed or joined sweep reads it back from the study)
    model: dict[str, Any]  # QELMConfig fields every trial shares
    train: dict[str, Any]  # training settings every trial shares (may hold "tokens")
    dims: list[Dimension] = field(default_factory=list)
    sweep: dict[str, Any] = field(default_factory=dict)
    runtime: dict[str, Any] = field(default_factory=dict)  # the [runtime] table: how every trial's circuits run

    @property
    def spec(self) -> BackendSpec:
        """How every trial's circuits run (the ``[runtime]`` table, checked on load)."""
        return BackendSpec.from_fields(self.runtime)

    @property
    def name(self) -> str:
        return self.sweep["name"] or Path(self.source).stem

    @property
    def seeds(self) -> list[int]:
        return list(self.sweep["seeds"])

    def grid(self) -> dict[str, list]:
        """``{param: values}`` for Optuna's GridSampler (every dimension is finite: checked on load)."""
        grid = {}
        for d in self.dims:
            values = d.values()
            assert values is not None  # checked on load
            grid[d.param] = values
        return grid

    def grid_size(self) -> int | None:
        values = [d.values() for d in self.dims]
        return math.prod(len(v) for v in values if v is not None) if all(v is not None for v in values) else None

    def build(self, values: dict[str, Any], vocab_size: int) -> tuple[QELMConfig, TrainOverrides]:
        """The model config and training settings of one trial from its ``{param: value}``."""
        model = {**self.model, **{d.name: values[d.param] for d in self.dims if d.table == "model"}}
        train = {**self.train, **{d.name: values[d.param] for d in self.dims if d.table == "train"}}
        return _config(model, train, vocab_size), _settings(model, train)

    def suggest(self, trial, vocab_size: int) -> tuple[QELMConfig, TrainOverrides]:
        """Ask ``trial`` for a value of every dimension and build that trial's config and settings."""
        return self.build({d.param: d.suggest(trial) for d in self.dims}, vocab_size)


def _config(model: dict[str, Any], train: dict[str, Any], vocab_size: int) -> QELMConfig:
    config = QELMConfig.from_dict({**model, "vocab_size": vocab_size})
    check_fits(config, train["batch_size"])  # the memory check at the trial's own batch
    return config


def _settings(model: dict[str, Any], train: dict[str, Any]) -> TrainOverrides:
    train = dict(train)
    tokens = train.pop("tokens", None)
    if tokens is not None:  # a token budget: as many steps as it buys at this batch and context
        train["steps"] = max(1, tokens // (train["batch_size"] * model.get("context_len", QELMConfig.context_len)))
    return TrainOverrides(**train)


def model_key(config: QELMConfig, settings: TrainOverrides, spec: BackendSpec | None = None) -> str:
    """A short hash naming a model, how it runs (``spec``, default exact on qelm.fused) and how it trains: equal
    keys train the same model on the same batches (at the same seed). Fields that change nothing (circuit options
    and the backend of a config without circuits, the embedding circuit of a classical embedding, the fidelity
    options of other attention) are left out."""
    c = {**config.to_dict(), **(spec or BackendSpec()).to_table()}
    drop = []
    if not config.uses_circuits:
        drop += list(_CIRCUIT_FIELDS)
    if config.embedding != "quantum":
        drop.append("embedding_circuit")
    if config.attention != "fidelity":
        drop += ["fidelity_method", "adaptive_threshold"]
    for name in drop:
        c.pop(name, None)
    s = {k: v for k, v in settings.to_dict().items() if k not in _NOT_THE_MODEL}
    return hashlib.sha256(json.dumps([c, s], sort_keys=True).encode()).hexdigest()[:12]


# --- reading and checking -----------------------------------------------------------------------------------
def load_space(path: str | os.PathLike) -> SearchSpace:
    """Read and check the search space file ``path`` (layout in the module docstring). Raises
    ``FileNotFoundError`` or ``ValueError`` naming the file, the table and the field."""
    p = Path(path)
    read_toml(p, what=f"search space {str(p)!r}")  # the error for a missing or broken file
    return parse_space(p.read_text(encoding="utf-8"), source=str(p))


def parse_space(text: str, source: str = "<space>") -> SearchSpace:
    """:func:`load_space` on TOML ``text``."""
    where = f"search space {source!r}"
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{where} is not valid TOML ({e})") from None

    def bad(msg: str) -> ConfigError:
        return ConfigError(f"{where}: {msg}")

    unknown = sorted(set(data) - {"sweep", "model", "train", "search", "runtime"})
    if unknown:
        raise bad(f"unknown table(s) {', '.join(f'[{u}]' for u in unknown)}: use [sweep], [model], [train], "
                  f"[search.model], [search.train] and [runtime]")
    for table in ("sweep", "model", "train", "search", "runtime"):
        if not isinstance(data.get(table, {}), dict):
            raise bad(f"[{table}] must be a table")
    search = data.get("search", {})
    unknown = sorted(set(search) - {"model", "train"})
    if unknown:
        raise bad(f"unknown table(s) {', '.join(f'[search.{u}]' for u in unknown)}: use [search.model] (QELMConfig "
                  f"fields) and [search.train] (training settings)")
    sweep = _sweep_options(data.get("sweep", {}), bad)
    for table in ("model", "search"):
        given = data.get("model", {}) if table == "model" else search.get("model", {})
        moved = sorted(set(given if isinstance(given, dict) else {}) & set(RUNTIME_FIELDS))
        if moved:
            named = "[model]" if table == "model" else "[search.model]"
            raise bad(f"{named} {moved[0]} says how the trials run, not what the model is: set it under [runtime] "
                      f"(backend, shots, backend_options; one for the whole sweep)")
    demo = read_toml(bundled_config())
    runtime = {**demo.get("runtime", {}), **data.get("runtime", {})}
    try:
        split_runtime({}, runtime)[1].check()
    except ValueError as e:
        raise bad(f"[runtime]: {e}") from None
    fields = [f.name for f in dataclasses.fields(QELMConfig)]
    model = {**demo["model"], **_fixed(data.get("model", {}), "model", fields, bad)}
    model.pop("vocab_size", None)
    train = {k: v for k, v in demo["train"].items() if k != "seed"}
    given_train = _fixed(data.get("train", {}), "train", list(_FIXED_SETTINGS), bad)
    if "tokens" in given_train:
        train.pop("steps", None)
    train.update(given_train)

    def dimension(table: str, name: str, value: Any) -> Dimension:  # the name first: then its values
        allowed = [n for n in fields if n not in _UNSEARCHABLE_FIELDS] if table == "model" else list(SEARCHABLE_SETTINGS)
        if name in _UNSEARCHABLE_FIELDS and table == "model":
            raise bad(f"[search.model] {name} cannot be searched: {_UNSEARCHABLE_FIELDS[name]}")
        if name not in allowed:
            what = "QELMConfig field" if table == "model" else "searchable training setting"
            other = "train" if table == "model" else "model"
            hint = (f" ({name} is a {'training setting' if other == 'train' else 'model field'}: put it under "
                    f"[search.{other}])") if name in (SEARCHABLE_SETTINGS if other == "train" else fields) else ""
            raise bad(f"[search.{table}] {name!r} is not a {what}{hint}; valid names are {', '.join(allowed)}")
        return parse_dimension(table, name, value, bad)

    dims = [dimension("model", name, value) for name, value in _table(search, "model", bad).items()]
    dims += [dimension("train", name, value) for name, value in _table(search, "train", bad).items()]
    searched = {d.name for d in dims if d.table == "train"}
    if {"steps", "tokens"} <= searched | set(given_train):
        raise bad("give steps or tokens (a token budget), not both: [train] / [search.train] set both")
    if searched & {"tokens"}:
        train.pop("steps", None)
    space = SearchSpace(source=source, text=text, model=model, train=train, dims=dims, sweep=sweep, runtime=runtime)
    if sweep["sampler"] == "grid":
        continuous = [d.name for d in dims if d.values() is None]
        if continuous:
            raise bad(f"sampler 'grid' needs a finite set of values: give {', '.join(continuous)} a list or a step")
    _check_settings(space, bad)
    _check_models(space, bad)
    return space


def _table(search: dict, name: str, bad) -> dict:
    table = search.get(name, {})
    if not isinstance(table, dict):
        raise bad(f"[search.{name}] must be a table")
    return table


_SWEEP_OWNED = {"seed": "the sweep trains every model at each of [sweep] seeds",
                "twin": "every trial trains the classical twin", "matched": "every trial trains the matched model"}


def _fixed(table: dict, name: str, valid: list[str], bad) -> dict:
    owned = sorted(set(table) & set(_SWEEP_OWNED)) if name == "train" else []
    if owned:
        raise bad(f"[train] {owned[0]} cannot be set: {_SWEEP_OWNED[owned[0]]}")
    unknown = sorted(set(table) - set(valid))
    if unknown:
        what = "QELMConfig field" if name == "model" else "training setting"
        raise bad(f"[{name}] {', '.join(repr(u) for u in unknown)} is not a {what}; valid names are {', '.join(valid)}")
    for key, value in table.items():
        if isinstance(value, (list, dict)):
            raise bad(f"[{name}] {key} = {value!r} is a list or range: searched values go in [search.{name}]")
    return dict(table)


def _sweep_options(table: dict, bad) -> dict:
    unknown = sorted(set(table) - set(SWEEP_DEFAULTS))
    if unknown:
        raise bad(f"[sweep] {', '.join(repr(u) for u in unknown)} is not a sweep option; valid options are "
                  f"{', '.join(SWEEP_DEFAULTS)}")
    opts = {**SWEEP_DEFAULTS, **table}

    def whole(name: str, minimum: int) -> None:
        v = opts[name]
        if isinstance(v, bool) or not isinstance(v, int) or v < minimum:
            raise bad(f"[sweep] {name} = {v!r} is invalid: use an integer >= {minimum}")

    whole("trials", 1)
    whole("sampler_seed", 0)
    whole("sample_tokens", 0)
    if opts["sample_tokens"] > MAX_SAMPLE_TOKENS:
        raise bad(f"[sweep] sample_tokens = {opts['sample_tokens']} is too many: use at most {MAX_SAMPLE_TOKENS}")
    seeds = opts["seeds"]
    if isinstance(seeds, int) and not isinstance(seeds, bool) and seeds >= 1:
        seeds = list(range(seeds))
    if (not isinstance(seeds, list) or not seeds or len(set(seeds)) != len(seeds)
            or any(isinstance(s, bool) or not isinstance(s, int) or s < 0 for s in seeds)):
        raise bad(f"[sweep] seeds = {opts['seeds']!r} is invalid: use a list of distinct integers >= 0, e.g. "
                  f"[0, 1, 2], or a count")
    opts["seeds"] = seeds
    if opts["sampler"] not in SAMPLERS:
        raise bad(f"[sweep] sampler = {opts['sampler']!r} is invalid: choose one of {', '.join(SAMPLERS)}")
    if opts["name"] is not None and (not isinstance(opts["name"], str) or not opts["name"].strip()):
        raise bad(f"[sweep] name = {opts['name']!r} is invalid: use a non-empty string")
    return opts


def _check_settings(space: SearchSpace, bad) -> None:
    dims = [d for d in space.dims if d.table == "train"]
    context = [d for d in space.dims if d.table == "model" and d.name == "context_len"]
    for combo in combinations(dims + context):
        ctx = combo.pop("context_len", None)
        train = {**space.train, **combo}
        model = {**space.model, **({"context_len": ctx} if ctx is not None else {})}
        if "tokens" in train:
            t = train["tokens"]
            if isinstance(t, bool) or not isinstance(t, int) or t < 1:
                raise bad(f"tokens = {t!r} is invalid: use a token budget >= 1")
            per_step = train.get("batch_size", 1) * model.get("context_len", QELMConfig.context_len)
            if isinstance(per_step, int) and t < per_step:
                raise bad(f"tokens = {t} buys no step: one step of batch_size x context_len reads {per_step} tokens")
        try:
            check_settings(_settings(model, {**TRAIN_DEFAULTS, **train, "seed": 0}).to_dict())
        except (TypeError, ValueError) as e:
            which = f" (with {', '.join(f'{k}={v!r}' for k, v in combo.items())})" if combo else ""
            raise bad(f"[train]/[search.train]{which}: {e}") from None


def _check_models(space: SearchSpace, bad) -> None:
    dims = [d for d in space.dims if d.table == "model"]
    sizes = [len(d.values() or [0, 0]) for d in dims]
    if math.prod(sizes) > _MAX_COMBINATIONS:
        raise bad(f"[search.model] spans {math.prod(sizes)} model configurations, more than the {_MAX_COMBINATIONS} "
                  f"that can be checked to be valid before the sweep: narrow some choices")
    batches = [d.values() or [d.high] for d in space.dims if d.table == "train" and d.name == "batch_size"]
    batch = max(batches[0]) if batches else space.train.get("batch_size", TRAIN_DEFAULTS["batch_size"])
    for combo in combinations(dims):
        try:
            _config({**space.model, **combo}, {"batch_size": batch}, vocab_size=2)
        except (TypeError, ValueError) as e:
            if not combo:
                raise bad(f"[model]: {e}") from None
            shown = ", ".join(f"{k}={v!r}" for k, v in combo.items())
            raise bad(f"the model {shown} is impossible: {e}; change the choices in [search.model]") from None
