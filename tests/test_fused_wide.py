"""qelm.fused past the whole-register width: circuits of 11 wires and more run as k-qubit blocks
differentiated by the adjoint method. Every built-in circuit against default.qubit at 11, 12, 14 and 16
qubits (values and gradients with respect to inputs and weights, per weight set, 1e-10 in complex128), on
the CPU and, under ``pytest -m gpu``, on CUDA; the fusion at other block widths and in chunks; memory
refusals that name the batch that fits; and plans that never form a ``2**n``-sized object.

Exceptions to the sizes, each for the reference's sake: the swap test has ``2n + 1`` wires, so it runs at
11, 13 and 15 wires (5, 6 and 7 qubits); the amplitude embedding has ``2**n - 1`` data gates, so
default.qubit takes seconds at 11 and 12 qubits and hours at 16 (11 here, 12 marked slow).
"""

from __future__ import annotations

import tracemalloc
from dataclasses import dataclass

import pennylane as qml
import pytest
import torch

import qelm.backends.fused as fused_module
import qelm.backends.fused_adjoint as adjoint
from qelm.backends import get_backend
from qelm.backends.fused_adjoint import BlockExecutor
from qelm.backends.fused_blocks import Dense, Reorder, Rotation, build_block_plan
from qelm.circuits import CIRCUITS, Circuit, build_circuit

TOL = 1e-10
WIDE = [pytest.param(name, n, id=f"{name}-{n}q") for name in CIRCUITS if name not in ("swap_test", "amplitude")
        for n in (11, 12, 14, 16)]
WIDE += [pytest.param("swap_test", n, id=f"swap_test-{2 * n + 1}wires") for n in (5, 6, 7)]
WIDE += [pytest.param("amplitude", 11, id="amplitude-11q"),
         pytest.param("amplitude", 12, id="amplitude-12q", marks=pytest.mark.slow)]
DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.gpu)]


