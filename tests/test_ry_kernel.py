"""The CUDA kernel of a per-sample RY data-rotation layer (``qelm.backends.fused_ry_cuda``) against the torch
code it replaces (``RYLayer``): values and gradients of states and half-angles, real and interleaved states,
wires in any order, angles shared across weight sets or not, a sample count that no tile divides. The CPU
tests check where the kernel is (not) taken."""

from __future__ import annotations

import pytest
import torch

from qelm.backends import fused_ry_cuda
from qelm.backends.fused_kernels import RYLayer

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


def _case(n, interleaved, wires, sets, angle_sets, dtype, device, m=37, seed=0):
    g = torch.Generator().manual_seed(seed)
    dc = 2**n * (2 if interleaved else 1)
    t = torch.randn(sets, dc, m, generator=g, dtype=torch.float64).to(device, dtype)
    half = (torch.rand(angle_sets, len(wires), m, generator=g, dtype=torch.float64) * 6 - 3).to(device, dtype)
    cot = torch.randn(sets, dc, m, generator=g, dtype=torch.float64).to(device, dtype)
    return t, half, cot


def _run(fn, t, half, cot, wires, n):
    t, half = t.clone().requires_grad_(), half.clone().requires_grad_()
    out = fn(t, half, wires, n)
    return (out, *torch.autograd.grad((out * cot).sum(), (t, half)))


@pytest.mark.gpu
@cuda
@pytest.mark.parametrize("dtype,tol", [(torch.float64, 1e-12), (torch.float32, 2e-5)])
@pytest.mark.parametrize("n,interleaved,wires", [(1, False, (0,)), (3, True, (2, 0, 1)), (6, False, (5, 1, 3)),
                                                 (6, True, (0, 1, 2, 3, 4, 5)), (8, True, (7, 6, 5, 4, 3, 2, 1, 0))])
@pytest.mark.parametrize("angle_sets", [1, 3])
def test_kernel_matches_the_torch_code(n, interleaved, wires, angle_sets, dtype, tol):
    pytest.importorskip("cupy", reason="the kernel is compiled by CuPy (pip install cupy-cuda12x)")
    t, half, cot = _case(n, interleaved, wires, 3, angle_sets, dtype, "cuda")
    assert fused_ry_cuda.kernel_applies(t)
    got = _run(fused_ry_cuda.ry_layer_apply, t, half, cot, wires, n)
    want = _run(RYLayer.apply, t, half, cot, wires, n)
    for name, a, b in zip(("states", "grad states", "grad angles"), got, want):
        assert a.shape == b.shape, name
        scale = b.abs().max().item()
        assert (a - b).abs().max().item() <= tol * max(1.0, scale), name


def test_the_cpu_runs_the_torch_code():
    t, half, cot = _case(3, True, (0, 2), 2, 1, torch.float64, "cpu")
    assert not fused_ry_cuda.kernel_applies(t)
    for a, b in zip(_run(fused_ry_cuda.ry_layer_apply, t, half, cot, (0, 2), 3), _run(RYLayer.apply, t, half, cot, (0, 2), 3)):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


@pytest.mark.parametrize("dc,item,tile", [(512, 8, 4), (1024, 8, 2), (1024, 4, 4), (32, 8, 32), (2048, 8, 1)])
def test_a_tile_is_what_shared_memory_holds(dc, item, tile):
    """Samples per block: two state tiles and the reduction buffer within 48 KiB (8 qubits interleaved in
    float64: 4 samples; one qubit more halves it, below the kernel's minimum of 4)."""
    assert fused_ry_cuda._tile(dc, item) == tile
