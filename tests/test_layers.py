"""Quantum layers: gradients against finite differences, batch == per-sample, fidelity attention rules."""


import pytest
import torch
from torch.func import functional_call

from qelm import QuantumAttentionHead, QuantumEmbedding, QuantumFeedForward, QuantumMultiHeadAttention


def _gradcheck_module(module: torch.nn.Module, *inputs: torch.Tensor) -> None:
    """Finite-difference check of d(output)/d(every parameter and float input), float64."""
    module = module.double()
    names, params = zip(*[(n, p.detach().clone().requires_grad_(True)) for n, p in module.named_parameters()])
    floats = [x.detach().clone().double().requires_grad_(True) if x.is_floating_point() else x for x in inputs]

    def f(*tensors):
        out = functional_call(module, dict(zip(names, tensors[: len(names)])), tuple(tensors[len(names):]))
        return out

    assert torch.autograd.gradcheck(f, (*params, *floats), eps=1e-6, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("circuit", ["angle", "polar", "amplitude"])
def test_embedding_gradients_match_finite_differences(tiny_config, circuit):
    layer = QuantumEmbedding(tiny_config.replace(embedding_circuit=circuit, vocab_size=4, d_model=2, n_heads=1,
                                                 context_len=3))
    _gradcheck_module(layer, torch.tensor([[0, 3, 0]]))


@pytest.mark.parametrize("mode,method", [("quantum", "exact"), ("fidelity", "exact"), ("fidelity", "swap_test")])
def test_attention_head_gradients_match_finite_differences(mode, method):
    head = QuantumAttentionHead(n_qubits=2, circuit_layers=1, n_heads=2, mode=mode, method=method)
    _gradcheck_module(head, torch.randn(1, 3, 2, 2))


def test_feed_forward_gradients_match_finite_differences(tiny_config):
    layer = QuantumFeedForward(tiny_config.replace(d_model=2, n_heads=1))
    _gradcheck_module(layer, torch.randn(1, 2, 2))


@pytest.mark.parametrize("attention,method", [("quantum", "exact"), ("fidelity", "exact"), ("fidelity", "swap_test")])
def test_multi_head_attention_batch_equals_per_sample(tiny_config, attention, method):
    mha = QuantumMultiHeadAttention(tiny_config.replace(attention=attention, fidelity_method=method)).double()
    x = torch.randn(3, 5, tiny_config.d_model, dtype=torch.float64)
    batched = mha(x)
    assert batched.shape == x.shape
    for b in range(x.shape[0]):  # the loop lives only in the test
        assert torch.allclose(batched[b], mha(x[b : b + 1])[0], atol=1e-10, rtol=0)


def test_heads_are_independent_circuits():
    """Head h's output depends on head h's input and weights only."""
    head = QuantumAttentionHead(n_qubits=2, circuit_layers=1, n_heads=3).double()
    x = torch.randn(2, 4, 3, 2, dtype=torch.float64)
    base = head(x)
    x2 = x.clone()
    x2[:, :, 1] += 0.3
    moved = head(x2)
    assert torch.allclose(base[:, :, [0, 2]], moved[:, :, [0, 2]], atol=1e-12)
    assert not torch.allclose(base[:, :, 1], moved[:, :, 1])


def test_fidelity_scores_self_overlap_is_one_and_future_is_masked():
    head = QuantumAttentionHead(n_qubits=2, circuit_layers=2, n_heads=2, mode="fidelity").double()
    head.keep_attention = True
    x = torch.randn(2, 6, 2, 2, dtype=torch.float64)
    from qelm.backends import get_backend

    psi = get_backend("default.qubit").state(head.fidelity, head.fidelity.angles(x, head.weights[:, 0]).reshape(-1, head.fidelity.n_angles))
    assert torch.allclose((psi.conj() * psi).sum(-1).real, torch.ones(psi.shape[0], dtype=torch.float64), atol=1e-12)
    head(x)
    att = head.last_attention  # (B, H, T, T)
    assert torch.all(att.triu(diagonal=1) == 0), "a token attended to a future token"
    assert torch.allclose(att.sum(-1), torch.ones(2, 2, 6, dtype=torch.float64))


def test_adaptive_threshold_keeps_self_drops_low_scores_and_never_the_future():
    head = QuantumAttentionHead(n_qubits=2, circuit_layers=2, n_heads=1, mode="fidelity", adaptive_threshold=True).double()
    head.keep_attention = True
    x = torch.randn(4, 8, 1, 2, dtype=torch.float64) * 2
    head(x)
    att = head.last_attention
    assert torch.all(att.triu(diagonal=1) == 0)
    assert torch.all(att.diagonal(dim1=-2, dim2=-1) > 0), "a token must always keep itself"
    # recompute the rule independently: every kept weight's raw score is >= mean + 0.5 std of its row
    plain = QuantumAttentionHead(n_qubits=2, circuit_layers=2, n_heads=1, mode="fidelity").double()
    plain.load_state_dict(head.state_dict())
    psi = plain.backend.state(plain.fidelity, plain.fidelity.angles(x, plain.weights[:, 0]).reshape(-1, plain.fidelity.n_angles))
    psi = psi.reshape(4, 8, 1, -1).permute(0, 2, 1, 3)
    raw = (psi.conj() @ psi.transpose(-1, -2)).abs() ** 2
    T = 8
    dropped = 0
    for i in range(1, T):  # rows with a single visible token keep it trivially
        row = raw[..., i, : i + 1]
        thr = row.mean(-1, keepdim=True) + 0.5 * row.std(-1, unbiased=False, keepdim=True)
        expect_keep = row >= thr
        expect_keep[..., i] = True
        assert torch.equal(att[..., i, : i + 1] > 0, expect_keep)
        dropped += int((~expect_keep).sum())
    assert dropped > 0, "the test data never exercised the threshold"


def test_swap_test_with_shots_estimates_the_exact_fidelity():
    """Swap-test scores from 4000 shots agree with exact overlaps within 5 standard errors."""
    exact = QuantumAttentionHead(n_qubits=2, circuit_layers=1, n_heads=1, mode="fidelity", method="exact").double()
    shots = QuantumAttentionHead(n_qubits=2, circuit_layers=1, n_heads=1, mode="fidelity", method="swap_test",
                                 backend="default.qubit", shots=4000, seed=7).double()
    shots.load_state_dict(exact.state_dict())
    x = torch.randn(1, 5, 1, 2, dtype=torch.float64)
    w = exact.weights[:, 0]
    with torch.no_grad():
        psi = exact.backend.state(exact.fidelity, exact.fidelity.angles(x, w).reshape(-1, exact.fidelity.n_angles))
        f_exact = (psi.conj() @ psi.T).abs().square()  # (T, T)
        f_shots = shots._swap_test_scores(x, w)[0, 0]
    i, j = torch.tril_indices(5, 5)
    sigma = torch.sqrt((1 - f_exact[i, j] ** 2).clamp_min(1e-6) / 4000)  # std of the <Z_ancilla> estimate
    assert torch.all((f_shots[i, j] - f_exact[i, j]).abs() <= 5 * sigma + 1e-9)
    assert not torch.allclose(f_shots[i, j], f_exact[i, j], atol=1e-6), "shots gave exact values: shots unused?"


def test_layers_follow_torch_conventions(tiny_config):
    mha = QuantumMultiHeadAttention(tiny_config)
    x = torch.randn(2, 4, tiny_config.d_model)
    with torch.no_grad():
        y = mha(x)
    assert y.shape == (2, 4, tiny_config.d_model) and y.dtype == torch.float32 and not y.requires_grad
    sd = mha.state_dict()
    assert "heads.weights" in sd and sd["heads.weights"].shape == (2, 3, 1, 2, 3)
    other = QuantumMultiHeadAttention(tiny_config)
    other.load_state_dict(sd)
    assert torch.allclose(other(x), mha(x))
