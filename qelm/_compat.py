"""Old usage that keeps working for one release: names that moved to another module (each use warns with
a ``DeprecationWarning`` naming the new home), and the package modules ``qelm.train`` and
``qelm.compare``, which stay callable as the functions of the same name they once were hidden behind.
"""

from __future__ import annotations

import importlib
import inspect
import sys
import types
import warnings
from collections.abc import Callable
from typing import Any

__all__ = ["moved_names", "make_callable"]


def moved_names(module: str, moved: dict[str, str]) -> Callable[[str], Any]:
    """A module ``__getattr__`` for ``module`` that serves each old name of ``moved`` from its new home
    (``"qelm.config:with_backend"``), with a ``DeprecationWarning`` that says where it went."""

    def __getattr__(name: str) -> Any:
        if name not in moved:
            raise AttributeError(f"module {module!r} has no attribute {name!r}")
        home, _, new = moved[name].partition(":")
        warnings.warn(f"{module}.{name} moved to {home}.{new}; the old name goes in the next release",
                      DeprecationWarning, stacklevel=2)
        return getattr(importlib.import_module(home), new)

    return __getattr__


class _CallableModule(types.ModuleType):
    """A module that calls its function of the same name: ``qelm.train(...)`` runs ``qelm.train.train``."""

    def _function(self) -> Callable[..., Any]:
        return getattr(self, self.__name__.rpartition(".")[2])

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self._function()(*args, **kwargs)

    @property
    def __signature__(self) -> inspect.Signature:
        return inspect.signature(self._function())


def make_callable(module: str) -> None:
    """Let module ``module`` (already imported) be called as its function of the same name, so that
    ``from qelm import train; train(...)`` works while ``import qelm.train`` still gives the module."""
    sys.modules[module].__class__ = _CallableModule
