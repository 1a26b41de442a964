"""The examples in the public API's docstrings run, and say what they show: every name of ``qelm.__all__``
(and ``Backend.run``/``expval``/``state``, ``Circuit``) has an ``Examples:`` section with ``>>>`` lines,
and its Args/Returns where it takes arguments or returns something; every example passes as a doctest."""

import doctest
import importlib
import inspect

import pytest
import torch

import qelm
from qelm.backends.base import Backend

pytestmark = pytest.mark.usefixtures("_one_thread")

#: the modules whose docstrings hold the public API's examples
MODULES = ["qelm.config", "qelm.model", "qelm.layers", "qelm.circuits.base", "qelm.circuits.registry",
           "qelm.backends.base", "qelm.backends.registry", "qelm.backends.spec", "qelm.train.settings", "qelm.train.results",
           "qelm.data", "qelm.checkpoint", "qelm.evaluate"]

#: public names that are data, not callables: documented by an attribute docstring, with nothing to run
DATA = {"CIRCUITS", "__version__", "DISTRIBUTION"}


@pytest.mark.parametrize("module", MODULES)
def test_the_examples_in_the_docstrings_run(module):
    torch.manual_seed(0)
    result = doctest.testmod(importlib.import_module(module), optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE,
                             verbose=False, report=True)
    assert result.attempted > 0, f"{module} has no examples"
    assert result.failed == 0, f"{result.failed} of {result.attempted} examples of {module} failed (the report is above)"


def _public():
    for name in qelm.__all__:
        if name not in DATA:
            yield name, getattr(qelm, name)
    for name in ("run", "expval", "state"):
        yield f"Backend.{name}", getattr(Backend, name)


@pytest.mark.parametrize(("name", "obj"), list(_public()), ids=[n for n, _ in _public()])
def test_every_public_name_has_an_example_and_its_args_and_returns(name, obj):
    doc = inspect.getdoc(obj) or ""
    assert "Examples:" in doc and ">>> " in doc, f"{name}: its docstring needs an Examples: section with >>> lines"
    module = inspect.getmodule(obj)
    assert module is not None and module.__name__ in MODULES, f"{name}: add {module} to MODULES so its examples run"
    target = obj.__init__ if inspect.isclass(obj) else obj
    if inspect.isclass(obj) and (not hasattr(obj, "__dataclass_fields__") or obj.__init__ is object.__init__):
        params = [p for p in inspect.signature(target).parameters if p not in ("self", "args", "kwargs")]
        if params and not hasattr(obj, "__dataclass_fields__"):
            assert "Args:" in doc, f"{name}: its docstring needs an Args: section for {', '.join(params)}"
    if inspect.isfunction(obj):
        params = [p for p in inspect.signature(obj).parameters if p != "self"]
        if params:
            assert "Args:" in doc, f"{name}: its docstring needs an Args: section for {', '.join(params)}"
        assert "Returns:" in doc, f"{name}: its docstring needs a Returns: section"


def test_every_config_field_has_a_docstring_the_reference_shows():
    """The fields are documented by a docstring under each (what mkdocstrings shows), not by comments."""
    griffe = pytest.importorskip("griffe", reason="griffe comes with the docs extra: pip install -e '.[docs]'")
    config = griffe.load("qelm.config", search_paths=[str(qelm.__path__[0] + "/..")])["QELMConfig"]
    missing = [f for f in qelm.QELMConfig.__dataclass_fields__ if not config.members[f].docstring]
    assert not missing, f"QELMConfig fields without a docstring: {', '.join(missing)}"


def test_every_public_method_of_an_exported_class_has_a_docstring():
    missing = []
    for name, cls in [(n, getattr(qelm, n)) for n in qelm.__all__ if inspect.isclass(getattr(qelm, n))] + [("Backend", Backend)]:
        for attr, value in vars(cls).items():
            func = value.fget if isinstance(value, property) else getattr(value, "__func__", value)
            if not attr.startswith("_") and callable(func) and not (func.__doc__ or "").strip():
                missing.append(f"{name}.{attr}")
    assert not missing, f"public methods without a docstring: {', '.join(missing)}"
