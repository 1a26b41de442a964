"""Circuit drawings, OpenQASM export and resource summaries of the built-in circuits, and the ``circuits/``
gallery.

Every picture comes from a library's own drawer: ``qml.draw`` (text), ``qml.draw_mpl`` (PNG/SVG) and
qiskit's ``QuantumCircuit.draw`` (the ``qiskit`` format); templates are decomposed (PennyLane's
``level="device"``) so the gates a simulator runs are the gates drawn.

Angles are either *symbolic* or *values*:

* symbolic (no ``angles`` given): every gate shows the index ``i`` of the angle-vector entry ``theta[i]``
  that drives it (PennyLane drawers print the number ``i``; the qiskit format prints the Parameter
  ``theta[i]``). The circuit contract of :mod:`qelm.circuits` (each gate angle is one entry, used once)
  makes that index the gate's name;
* values: an angle vector, e.g. :func:`trained_angles` from a checkpoint's circuit weights.

OpenQASM 2 is written by ``qml.to_openqasm`` after decomposing to gates of the original ``qelib1.inc``
(CSWAP becomes Toffoli + CNOT), so any OpenQASM 2 reader, ``qiskit.qasm2.loads`` included, loads it without
custom instructions. PennyLane wire ``i`` is written as ``q[i]``; PennyLane counts wire 0 as the most
significant bit and qiskit counts qubit 0 as the least, so a qiskit ``Statevector`` of the loaded circuit
equals PennyLane's state after ``QuantumCircuit.reverse_bits()``.

``python -m qelm.draw --gallery circuits`` regenerates the gallery; ``--check`` reports drift instead.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import sys
import tempfile
import textwrap
from collections.abc import Sequence
from pathlib import Path

import pennylane as qml
import torch

from .circuits import CIRCUITS, Circuit, SwapTestCircuit, build_circuit
from .files import atomic_write

__all__ = [
    "FORMATS",
    "GALLERY_QUBITS",
    "GALLERY_LAYERS",
    "symbolic_angles",
    "weight_mask",
    "trained_angles",
    "circuit_weights",
    "caption",
    "draw_text",
    "draw_figure",
    "to_qasm",
    "to_qiskit",
    "resources",
    "render",
    "write_gallery",
    "gallery_drift",
]

#: output formats of :func:`render`: text/qasm/qiskit/resources are text, png/svg are image bytes
FORMATS = ("text", "png", "svg", "qasm", "qiskit", "resources")
#: the size every circuit is drawn at in the gallery: small enough to read, large enough to show the
#: entangler's CNOT ring and the re-uploading repeat
GALLERY_QUBITS = 2
GALLERY_LAYERS = 2
#: files of the gallery that must be byte-identical when regenerated (PNGs depend on matplotlib's version)
GALLERY_EXACT = (".txt", ".qasm", ".json")
#: PennyLane gates whose OpenQASM names are in the original qelib1.inc (what qiskit.qasm2.loads reads)
QELIB1_GATES = frozenset({
    "CNOT", "CZ", "Toffoli", "CRZ", "U1", "U2", "U3", "PhaseShift", "Identity", "PauliX", "PauliY", "PauliZ",
    "Hadamard", "S", "Adjoint(S)", "T", "Adjoint(T)", "RX", "RY", "RZ",
})
_NO_WRAP = 10**6  # qml.draw max_length that never wraps


# --- angles -------------------------------------------------------------------------------------------
def symbolic_angles(circuit: Circuit) -> torch.Tensor:
    """The angle vector ``theta[i] = i``: drawn with no decimals, every gate shows its angle's index."""
    return torch.arange(circuit.n_angles, dtype=torch.float64)  # (n_angles,)


def _zero_inputs(circuit: Circuit) -> torch.Tensor:
    if isinstance(circuit, SwapTestCircuit):  # the two states' data: (2, n_inputs of one state)
        return torch.zeros(2, circuit.inner.n_inputs, dtype=torch.float64)
    return torch.zeros(circuit.n_inputs, dtype=torch.float64)


def weight_mask(circuit: Circuit) -> torch.Tensor:
    """Boolean ``(n_angles,)``: True where the angle vector holds a trainable weight, False for data.

    Found from ``circuit.angles`` itself (weights 0 vs 1 at fixed data), so it follows each circuit's own
    layout, including the swap test's two copies of the weights."""
    x = _zero_inputs(circuit)
    w = torch.zeros(circuit.weight_shape, dtype=torch.float64)
    return circuit.angles(x, w) != circuit.angles(x, w + 1)


