"""The architecture as the imports say it: every module of ``qelm/`` imports only its own layer or the
layers below it, in the order the README's architecture section lists, and no imports run in a circle.

The imports are read from the source (``ast``), every one of them: at the top of a module, inside a
function, under ``TYPE_CHECKING``, and ``importlib.import_module`` calls (a call whose module name is not
a literal counts as importing every module of qelm its module names in a string, as the backend registry
names its backends)."""

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "qelm"

#: bottom to top: a module may import from its own layer and the layers below it, never above
LAYERS: list[tuple[str, tuple[str, ...]]] = [
    ("ground floor", ("qelm.errors", "qelm.version", "qelm.files", "qelm.memlimit", "qelm.memory", "qelm.distributed",
                      "qelm.paths", "qelm.folders", "qelm.disk", "qelm.redact", "qelm.pretrained_source")),
    ("text and records", ("qelm.tokenizer", "qelm.words", "qelm.data", "qelm.ptb", "qelm.metrics", "qelm.plot")),
    ("circuits", ("qelm.circuits",)),
    ("backends", ("qelm.backends",)),
    ("config", ("qelm.config",)),
    ("layers", ("qelm.kv_cache", "qelm.layers")),
    ("model files", ("qelm.model_files", "qelm.model_contents", "qelm.sampling")),
    ("models", ("qelm.decode", "qelm.model", "qelm.quixer", "qelm.baselines")),
    ("checkpoints and use", ("qelm.checkpoint", "qelm.evaluate", "qelm.chat")),
    ("drawings and exports", ("qelm.export", "qelm.draw", "qelm.gallery")),
    ("train", ("qelm.train", "qelm.windows", "qelm.ptb_models")),
    ("compare", ("qelm.compare",)),
    ("sweep", ("qelm.sweep",)),
    ("bench", ("qelm.bench",)),
    ("the public API", ("qelm",)),
    ("command line", ("qelm.cli", "qelm.__main__")),
]


def _modules() -> dict[str, Path]:
    found = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = list(path.relative_to(ROOT).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        found[".".join(parts)] = path
    return found


MODULES = _modules()


def _resolve(name: str) -> str | None:
    """The module of qelm that ``name`` (a module, or a name inside one) is, or None outside qelm."""
    while name and name not in MODULES:
        name = name.rpartition(".")[0]
    return name or None


def _imports(module: str) -> dict[str, list[int]]:
    """``{imported module of qelm: [line, ...]}`` for every import in ``module``'s source."""
    path = MODULES[module]
    tree = ast.parse(path.read_text(encoding="utf-8"))
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found: dict[str, list[int]] = {}

    def add(name: str, line: int) -> None:
        target = _resolve(name)
        if target is not None and target != module:
            found.setdefault(target, []).append(line)

    dynamic = False
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                add(alias.name, node.lineno)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join(anchor + ([node.module] if node.module else []))
            for alias in node.names:  # a name may be a module of its own: `from . import layers`
                add(f"{base}.{alias.name}" if f"{base}.{alias.name}" in MODULES else base, node.lineno)
        elif isinstance(node, ast.Call) and getattr(node.func, "attr", getattr(node.func, "id", None)) in (
                "import_module", "__import__"):
            argument = node.args[0] if node.args else None
            if isinstance(argument, ast.Constant) and isinstance(argument.value, str):
                add(argument.value, node.lineno)
            else:
                dynamic = True
    if dynamic:  # names built at run time: every module of qelm the source names in a string
        for node in ast.walk(tree):
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and re.fullmatch(r"[\w.]+", node.value):
                for candidate in (node.value, f"{package}.{node.value}"):
                    if candidate in MODULES and candidate != module:
                        found.setdefault(candidate, []).append(node.lineno)
    return found


def _layer(module: str) -> int:
    best = None
    for rank, (_, prefixes) in enumerate(LAYERS):
        for prefix in prefixes:
            # the package itself ("qelm") is its __init__ only; every other prefix holds its sub-modules too
            inside = module == prefix or (prefix != "qelm" and module.startswith(prefix + "."))
            if inside and (best is None or len(prefix) > best[1]):
                best = (rank, len(prefix))
    assert best is not None, f"{module} has no place in LAYERS: add it to the layer it belongs to (and to the README)"
    return best[0]


GRAPH = {module: _imports(module) for module in MODULES}


def test_every_module_has_a_layer():
    for module in MODULES:
        _layer(module)


def test_no_import_runs_up_the_layers():
    upward = []
    for module, targets in GRAPH.items():
        for target, lines in targets.items():
            if _layer(target) > _layer(module):
                upward.append(f"{module} (line {', '.join(map(str, lines))}; {LAYERS[_layer(module)][0]}) imports "
                              f"{target} ({LAYERS[_layer(target)][0]})")
    assert not upward, "imports that run up the layers:\n" + "\n".join(upward)


def test_no_imports_run_in_a_circle():
    """Tarjan's strongly connected components of the import graph: every one is a single module."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    circles: list[list[str]] = []

    def visit(module: str) -> None:
        index[module] = low[module] = len(index)
        stack.append(module)
        on_stack.add(module)
        for target in GRAPH[module]:
            if target not in index:
                visit(target)
                low[module] = min(low[module], low[target])
            elif target in on_stack:
                low[module] = min(low[module], index[target])
        if low[module] == index[module]:
            component = []
            while True:
                top = stack.pop()
                on_stack.discard(top)
                component.append(top)
                if top == module:
                    break
            if len(component) > 1:
                circles.append(sorted(component))

    for module in GRAPH:
        if module not in index:
            visit(module)
    assert not circles, "imports in a circle:\n" + "\n".join(" <-> ".join(c) for c in circles)


def test_the_readme_lists_the_layers_in_this_order():
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    order = re.search(r"import only downward, in this order:\n\n((?:\d+\. .*\n)+)", text)
    assert order, "the README's architecture section lists the layers as a numbered list"
    listed = [re.findall(r"`([\w.]+)`", line) for line in order.group(1).splitlines()]
    expected = [list(prefixes) for _, prefixes in LAYERS]
    assert listed == expected, "the README's layers differ from LAYERS in tests/test_architecture.py"


def test_the_graph_reader_sees_every_kind_of_import():
    """Guards the reader itself: a function-level import, a relative import of a sibling and the
    registry's importlib call are all edges."""
    assert "qelm.backends.aer" in GRAPH["qelm.backends.registry"]  # importlib.import_module(f"{__package__}.{...}")
    assert "qelm.circuits.base" in GRAPH["qelm.circuits.embeddings"]  # from .base import ...
    assert "qelm.files" in GRAPH["qelm.tokenizer"]
