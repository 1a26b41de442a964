"""The CUDA kernel of a no-grad feature-form call (``qelm.backends.fused_features_cuda``) against the torch
code it replaces: on the GPU the kernel itself (random matrices, every layout it reads, float32 and float64,
sample counts no tile divides) and whole models (their logits and generated tokens with the kernel on and
off); on the CPU, where it is never taken, an emulation of its index arithmetic stands in to check what the
backend hands it and what it does with the result."""

from __future__ import annotations

import math

import pytest
import torch

from qelm import QELM, QELMConfig
from qelm.backends import fused_features_cuda
from qelm.backends.fused_features import Expval, monomials

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


def _emulate(columns, powers, x, W, z, group, out_dtype):
    """What the kernel computes, from its own index arithmetic: monomial f has mixed-radix digits e_a (the
    first angle most significant) and is prod_a c_a^(r_a - e_a) s_a^e_a; out (S, G, M, n_obs)."""
    S, M, _ = x.shape
    F, real = W.shape[-1], W.dtype
    half = 0.5 * x[..., list(columns)].to(real)  # (S, M, A)
    c, s = torch.cos(half), torch.sin(half)
    phi = torch.ones(S, M, F, dtype=real)
    for f in range(F):
        rest = f
        for a in reversed(range(len(powers))):
            e = rest % (powers[a] + 1)
            rest //= powers[a] + 1
            phi[..., f] *= c[..., a] ** (powers[a] - e) * s[..., a] ** e
    sq = (phi @ W.mT) ** 2  # (S, M, R)
    out = sq.unflatten(-1, (group, -1)) @ z.to(real)  # (S, M, G, n_obs)
    return out.movedim(-2, 1).to(out_dtype)


def _case(powers, n_data, rows, dc, S, M, dtype, device, seed=0):
    """Angles in [-4, 4] (S, M, n_data), W (S, rows, F) and signs-like weights z (dc, 4), random."""
    g = torch.Generator().manual_seed(seed)
    F = math.prod(r + 1 for r in powers)
    x = (torch.rand(S, M, n_data, generator=g, dtype=torch.float64) * 8 - 4).to(device, dtype)
    W = torch.randn(S, rows, F, generator=g, dtype=torch.float64).to(device)
    z = torch.randn(dc, 4, generator=g, dtype=torch.float64).to(device)
    return x, W, z


def _reference(columns, powers, x, W, z, group):
    """The torch code of the feature form (``monomials`` and ``Expval``), laid out as the kernel's result."""
    from qelm.backends.fused_features import FeaturePlan

    fp = FeaturePlan(tuple(columns), tuple(powers), None, [], [], None, W.shape[-1], False)  # type: ignore[arg-type]
    phi = monomials(fp, x.to(W.dtype).mT)  # (S, F, M)
    out = Expval.apply(W, phi, z, group)  # (S, G, n_obs, M)
    return out.movedim(-1, -2)


@pytest.mark.parametrize("columns,powers,n_data", [((0, 1, 2, 3), (2, 2, 2, 2), 8), ((1, 3), (1, 3), 5),
                                                   ((2,), (2,), 3)])
def test_the_emulation_is_the_torch_code(columns, powers, n_data):
    """The stand-in used on the CPU below computes what the feature form's torch code computes."""
    for group, dc in ((1, 8), (3, 4)):
        x, W, z = _case(powers, n_data, group * dc, dc, 2, 11, torch.float64, "cpu")
        torch.testing.assert_close(_emulate(columns, powers, x, W, z, group, torch.float64),
                                   _reference(columns, powers, x, W, z, group), rtol=1e-12, atol=1e-12)


def test_the_cpu_never_takes_the_kernel():
    x = torch.zeros(1, 2, 4)
    assert not fused_features_cuda.kernel_applies(x)