def _data(circuit: Circuit, sets: tuple[int, ...], m: int, device="cpu", seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(sets + (m,) + circuit.input_shape, generator=g, dtype=torch.float64) * 4 - 2
    w = torch.rand(sets + circuit.weight_shape, generator=g, dtype=torch.float64) * 6.3
    return x.to(device).requires_grad_(), w.to(device).requires_grad_()


def _vjp(out: torch.Tensor, wrt, seed: int = 1):
    """Gradients of <c, out> for a fixed random cotangent c (real and imaginary parts for states)."""
    g = torch.Generator().manual_seed(seed)
    c = torch.randn(out.shape + (2,), generator=g, dtype=torch.float64).to(out.device)
    loss = (torch.view_as_real(out) * c).sum() if out.is_complex() else (out * c[..., 0]).sum()
    return torch.autograd.grad(loss, wrt)


def _compare(circuit: Circuit, device="cpu", sets=(2,), m=2, kinds=("expval",), fused=None):
    ref, fused = get_backend("default.qubit"), fused or get_backend("qelm.fused")
    for kind in kinds:
        x, w = _data(circuit, sets, m, device)
        a, b = ref.run(circuit, x, w, kind), fused.run(circuit, x, w, kind)
        assert b.shape == a.shape and b.device == a.device
        torch.testing.assert_close(b, a, atol=TOL, rtol=0, msg=lambda s, kind=kind: f"{circuit.name} {kind}: {s}")
        for ga, gb in zip(_vjp(a, (x, w)), _vjp(b, (x, w))):
            torch.testing.assert_close(gb, ga, atol=TOL, rtol=0, msg=lambda s, kind=kind: f"{circuit.name} {kind} grad: {s}")


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("name, n", WIDE)
def test_matches_default_qubit(name, n, device):
    circuit = build_circuit(name, n, 2 if name != "swap_test" else 1)
    assert circuit.n_wires >= fused_module.BLOCKS_FROM_WIRES["cpu"]  # the block path, not the whole-register one
    kinds = ("expval", "state") if circuit.returns == "state" or name == "angle" and n <= 12 else ("expval",)
    _compare(circuit, device, m=1 if n >= 14 else 2, kinds=kinds)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("name", ["angle", "attention", "feed_forward", "fidelity"])
def test_blocks_from_puts_narrow_circuits_on_the_block_path(name, device):
    """``blocks_from`` (the per-device width where blocks start) moves a 6-qubit circuit onto the block path,
    with the same values and gradients."""
    fused = get_backend("qelm.fused", blocks_from=4)
    circuit = build_circuit(name, 6, 2)
    assert fused._blocks(circuit, torch.device(device)) and not get_backend("qelm.fused")._blocks(circuit, None)
    _compare(circuit, device, fused=fused)
    assert any(isinstance(p, fused_module.BlockPlan) for p in fused._plans.values())


@pytest.mark.parametrize("value", [0, -1, 2.5, True, "8"])
def test_blocks_from_refuses_what_is_not_a_width(value):
    with pytest.raises(ValueError, match="blocks_from="):
        get_backend("qelm.fused", blocks_from=value)


@dataclass(frozen=True)
class _WideVocabulary(Circuit):
    """Every gate kind of the traced vocabulary on 11 wires, on neighbouring and distant wires, with data
    and weight angles in every position (prefix, blocks, rotations between blocks, far two-wire gates)."""

    name = "wide_vocabulary"

    @property
    def n_wires(self):
        return 11

    @property
    def n_inputs(self):
        return 6

    @property
    def weight_shape(self):
        return (7,)

    @property
    def observables(self):
        return (0, 3, 10)

    def apply(self, a):
        x, w = a[..., :6], a[..., 6:]
        qml.Hadamard(0), qml.RX(x[..., 0], wires=1), qml.PhaseShift(x[..., 1], wires=2), qml.T(2)
        qml.IsingXX(w[..., 0], wires=[0, 10]), qml.CZ(wires=[0, 1]), qml.S(1), qml.SX(9)
        qml.RZ(x[..., 2], wires=0), qml.IsingYY(x[..., 3], wires=[1, 7]), qml.CY(wires=[2, 0])
        qml.Toffoli(wires=[0, 5, 9]), qml.PauliY(1), qml.adjoint(qml.T(0)), qml.SWAP(wires=[0, 8])
        qml.IsingZZ(w[..., 1], wires=[3, 4]), qml.PhaseShift(w[..., 2], wires=1), qml.RX(w[..., 3], wires=6)
        qml.CSWAP(wires=[1, 0, 10]), qml.RY(x[..., 4], wires=4), qml.CNOT(wires=[10, 3]), qml.RZ(0.7, wires=5)
        qml.RY(w[..., 4], wires=5), qml.PhaseShift(x[..., 5], wires=7), qml.RX(w[..., 5], wires=2)
        qml.IsingXX(w[..., 6], wires=[4, 9])


@pytest.mark.parametrize("k", [None, 3, 5])
def test_any_gate_of_the_vocabulary_at_any_block_width(monkeypatch, k):
    circuit = _WideVocabulary(1, 1)
    if k is not None:  # plans fused at a given width rather than the cost model's
        build = fused_module.build_block_plan
        monkeypatch.setattr(fused_module, "build_block_plan", lambda c, layout, device: build(c, layout, k=k))
    plan = build_block_plan(circuit, circuit.angle_layout(), k=k)
    kinds = {type(s) for s in plan.steps}
    assert {Dense, Rotation, Reorder} <= kinds and any(s.gather for s in plan.dense)
    _compare(circuit, sets=(3,), m=2, kinds=("expval", "state"))


def test_every_angle_per_sample():
    """The angle-vector interface: every gate angle is data, so every rotation runs per sample."""
    circuit = build_circuit("attention", 11, 2)
    angles = (torch.rand(3, circuit.n_angles, dtype=torch.float64) * 6).requires_grad_()
    a = get_backend("default.qubit").expval(circuit, angles)
    b = get_backend("qelm.fused").expval(circuit, angles)
    torch.testing.assert_close(b, a, atol=TOL, rtol=0)
    torch.testing.assert_close(_vjp(b, angles)[0], _vjp(a, angles)[0], atol=TOL, rtol=0)


def test_chunks_give_the_same_values_and_gradients(monkeypatch):
    """The samples of a call run in chunks (cache-sized on the CPU): one sample per chunk agrees with one
    chunk for all, weight set by weight set."""
    circuit = build_circuit("fidelity", 11, 2)
    x, w = _data(circuit, (2, 2), 3)
    whole = get_backend("qelm.fused").run(circuit, x, w, "state")
    grads = _vjp(whole, (x, w))
    monkeypatch.setitem(adjoint.CHUNK_BYTES, "cpu", 1)
    assert adjoint.chunk_size(11, 4, 3, torch.complex128, x.device) == 1
    parts = get_backend("qelm.fused").run(circuit, x, w, "state")
    torch.testing.assert_close(parts, whole, atol=1e-13, rtol=0)
    for a, b in zip(grads, _vjp(parts, (x, w))):
        torch.testing.assert_close(b, a, atol=1e-12, rtol=0)


def test_complex64_is_close():
    circuit = build_circuit("attention", 11, 2)
    x, w = _data(circuit, (2,), 2)
    a = get_backend("default.qubit").run(circuit, x, w)
    b = get_backend("qelm.fused", dtype="complex64").run(circuit, x, w)
    torch.testing.assert_close(b, a, atol=1e-5, rtol=0)
    for ga, gb in zip(_vjp(a, (x, w)), _vjp(b, (x, w))):
        torch.testing.assert_close(gb, ga, atol=1e-4, rtol=0)


def test_a_batch_too_large_is_refused_with_the_batch_that_fits(monkeypatch):
    """The check counts what the adjoint method holds (two states per sample and one chunk's working states):
    a batch over the memory is refused before any allocation, naming the largest batch that fits, and that
    batch runs."""
    import re

    circuit = build_circuit("angle", 14, 2)
    monkeypatch.setattr(fused_module, "free_memory_bytes", lambda device: 64 * 2**20)
    backend = get_backend("qelm.fused")
    x, w = _data(circuit, (), 512)
    with pytest.raises(MemoryError, match=r"n_qubits=14.*for 512 states.*at most \d+ states fit") as e:
        backend.run(circuit, x, w)
    fit = int(re.search(r"at most (\d+) states fit", str(e.value)).group(1))
    per_sample = 16 * 2**14 * adjoint.STATES_KEPT
    assert 64 * 2**20 // per_sample // 4 < fit < 64 * 2**20 // per_sample  # less the working set, no more
    out = backend.run(circuit, x[:fit], w)
    assert out.shape == (fit, 14)
    with pytest.raises(MemoryError):
        backend.run(circuit, x[: fit + 1], w)


def test_plans_form_nothing_of_the_register_size():
    """A plan and its device constants at 24 qubits are built from the gate list alone: nothing near
    ``2**24`` numbers (256 MiB in complex128) is allocated."""
    circuit = build_circuit("attention", 24, 2)
    tracemalloc.start()
    plan = build_block_plan(circuit, circuit.angle_layout())
    constants = BlockExecutor.constants(plan, torch.device("cpu"), torch.float64, torch.complex128)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert peak < 16 * 2**20, peak
    assert max(s.k for s in plan.dense if not s.gather) <= 8 and max(s.k for s in plan.dense) <= 10
    assert constants.zh.numel() <= 2**12 * 25


def test_a_gate_without_a_kernel_names_default_qubit():
    @dataclass(frozen=True)
    class Crx(Circuit):
        name = "crx"

        @property
        def n_wires(self):
            return 11

        @property
        def n_inputs(self):
            return 1

        @property
        def weight_shape(self):
            return (1,)

        def apply(self, a):
            qml.RY(a[..., 0], wires=0)
            qml.CRX(a[..., 1], wires=[0, 10])

    circuit = Crx(1, 1)
    x, w = _data(circuit, (), 2)
    try:
        out = get_backend("qelm.fused").run(circuit, x, w)
    except ValueError as e:  # refused, naming the backend that runs it
        assert "default.qubit" in str(e)
    else:  # or run, and right
        torch.testing.assert_close(out, get_backend("default.qubit").run(circuit, x, w), atol=TOL, rtol=0)