def trained_angles(circuit: Circuit, weights: torch.Tensor) -> torch.Tensor:
    """The angle vector with ``weights`` (``circuit.weight_shape``) in the weight entries and every data
    angle 0: the trained circuit itself, independent of any token."""
    weights = torch.as_tensor(weights).detach().to("cpu", torch.float64)
    if tuple(weights.shape) != tuple(circuit.weight_shape):
        raise ValueError(f"weights of shape {tuple(weights.shape)} do not fit circuit {circuit.name!r} with "
                         f"{circuit.n_qubits} qubits and {circuit.n_layers} layers (needs {circuit.weight_shape}); "
                         "build the circuit at the checkpoint's n_qubits and circuit_layers")
    angles = circuit.angles(_zero_inputs(circuit), weights)  # (n_angles,)
    return torch.where(weight_mask(circuit), angles, torch.zeros_like(angles))


def circuit_weights(model: torch.nn.Module, name: str) -> tuple[torch.Tensor, str]:
    """The trained weights of the first layer of ``model`` that runs circuit ``name``, and where they
    came from (``"blocks.0.attention.heads, head 0, query circuit"``).

    Attention heads hold one weight set per head (and per q/k/v slot); the drawing shows head 0's first."""
    from .layers import QuantumAttentionHead, QuantumEmbedding, QuantumFeedForward

    if name not in CIRCUITS:
        raise ValueError(f"unknown circuit {name!r}: valid circuits are {', '.join(sorted(CIRCUITS))}")
    found: list[str] = []
    for path, m in model.named_modules():
        uses: dict[str, tuple[torch.Tensor, str]] = {}
        if isinstance(m, QuantumEmbedding):
            uses[m.circuit.name] = (m.weights, path)
        elif isinstance(m, QuantumFeedForward):
            uses[m.circuit.name] = (m.weights, path)
        elif isinstance(m, QuantumAttentionHead):
            if m.mode == "quantum":
                uses["attention"] = (m.weights[0, 0], f"{path}, head 0, query circuit")
            elif m.method == "exact":
                uses["fidelity"] = (m.weights[0, 0], f"{path}, head 0")
            else:  # swap-test scores, values from the feature circuit with the same weights
                uses["swap_test"] = (m.weights[0, 0], f"{path}, head 0")
                uses["attention"] = (m.weights[0, 0], f"{path}, head 0, value circuit")
        if name in uses:
            return uses[name][0].detach(), uses[name][1]
        found += [n for n in uses if n not in found]
    if not found:
        raise ValueError(f"this model runs no circuits (every slot is classical), so it has no trained {name!r} "
                         "circuit; draw without a checkpoint to see the circuit symbolically")
    raise ValueError(f"this model does not run circuit {name!r}; it runs {', '.join(found)}")


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
def _qnode(circuit: Circuit) -> qml.QNode:
    return qml.QNode(circuit.qfunc, qml.device("default.qubit", wires=circuit.n_wires))


def _angles_and_decimals(circuit: Circuit, angles: torch.Tensor | None, decimals: int | None):
    if angles is None:
        return symbolic_angles(circuit), 0  # integers drawn with no decimals: the index itself
    angles = torch.as_tensor(angles, dtype=torch.float64).detach().cpu()
    if tuple(angles.shape) != (circuit.n_angles,):
        raise ValueError(f"angles of shape {tuple(angles.shape)} do not fit circuit {circuit.name!r}: "
                         f"it takes one vector of {circuit.n_angles} angles")
    return angles, 2 if decimals is None else decimals


def draw_text(circuit: Circuit, angles: torch.Tensor | None = None, *, decimals: int | None = None,
              max_length: int | None = None) -> str:
    """``qml.draw`` of the decomposed circuit (``level="device"``); symbolic when ``angles`` is None.
    ``max_length``: wrap at this many characters (default: never wrap)."""
    angles, decimals = _angles_and_decimals(circuit, angles, decimals)
    return qml.draw(_qnode(circuit), level="device", decimals=decimals, max_length=max_length or _NO_WRAP)(angles)