def test_a_model_through_the_stand_in_gives_its_logits(monkeypatch):
    """With the kernel stood in for by the emulation, a QELM's no-grad logits and its decode step's tokens
    are those of the torch code: the backend hands the kernel the data angles, W's rows and the signs in
    the layout it reads, and places its result where the samples' outputs go."""
    torch.manual_seed(0)
    model = QELM(QELMConfig(context_len=24)).double().eval()
    idx = torch.randint(0, 64, (3, 24))
    with torch.no_grad():
        want = model(idx)[0]
    calls = []

    def stand_in(columns, powers, x, W, z, group, out_dtype):
        calls.append((tuple(x.shape), tuple(W.shape), group))
        return _emulate(columns, powers, x.cpu(), W.cpu(), z.cpu(), group, out_dtype)

    monkeypatch.setattr(fused_features_cuda, "kernel_applies", lambda *t: not torch.is_grad_enabled())
    monkeypatch.setattr(fused_features_cuda, "features_expval", stand_in)
    with torch.no_grad():
        got = model(idx)[0]
    torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-10)
    assert {c[2] for c in calls} == {1, 3}  # q, k and v share their inputs: one call of three sets
    a = model.generate(idx[:, :8], 10, generator=torch.Generator().manual_seed(3), cache_implementation="static")
    monkeypatch.undo()
    b = model.generate(idx[:, :8], 10, generator=torch.Generator().manual_seed(3), cache_implementation="static")
    assert torch.equal(a, b)


def test_a_tile_fits_the_shared_memory():
    assert fused_features_cuda._tile(8, 4, 81, 96, 8) == 8  # a decode step of 8 sequences: one tile of 8
    assert fused_features_cuda._tile(1000, 4, 81, 96, 8) == 16  # (8 + 81 + 96) * 32 * 8 bytes is over 40 KiB
    assert fused_features_cuda._tile(1, 4, 81, 96, 8) == 1
    assert fused_features_cuda._tile(64, 12, 4096, 4096, 8) == 0  # nothing fits: the torch code runs


@pytest.mark.gpu
@cuda
@pytest.mark.parametrize("dtype,out_dtype,tol", [(torch.float64, torch.float64, 1e-12), (torch.float32, torch.float32, 2e-6)])
@pytest.mark.parametrize("columns,powers,n_data,group,dc", [((0, 1, 2, 3), (2, 2, 2, 2), 8, 3, 32),
                                                            ((0, 1, 2, 3), (2, 2, 2, 2), 8, 1, 32),
                                                            ((0, 1, 2, 3), (1, 1, 1, 1), 4, 1, 16),
                                                            ((1, 3), (1, 3), 5, 2, 8)])
@pytest.mark.parametrize("M", [1, 8, 37, 1000])
def test_kernel_matches_the_torch_code(columns, powers, n_data, group, dc, M, dtype, out_dtype, tol):
    pytest.importorskip("cupy", reason="the kernel is compiled by CuPy (pip install cupy-cuda12x)")
    x, W, z = _case(powers, n_data, group * dc, dc, 2, M, dtype, "cuda")
    with torch.no_grad():
        assert fused_features_cuda.kernel_applies(x, W)
        got = fused_features_cuda.features_expval(columns, powers, x, W, z, group, out_dtype)
        want = _reference(columns, powers, x, W, z, group).to(out_dtype)
    assert got is not None and got.shape == want.shape == (2, group, M, 4) and got.dtype == out_dtype
    scale = want.abs().max().item()
    assert (got - want).abs().max().item() <= tol * max(1.0, scale)


@pytest.mark.gpu
@cuda
@pytest.mark.parametrize("dtype,tol", [(torch.float64, 1e-11), (torch.float32, 1e-5)])
def test_a_model_on_cuda_gives_the_same_logits_and_tokens_with_the_kernel(monkeypatch, dtype, tol):
    pytest.importorskip("cupy", reason="the kernel is compiled by CuPy (pip install cupy-cuda12x)")
    torch.manual_seed(0)
    model = QELM(QELMConfig(context_len=64)).to("cuda", dtype).eval()
    idx = torch.randint(0, 64, (4, 64), device="cuda")
    with torch.no_grad():
        got = model(idx)[0]
    gen = model.generate(idx[:, :16], 24, generator=torch.Generator("cuda").manual_seed(5))
    monkeypatch.setattr(fused_features_cuda, "ENABLED", False)  # the staged torch code, as training runs
    model.cuda_graphs = False
    with torch.no_grad():
        want = model(idx)[0]
    ref = model.generate(idx[:, :16], 24, generator=torch.Generator("cuda").manual_seed(5), cache_implementation="dynamic")
    assert (got - want).abs().max().item() <= tol * max(1.0, want.abs().max().item())
    if dtype == torch.float64:
        assert torch.equal(gen, ref)
