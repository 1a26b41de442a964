"""The feature form's matrix W built by one hand-written autograd function (qelm.backends.fused_features_matrix):
its gradient against finite differences (from the one-qubit matrices and from the weights), the weights'
gradient against the one autograd takes through the one-qubit matrices, its Kronecker-product gradient
against autograd's, and that the narrow circuits the models use take it (their values and gradients against default.qubit are in
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
    assert torch.autograd.gradcheck(lambda *m: fm.MatrixW.apply(prog, (2,), None, *m), mats)


def _from_weights(prog, ex, w: torch.Tensor, lead: tuple[int, ...]) -> torch.Tensor:
    ex.begin(w)
    try:
        return fm.program_matrix(prog, ex, lead)
    finally:
        ex.end()


@pytest.mark.parametrize("name, n, layers", [("attention", 2, 2), ("angle", 3, 1), ("fidelity", 2, 3),
                                             ("feed_forward", 4, 2)])
def test_matrix_from_weights_gradient(name, n, layers):
    """From the weights, the one-qubit matrices built and differentiated inside the function: finite
    differences, and the values and gradient autograd gives through :meth:`Executor.chain_matrices`."""
    prog, ex = _program(name, n, layers)
    g = torch.Generator().manual_seed(1)
    w = torch.randn(2, ex.plan.n_weights, generator=g, dtype=torch.float64).requires_grad_()
    W = _from_weights(prog, ex, w, (2,))
    assert W.grad_fn is not None and W.grad_fn.next_functions[-1][0].variable is w  # the weights its input
    ex.begin(w)
    try:
        ref = fm.MatrixW.apply(prog, (2,), None, *[ex.chain_matrices(ex.plan.groups[j]) for j in prog.groups])
    finally:
        ex.end()
    torch.testing.assert_close(W, ref, atol=1e-12, rtol=0)
    cot = torch.randn(W.shape, generator=g, dtype=torch.float64)
    (got,), (expected,) = torch.autograd.grad(W, w, cot), torch.autograd.grad(ref, w, cot)
    torch.testing.assert_close(got, expected, atol=1e-12, rtol=0)
    assert torch.autograd.gradcheck(lambda w: _from_weights(prog, ex, w, (2,)), (w,))


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
