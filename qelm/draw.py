"""Circuit drawings: a built-in circuit as text (``qml.draw``), PNG/SVG (``qml.draw_mpl``) or a qiskit
drawing, captioned with what its angles are; :func:`render` gives any of :data:`FORMATS`, the exports of
:mod:`qelm.export` included.

Every picture comes from a library's own drawer; templates are decomposed (PennyLane's
``level="device"``) so the gates a simulator runs are the gates drawn.

Angles are either *symbolic* or *values*:

* symbolic (no ``angles`` given): every gate shows the index ``i`` of the angle-vector entry ``theta[i]``
  that drives it (PennyLane drawers print the number ``i``; the qiskit format prints the Parameter
  ``theta[i]``). The circuit contract of :mod:`qelm.circuits` (each gate angle is one entry, used once)
  makes that index the gate's name;
* values: an angle vector, e.g. :func:`trained_angles` from a checkpoint's circuit weights.

The ``circuits/`` gallery is built by :mod:`qelm.gallery` (``qelm gallery circuits``).
"""

from __future__ import annotations

import io
import json
import textwrap
from collections.abc import Sequence

import matplotlib.pyplot as plt
import pennylane as qml
import torch

from .circuits import CIRCUITS, Circuit
from .circuits.angles import angles_and_decimals, qnode, weight_mask
from .errors import ConfigError
from .export import resources, to_qasm, to_qiskit
from .layers import QuantumAttentionHead, QuantumEmbedding, QuantumFeedForward

__all__ = [
    "FORMATS",
    "circuit_weights",
    "caption",
    "draw_text",
    "draw_figure",
    "render",
]

#: output formats of :func:`render`: text/qasm/qiskit/resources are text, png/svg are image bytes
FORMATS = ("text", "png", "svg", "qasm", "qiskit", "resources")
_NO_WRAP = 10**6  # qml.draw max_length that never wraps


def circuit_weights(model: torch.nn.Module, name: str) -> tuple[torch.Tensor, str]:
    """The trained weights of the first layer of ``model`` that runs circuit ``name``, and where they
    came from (``"blocks.0.attention.heads, head 0, query circuit"``).

    Attention heads hold one weight set per head (and per q/k/v slot); the drawing shows head 0's first."""
    if name not in CIRCUITS:
        raise ConfigError(f"unknown circuit {name!r}: valid circuits are {', '.join(sorted(CIRCUITS))}")
    found: list[str] = []
    for path, m in model.named_modules():
        uses: dict[str, tuple[torch.Tensor, str]] = {}
        if isinstance(m, (QuantumEmbedding, QuantumFeedForward)):
            uses[m.circuit.name] = (m.weights, path)
        elif isinstance(m, QuantumAttentionHead):
            if m.mode == "quantum":
                uses[m.features.name] = (m.weights[0, 0], f"{path}, head 0, query circuit")
            elif m.method == "exact":
                uses[m.fidelity.name] = (m.weights[0, 0], f"{path}, head 0")
            else:  # swap-test scores, values from the feature circuit with the same weights
                if m.fidelity.name == "fidelity":  # the built-in swap test (one of your own is drawn as its state)
                    uses["swap_test"] = (m.weights[0, 0], f"{path}, head 0")
                uses[m.features.name] = (m.weights[0, 0], f"{path}, head 0, value circuit")
        if name in uses:
            return uses[name][0].detach(), uses[name][1]
        found += [n for n in uses if n not in found]
    if not found:
        raise ConfigError(f"this model runs no circuits (every slot is classical), so it has no trained {name!r} "
                         "circuit; draw without a checkpoint to see the circuit symbolically")
    raise ConfigError(f"this model does not run circuit {name!r}; it runs {', '.join(found)}")


def _ranges(indices: Sequence[int]) -> str:
    """``[0, 1, 2, 5, 7, 8]`` -> ``"0-2, 5, 7-8"``."""
    parts, start = [], None
    for k, i in enumerate(indices):
        if start is None:
            start = i
        if k + 1 == len(indices) or indices[k + 1] != i + 1:
            parts.append(str(start) if start == i else f"{start}-{i}")
            start = None
    return ", ".join(parts) or "none"