def draw_figure(circuit: Circuit, angles: torch.Tensor | None = None, *, decimals: int | None = None,
                title: str | None = None):
    """``qml.draw_mpl`` of the decomposed circuit -> a matplotlib Figure (close it with ``plt.close``)."""
    angles, decimals = _angles_and_decimals(circuit, angles, decimals)
    fig, ax = qml.draw_mpl(_qnode(circuit), level="device", decimals=decimals, style="black_white")(angles)
    if title:
        w, h = fig.get_size_inches()
        chars = max(40, int(w * 100 / 9))  # ~8 px per character at 12 pt, with a margin
        lines = [part for line in title.split("\n") for part in textwrap.wrap(line, chars)]
        extra = 0.25 * len(lines) + 0.1  # inches of room above the drawing for the title
        fig.set_size_inches(w, h + extra)
        ax.set_position([0, 0, 1, h / (h + extra)])  # the drawing keeps its size, below the title
        fig.suptitle("\n".join(lines), fontsize=12, y=1 - 0.05 / (h + extra), va="top")
    return fig


def _device_tape(circuit: Circuit, angles: torch.Tensor):
    return qml.workflow.construct_tape(_qnode(circuit), level="device")(angles)


def to_qasm(circuit: Circuit, angles: torch.Tensor | None = None, *, precision: int | None = None,
            header: bool = True) -> str:
    """OpenQASM 2.0 by ``qml.to_openqasm``, gates of the original ``qelib1.inc`` only, every wire measured.

    ``angles`` None: ``theta[i] = i`` (the symbolic convention; OpenQASM 2 has no free parameters).
    ``precision``: significant digits of each angle (None: full double precision). PennyLane wire ``i``
    is ``q[i]``; in qiskit, ``reverse_bits()`` gives PennyLane's basis order (see the module docstring).
    """
    symbolic = angles is None
    angles, _ = _angles_and_decimals(circuit, angles, None)
    [tape], _ = qml.transforms.decompose(_device_tape(circuit, angles), gate_set=set(QELIB1_GATES))
    text = qml.to_openqasm(tape, wires=qml.wires.Wires(circuit.wires), measure_all=True, precision=precision)
    if not header:
        return text
    first, include, rest = text.split("\n", 2)
    note = [f"// qelm circuit {circuit.name!r}: n_qubits={circuit.n_qubits}, n_layers={circuit.n_layers}",
            "// PennyLane wire i is q[i]; PennyLane's wire 0 is the most significant bit, so in qiskit use",
            "// QuantumCircuit.reverse_bits() to compare amplitudes with PennyLane"]
    if symbolic:
        note.append("// symbolic: the angle vector entry theta[i] is set to i radians (OpenQASM 2 has no free parameters)")
    return "\n".join([first, include, *note, rest])


def to_qiskit(circuit: Circuit, angles: torch.Tensor | None = None):
    """The circuit as a ``qiskit.QuantumCircuit`` on qubits in PennyLane's wire order (qubit i = wire i).

    Symbolic when ``angles`` is None: gate angles are the Parameters ``theta[i]``. Built by the qiskit.aer
    backend's own translation (:func:`qelm.backends.aer.translate`), so it is the circuit that backend runs."""
    from .backends.aer import translate

    qc = translate(circuit).qc.reverse_bits()  # translate maps wire w -> qubit n-1-w; undo for reading
    if angles is None:
        return qc
    angles, _ = _angles_and_decimals(circuit, angles, None)
    return qc.assign_parameters({p: float(angles[p.index]) for p in qc.parameters})


def resources(circuit: Circuit) -> dict:
    """Resource summary: qubits, parameters, gates by type and depth, measured twice: by ``qml.specs`` on
    the decomposed circuit (``level="device"``, the gates default.qubit runs) and by qiskit on the
    exported OpenQASM (the qelib1 gate set a QASM consumer sees)."""
    from qiskit import qasm2

    angles = symbolic_angles(circuit)
    specs = qml.specs(_qnode(circuit), level="device")(angles)
    res = specs.resources
    qc = qasm2.loads(to_qasm(circuit, angles)).remove_final_measurements(inplace=False)
    ops = qc.count_ops()
    mask = weight_mask(circuit)
    return {
        "circuit": circuit.name,
        "class": type(circuit).__name__,
        "kind": circuit.kind,
        "n_qubits": circuit.n_qubits,
        "n_layers": circuit.n_layers,
        "wires": circuit.n_wires,
        "returns": "state vector" if circuit.returns == "state" else f"<Z> on wires {list(circuit.observables)}",
        "parameters": {
            "gate_angles": circuit.n_angles,
            "data_angles": int((~mask).sum()),
            "weight_angles": int(mask.sum()),
            "trainable_weights": circuit.n_weights,
            "weight_shape": list(circuit.weight_shape),
        },
        "pennylane_device": {
            "gates": res.num_gates,
            "gate_types": dict(sorted(res.gate_types.items())),
            "depth": res.depth,
        },
        "openqasm": {
            "gates": sum(ops.values()),
            "gate_types": dict(sorted(ops.items())),
            "depth": qc.depth(),
        },
        "method": "qml.specs(level='device') on default.qubit; OpenQASM counts by qiskit "
                  "(count_ops, depth) of qasm2.loads(to_qasm(...)) without the final measurements",
    }


