"""``BackendSpec``: how a model's circuits run (the backend's name, shots and its options), apart from
what the model is. It is checked in one place (:meth:`BackendSpec.problems`) and becomes a
:class:`~qelm.backends.base.Backend` in one place (:meth:`BackendSpec.build`).

A config file or a checkpoint holds them in its ``[runtime]`` table (``backend``, ``shots``,
``backend_options``: :meth:`BackendSpec.to_table`); one written before that table existed holds them among the
model's fields, where :meth:`BackendSpec.from_fields` reads them too, so those files keep loading.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..errors import BackendError
from .base import MAX_SHOTS, Backend
from .registry import BACKENDS, get_backend, is_pennylane_device

__all__ = ["BackendSpec", "BACKEND_FIELDS", "DEFAULT_BACKEND"]

DEFAULT_BACKEND = "qelm.fused"
#: the names these settings have among a config file's model fields
BACKEND_FIELDS = ("backend", "shots", "backend_options")


@dataclass(frozen=True)
class BackendSpec:
    """The simulator circuits run on: ``name`` (see :mod:`qelm.backends`), ``shots`` (None: exact
    expectations; an int: sampled) and the backend's ``options`` (seed, noise, mitigation, dtype, ...).

    A model holds one (``model.spec``); ``QELM(config, spec)`` builds a model that runs on it, and
    ``model.set_backend(...)`` swaps it without retraining. Config files and checkpoints write it as their
    ``[runtime]`` table.

    Examples:
        >>> from qelm import BackendSpec
        >>> spec = BackendSpec("default.qubit", shots=1000)
        >>> spec.problems()
        []
        >>> spec.to_table()
        {'backend': 'default.qubit', 'shots': 1000, 'backend_options': {}}
        >>> BackendSpec("qelm.fused", shots=100).problems()[0][0]
        'shots'
        >>> type(BackendSpec().build()).__name__
        'FusedBackend'
    """

    name: str = DEFAULT_BACKEND
    shots: int | None = None
    options: dict[str, Any] = field(default_factory=dict)

    def problems(self) -> list[tuple[str, str]]:
        """``[(field, what would be valid), ...]`` for every setting that cannot run, by its config-file name;
        empty when the spec is valid. The backend's own options are checked when it is built."""
        found = []
        if self.shots is not None and (isinstance(self.shots, bool) or not isinstance(self.shots, int)
                                       or not 1 <= self.shots <= MAX_SHOTS):
            found.append(("shots", f"use None (exact) or an integer from 1 to {MAX_SHOTS} (2**31 - 1)"))
        if not isinstance(self.options, dict):
            found.append(("backend_options", "use a table of option names to values"))
        if self.name not in BACKENDS and not is_pennylane_device(self.name):
            found.append(("backend", f"choose one of {', '.join(sorted(BACKENDS))}, or the name of an installed "
                                     "PennyLane device (e.g. default.mixed)"))
        elif self.name == "qelm.fused" and self.shots is not None:
            found.append(("shots", "backend qelm.fused is exact and takes no shots: use backend qiskit.aer or "
                                   "default.qubit for sampled estimates, or remove shots"))
        return found

    def check(self) -> BackendSpec:
        """This spec, or ``BackendError`` naming its first problem."""
        problems = self.problems()
        if problems:
            name, valid = problems[0]
            raise BackendError(f"{name}={self.field_values()[name]!r} is invalid: {valid}")
        return self

    def build(self) -> Backend:
        """The backend this spec names, with its shots and options (an unavailable one raises here)."""
        return get_backend(self.check().name, **self.kwargs())

    def kwargs(self) -> dict[str, Any]:
        """Keyword arguments that build this backend: ``get_backend(spec.name, **these)``."""
        return {"shots": self.shots, **self.options}

    def field_values(self) -> dict[str, Any]:
        """``{"backend": ..., "shots": ..., "backend_options": ...}``: the spec by its config-file names."""
        return {"backend": self.name, "shots": self.shots, "backend_options": self.options}

    def to_table(self) -> dict[str, Any]:
        """The ``[runtime]`` table of a config file: :meth:`field_values` without ``shots`` when exact (TOML
        has no null; absent means exact)."""
        return {k: v for k, v in self.field_values().items() if v is not None}

    @classmethod
    def from_fields(cls, fields: dict[str, Any]) -> BackendSpec:
        """The spec in a config's fields (``backend``, ``shots``, ``backend_options``; absent ones default)."""
        return cls(fields.get("backend", DEFAULT_BACKEND), fields.get("shots"), fields.get("backend_options", {}))

    def replaced(self, backend: str | None, options: dict[str, Any]) -> BackendSpec:
        """This spec running on ``backend`` with ``options`` (``shots`` among them) instead of its own; the
        same spec when neither is given."""
        if backend is None and not options:
            return self
        options = dict(options)
        shots = options.pop("shots", self.shots)
        return BackendSpec(backend or self.name, shots, options)