def caption(circuit: Circuit, source: str | None = None, *, parameters: bool = False) -> str:
    """One line saying what a drawing shows: the circuit, its size, and what the gate angles are.
    ``source`` None: symbolic angles, drawn as indices (or as qiskit Parameters when ``parameters``)."""
    head = (f"circuit {circuit.name!r} ({type(circuit).__name__}): n_qubits={circuit.n_qubits}, "
            f"n_layers={circuit.n_layers}, {circuit.n_wires} wires")
    if source is None:
        mask = weight_mask(circuit).tolist()
        data = _ranges([i for i, m in enumerate(mask) if not m])
        weights = _ranges([i for i, m in enumerate(mask) if m])
        shown = "its Parameter theta[i]" if parameters else "the index i of its angle theta[i] (RY(3) means RY(theta[3]))"
        return (f"{head}. Symbolic: each gate shows {shown}; "
                f"data angles theta[{data}], trained weights theta[{weights}].")
    return f"{head}. Angles in radians: {source}."


# --- drawings -----------------------------------------------------------------------------------------
def draw_text(circuit: Circuit, angles: torch.Tensor | None = None, *, decimals: int | None = None,
              max_length: int | None = None) -> str:
    """``qml.draw`` of the decomposed circuit (``level="device"``); symbolic when ``angles`` is None.
    ``max_length``: wrap at this many characters (default: never wrap)."""
    angles, decimals = angles_and_decimals(circuit, angles, decimals)
    return qml.draw(qnode(circuit), level="device", decimals=decimals, max_length=max_length or _NO_WRAP)(angles)


def draw_figure(circuit: Circuit, angles: torch.Tensor | None = None, *, decimals: int | None = None,
                title: str | None = None):
    """``qml.draw_mpl`` of the decomposed circuit -> a matplotlib Figure (close it with ``plt.close``)."""
    angles, decimals = angles_and_decimals(circuit, angles, decimals)
    fig, ax = qml.draw_mpl(qnode(circuit), level="device", decimals=decimals, style="black_white")(angles)
    if title:
        w, h = fig.get_size_inches()
        chars = max(40, int(w * 100 / 9))  # ~8 px per character at 12 pt, with a margin
        lines = [part for line in title.split("\n") for part in textwrap.wrap(line, chars)]
        extra = 0.25 * len(lines) + 0.1  # inches of room above the drawing for the title
        fig.set_size_inches(w, h + extra)
        ax.set_position([0, 0, 1, h / (h + extra)])  # the drawing keeps its size, below the title
        fig.suptitle("\n".join(lines), fontsize=12, y=1 - 0.05 / (h + extra), va="top")
    return fig


def render(circuit: Circuit, fmt: str, angles: torch.Tensor | None = None, *, source: str | None = None,
           decimals: int | None = None, precision: int | None = None, max_length: int | None = None) -> str | bytes:
    """The circuit in one of :data:`FORMATS`: text formats as ``str`` (with a caption line), images as
    ``bytes``. ``source`` says where non-symbolic ``angles`` came from (it goes into the caption)."""
    if fmt not in FORMATS:
        raise ConfigError(f"format {fmt!r} is invalid: choose one of {', '.join(FORMATS)}")
    if angles is not None and source is None:
        source = "given angle vector"
    cap = caption(circuit, source if angles is not None else None, parameters=fmt == "qiskit")
    if fmt == "text":
        return f"# {cap}\n{_rstrip_lines(draw_text(circuit, angles, decimals=decimals, max_length=max_length))}\n"
    if fmt == "qasm":
        return to_qasm(circuit, angles, precision=precision)
    if fmt == "qiskit":
        fold = max_length if max_length else -1
        drawing = _rstrip_lines(str(to_qiskit(circuit, angles).draw("text", fold=fold)))
        return f"# {cap}\n# qubit q_i is PennyLane wire i\n{drawing}\n"
    if fmt == "resources":
        return json.dumps(resources(circuit), indent=2) + "\n"
    fig = draw_figure(circuit, angles, decimals=decimals, title=_short_title(circuit, source if angles is not None else None))
    try:
        buf = io.BytesIO()
        # fixed metadata keeps the bytes independent of the date (SVG) and of the software string (PNG)
        meta = {"Date": None} if fmt == "svg" else {"Software": None}
        fig.savefig(buf, format=fmt, dpi=100, metadata=meta)
    finally:
        plt.close(fig)
    return buf.getvalue()


def _rstrip_lines(text: str) -> str:
    # drawers pad lines with spaces; without them a file survives editors and hooks that strip whitespace
    return "\n".join(line.rstrip() for line in text.splitlines())


def _short_title(circuit: Circuit, source: str | None) -> str:
    title = f"{circuit.name}: n_qubits={circuit.n_qubits}, n_layers={circuit.n_layers}"
    if source is None:
        return f"{title} (gate labels = angle index i of theta[i])"
    return f"{title} (gate angles in radians)\n{source}"