def render(circuit: Circuit, fmt: str, angles: torch.Tensor | None = None, *, source: str | None = None,
           decimals: int | None = None, precision: int | None = None, max_length: int | None = None) -> str | bytes:
    """The circuit in one of :data:`FORMATS`: text formats as ``str`` (with a caption line), images as
    ``bytes``. ``source`` says where non-symbolic ``angles`` came from (it goes into the caption)."""
    if fmt not in FORMATS:
        raise ValueError(f"format {fmt!r} is invalid: choose one of {', '.join(FORMATS)}")
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
    import matplotlib.pyplot as plt

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


def _gallery_files(name: str) -> dict[str, str]:
    return {"text": f"{name}.txt", "qasm": f"{name}.qasm", "resources": f"{name}.json", "png": f"{name}.png"}


def _gallery_readme(summaries: dict[str, dict], texts: dict[str, str]) -> str:
    lines = [
        "# Circuit gallery",
        "",
        "Every built-in circuit of `qelm.circuits.CIRCUITS`, drawn at "
        f"**n_qubits={GALLERY_QUBITS}, n_layers={GALLERY_LAYERS}** with templates decomposed "
        "(PennyLane `level=\"device\"`). Generated by `make gallery` (`python -m qelm.draw --gallery circuits`); "
        "do not edit by hand. `tests/test_draw.py` regenerates the text, QASM and JSON files and fails on any "
        "difference.",
        "",
        "Angles are symbolic: each gate shows the index `i` of the angle-vector entry `theta[i]` that drives it "
        "(`RY(3)` is `RY(theta[3])`). The `.qasm` files set `theta[i] = i` radians, since OpenQASM 2 has no free "
        "parameters, and use only gates of the original `qelib1.inc` (the swap test's CSWAP becomes Toffoli + "
        "CNOT). PennyLane wire `i` is `q[i]`; wire 0 is the most significant bit, so compare amplitudes with "
        "qiskit after `QuantumCircuit.reverse_bits()`.",
        "",
        "Resources are measured by `qml.specs` on the decomposed circuit (gates default.qubit runs) and by "
        "qiskit on the exported OpenQASM (`count_ops`, `depth`, without the final measurements).",
        "",
        "| circuit | kind | wires | gate angles (data + weights) | trainable weights | gates (PennyLane) | depth (PennyLane) | gates (QASM) | CNOTs (QASM) | depth (QASM) |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, r in summaries.items():
        p, pl, qa = r["parameters"], r["pennylane_device"], r["openqasm"]
        lines.append(f"| [`{name}`](#{name}) | {r['kind']} | {r['wires']} | {p['gate_angles']} "
                     f"({p['data_angles']} + {p['weight_angles']}) | {p['trainable_weights']} | {pl['gates']} | "
                     f"{pl['depth']} | {qa['gates']} | {qa['gate_types'].get('cx', 0)} | {qa['depth']} |")
    for name, r in summaries.items():
        doc = (CIRCUITS[name].__doc__ or "").strip().split("\n\n")[0]
        doc = _markdown(" ".join(line.strip() for line in doc.splitlines()))
        f = _gallery_files(name)
        gates = ", ".join(f"{k} {v}" for k, v in r["pennylane_device"]["gate_types"].items())
        lines += [
            "",
            f"## {name}",
            "",
            f"`{r['class']}` ({r['kind']}; returns `{r['returns']}`). {doc}",
            "",
            f"![{name} circuit]({f['png']})",
            "",
            f"Gates: {gates}. Files: [text drawing]({f['text']}), [OpenQASM 2]({f['qasm']}), "
            f"[resources]({f['resources']}).",
            "",
            "<details><summary>text drawing (qml.draw)</summary>",
            "",
            "```text",
            texts[name].rstrip("\n"),
            "```",
            "",
            "</details>",
        ]
    return "\n".join(lines) + "\n"


def _markdown(rst: str) -> str:
    """A docstring sentence as Markdown: RST ``code`` becomes `code`, and < > outside code are escaped
    (GitHub would read ``<Z>`` as an HTML tag and hide it)."""
    parts = rst.replace("``", "`").split("`")
    return "`".join(p if i % 2 else p.replace("<", "&lt;").replace(">", "&gt;") for i, p in enumerate(parts))


def _gallery_contents(include_png: bool) -> dict[str, str | bytes]:
    files: dict[str, str | bytes] = {}
    summaries = {}
    for name in CIRCUITS:
        c = build_circuit(name, GALLERY_QUBITS, GALLERY_LAYERS)
        f = _gallery_files(name)
        files[f["text"]] = render(c, "text")
        files[f["qasm"]] = render(c, "qasm")
        files[f["resources"]] = render(c, "resources")
        summaries[name] = json.loads(files[f["resources"]])
        if include_png:
            files[f["png"]] = render(c, "png")
    texts = {name: files[_gallery_files(name)["text"]] for name in CIRCUITS}
    files["README.md"] = _gallery_readme(summaries, texts)
    return files


def write_gallery(directory: str | os.PathLike, *, images: bool = True) -> list[Path]:
    """Write the gallery into ``directory``: per circuit a PNG (unless ``images`` is False), the text
    drawing, the OpenQASM file and the resource JSON, and the ``README.md`` index. Returns the paths."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    return [atomic_write(directory / n, content) for n, content in _gallery_contents(include_png=images).items()]


def gallery_drift(directory: str | os.PathLike, regenerated: str | os.PathLike | None = None) -> list[str]:
    """Compare the gallery in ``directory`` with a fresh one; one line per missing, differing or unexpected
    file, empty when the gallery is up to date.

    The fresh gallery is written (without images) into ``regenerated``, or a temporary folder when None.
    Text, QASM, JSON and README must match byte for byte; PNGs only need to exist, since their pixels
    depend on matplotlib's version and fonts."""
    directory = Path(directory)
    if not directory.is_dir():
        raise FileNotFoundError(f"gallery folder {str(directory)!r} does not exist: run `make gallery`")
    with tempfile.TemporaryDirectory() as tmp:
        fresh = Path(regenerated) if regenerated is not None else Path(tmp)
        if regenerated is None:
            write_gallery(fresh, images=False)
        expected = {p.name: p.read_bytes() for p in fresh.iterdir() if p.is_file() and not p.name.startswith(".")}
    expected.update({_gallery_files(name)["png"]: None for name in CIRCUITS})
    problems = []
    for name, content in sorted(expected.items()):
        path = directory / name
        if not path.is_file():
            problems.append(f"{name}: missing")
        elif content is not None and path.read_bytes() != content:
            problems.append(f"{name}: differs from the regenerated file")
    for path in sorted(directory.iterdir()):
        if path.is_file() and not path.name.startswith(".") and path.name not in expected:
            problems.append(f"{path.name}: not part of the gallery (a removed circuit?)")
    return problems


def main(argv: list[str] | None = None) -> int:
    """``python -m qelm.draw --gallery DIR [--check]``: write the gallery, or report drift (exit 1)."""
    parser = argparse.ArgumentParser(prog="python -m qelm.draw", description="Regenerate or check the circuit gallery.")
    parser.add_argument("--gallery", required=True, metavar="DIR", help="gallery folder, e.g. circuits")
    parser.add_argument("--check", action="store_true", help="do not write: report files that differ and exit 1")
    args = parser.parse_args(argv)
    if args.check:
        problems = gallery_drift(args.gallery)
        for p in problems:
            print(f"{args.gallery}/{p}", file=sys.stderr)
        if problems:
            print("gallery is out of date: run `make gallery`", file=sys.stderr)
            return 1
        print(f"{args.gallery}: up to date")
        return 0
    paths = write_gallery(args.gallery)
    print(f"wrote {len(paths)} files to {args.gallery}/ ({len(CIRCUITS)} circuits at n_qubits={GALLERY_QUBITS}, "
          f"n_layers={GALLERY_LAYERS})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
