"""The feature form's matrix W built by one hand-written autograd function (qelm.backends.fused_features_matrix):
its gradient against finite differences, its Kronecker-product gradient against autograd's, and that the
narrow circuits the models use take it (their values and gradients against default.qubit are in
test_fused_features.py)."""

from __future__ import annotations

import pytest
import torch

from qelm.backends import fused_features_matrix as fm
from qelm.backends import get_backend
from qelm.backends.fused_plan import Layer
from qelm.circuits import build_circuit


def _program(name: str, n: int, layers: int):
    """The program of a circuit's feature plan, with the executor that made it."""
    circuit = build_circuit(name, n, layers)
    backend = get_backend("qelm.fused")
    backend.run(circuit, torch.rand(1, *circuit.input_shape, dtype=torch.float64),
                torch.rand(circuit.weight_shape, dtype=torch.float64))
    fp = backend._plans[(type(circuit), circuit.key, "features")]
    plan = backend._plan(circuit, split=True, device=torch.device("cpu"))
    ex = backend._executor(plan, torch.device("cpu"))
    return ex.cache.get(("feature program", id(fp)), lambda: None), ex


@pytest.mark.parametrize("name, n, layers", [("attention", 2, 2), ("angle", 3, 1), ("fidelity", 2, 3)])
def test_matrix_gradient_matches_finite_differences(name, n, layers):
    prog, ex = _program(name, n, layers)
    assert prog is not None
    g = torch.Generator().manual_seed(0)
    mats = []
    for group in prog.groups:
        blocks = ex.plan.groups[group]
        n_layers = sum(isinstance(item, Layer) for item in blocks[0].items)
        mats.append(torch.randn(2, len(blocks), n_layers, n, 2, 2, generator=g, dtype=torch.complex128).requires_grad_())
    assert torch.autograd.gradcheck(lambda *m: fm.program_matrix(prog, list(m), (2,)), mats)


@pytest.mark.parametrize("k", [1, 2, 3, 4])
def test_kron_gradient_matches_autograd(k):
    g = torch.Generator().manual_seed(k)
    m = torch.randn(3, k, 2, 2, generator=g, dtype=torch.complex128).requires_grad_()
    cot = torch.randn(3, 2**k, 2**k, generator=g, dtype=torch.complex128)
    (expected,) = torch.autograd.grad((fm.kron(m) * cot.conj()).real.sum(), m)
    torch.testing.assert_close(fm.kron_grad(cot, m.detach()), expected, atol=1e-12, rtol=0)


@pytest.mark.parametrize("name", ["attention", "feed_forward", "fidelity", "angle"])
def test_model_circuits_take_the_function(name):
    prog, _ = _program(name, 4, 2)
    assert prog is not None
