"""QELM and its classical twins: shapes, learnability, state_dict round trips, matched baseline."""

import math

import pytest
import torch

from qelm import QELM, ClassicalLM, QELMConfig
from qelm.layers import QuantumLayer

SLOTS = [
    {},
    {"embedding_circuit": "polar"},
    {"embedding_circuit": "amplitude"},
    {"attention": "fidelity"},
    {"attention": "fidelity", "fidelity_method": "swap_test", "adaptive_threshold": True},
    {"embedding": "classical", "feed_forward": "classical"},
]


@pytest.mark.parametrize("slots", SLOTS, ids=lambda s: ",".join(f"{k}={v}" for k, v in s.items()) or "default")
def test_forward_shapes_and_loss(tiny_config, slots):
    cfg = tiny_config.replace(**slots)
    model = QELM(cfg)
    idx = torch.randint(0, cfg.vocab_size, (3, cfg.context_len))
    logits, loss = model(idx, idx)
    assert logits.shape == (3, cfg.context_len, cfg.vocab_size)
    assert loss.ndim == 0 and torch.isfinite(loss)
    loss.backward()
    circuit_grads = [p.grad for n, p in model.named_parameters() if n.endswith("weights")]
    assert circuit_grads and all(g is not None and g.abs().sum() > 0 for g in circuit_grads)
    assert model(idx)[1] is None


def test_classical_twin_has_the_same_config_and_no_circuits(tiny_config):
    twin = ClassicalLM(tiny_config)
    for f in ("vocab_size", "d_model", "n_heads", "d_hidden", "n_layers", "context_len"):
        assert getattr(twin.config, f) == getattr(tiny_config, f)
    assert not any(isinstance(m, QuantumLayer) for m in twin.modules())
    assert twin.num_parameters() == ClassicalLM.parameter_count(tiny_config)
    assert twin.circuit_parameters() == 0


def _train(model, steps=30, lr=0.05):
    seq = torch.tensor([[1, 2, 3, 4, 5, 6] * 2])[:, :7]  # a tiny repeated sequence
    x, y = seq[:, :-1], seq[:, 1:]
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    losses = []
    for _ in range(steps):
        _, loss = model(x, y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return losses


@pytest.mark.parametrize("cls", [QELM, ClassicalLM])
def test_loss_decreases_on_a_repeated_sequence(tiny_config, cls):
    losses = _train(cls(tiny_config))
    assert losses[-1] < 0.5 * losses[0], losses


def test_circuits_alone_can_learn(tiny_config):
    """Only circuit weights train (everything classical frozen): the loss must still fall."""
    model = QELM(tiny_config)
    for name, p in model.named_parameters():
        p.requires_grad_(name.endswith("weights"))
    losses = _train(model, steps=30, lr=0.1)
    assert losses[-1] < losses[0] - 0.05, losses


@pytest.mark.parametrize("cls", [QELM, ClassicalLM])
def test_state_dict_round_trip_gives_identical_logits(tiny_config, cls):
    a = cls(tiny_config)
    b = cls(tiny_config)
    idx = torch.randint(0, tiny_config.vocab_size, (2, tiny_config.context_len))
    assert not torch.equal(a(idx)[0], b(idx)[0])
    b.load_state_dict(a.state_dict())
    assert torch.equal(a(idx)[0], b(idx)[0])


def test_matched_baseline_is_within_two_percent(tiny_config):
    for cfg in (tiny_config, QELMConfig(), QELMConfig(vocab_size=100, d_model=128, n_heads=4, d_hidden=256)):
        q = QELM(cfg)
        m = ClassicalLM.matched_to(q)
        assert abs(m.num_parameters() - q.num_parameters()) <= 0.02 * q.num_parameters()
        assert m.config.vocab_size == cfg.vocab_size and m.config.n_layers == cfg.n_layers


def test_token_ids_out_of_range_and_too_long_sequences(tiny_config):
    model = QELM(tiny_config)
    with pytest.raises(ValueError, match="token id 11 is out of range for vocab_size=11"):
        model(torch.tensor([[0, 11]]))
    with pytest.raises(ValueError, match="token id -1"):
        model(torch.tensor([[-1, 0]]))
    with pytest.raises(ValueError, match="exceeds context_len=6"):
        model(torch.zeros(1, 7, dtype=torch.long))


@pytest.mark.parametrize("cls", [QELM, ClassicalLM])
def test_empty_batches_and_numpy_or_list_input_work_as_in_torch(tiny_config, cls):
    import numpy as np

    model = cls(tiny_config)
    for shape in ((0, 4), (1, 0), (0, 0)):
        logits, loss = model(torch.zeros(shape, dtype=torch.long))
        assert logits.shape == (*shape, tiny_config.vocab_size) and loss is None, shape
    ids = [[1, 2, 3], [4, 5, 6]]
    ref, ref_loss = model(torch.tensor(ids), torch.tensor(ids))
    for given in (np.array(ids), np.array(ids, dtype=np.int32), ids):
        logits, loss = model(given, given)
        assert torch.equal(logits, ref) and torch.equal(loss, ref_loss), type(given)
    with pytest.raises(ValueError, match="token ids must be integers, got dtype torch.float64"):
        model(np.zeros((2, 3)))
    with pytest.raises(ValueError, match=r"token ids must be \(batch, seq\), got shape \(3,\)"):
        model([1, 2, 3])


@pytest.mark.parametrize("setting, message", [
    (dict(temperature=-1.0), "temperature=-1.0 is invalid: use a finite number >= 0"),
    (dict(temperature=float("inf")), "temperature=inf is invalid"),
    (dict(temperature=float("nan")), "temperature=nan is invalid"),
    (dict(max_new_tokens=-1), "max_new_tokens=-1 is invalid: use an integer >= 0"),
    (dict(top_k=0), "top_k=0 is invalid"),
])
def test_generate_refuses_settings_that_cannot_be_meant(tiny_config, setting, message):
    model = QELM(tiny_config)
    with pytest.raises(ValueError, match=message):
        model.generate(torch.zeros(1, 2, dtype=torch.long), **{"max_new_tokens": 3, **setting})
    with pytest.raises(ValueError, match=r"seq >= 1, got shape \(1, 0\)"):
        model.generate(torch.zeros(1, 0, dtype=torch.long), 3)


def test_set_backend_keeps_weights_and_outputs(tiny_config):
    model = QELM(tiny_config)
    idx = torch.randint(0, tiny_config.vocab_size, (2, 5))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    ref = model(idx)[0]
    model.set_backend("lightning.qubit")
    assert model.backend.name == "lightning.qubit" and model.config.backend == "lightning.qubit"
    assert tiny_config.backend == "qelm.fused", "the caller's config is not changed"
    assert all(layer.backend is model.backend for layer in model.quantum_layers())
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert torch.allclose(model(idx)[0], ref, atol=1e-5)


def test_generate_is_reproducible_and_respects_context(tiny_config):
    model = QELM(tiny_config)
    start = torch.zeros(1, 1, dtype=torch.long)
    a = model.generate(start, 10, generator=torch.Generator().manual_seed(3))
    b = model.generate(start, 10, generator=torch.Generator().manual_seed(3))
    assert a.shape == (1, 11) and torch.equal(a, b)
    assert int(a.max()) < tiny_config.vocab_size


@pytest.mark.gpu
def test_cuda_keeps_the_simulation_on_the_gpu(tiny_config):
    model = QELM(tiny_config)
    idx = torch.randint(0, tiny_config.vocab_size, (2, 5))
    ref = model(idx)[0]
    gpu = model.to("cuda")
    logits, loss = gpu(idx.cuda(), idx.cuda())
    loss.backward()
    assert logits.device.type == "cuda"
    assert torch.allclose(logits.cpu(), ref, atol=1e-5)


SAMPLING = [dict(top_p=0.8), dict(min_p=0.2), dict(repetition_penalty=1.5), dict(repetition_penalty=0.7),
            dict(temperature=0.7, top_k=5, top_p=0.9, min_p=0.05, repetition_penalty=1.3)]


@pytest.mark.parametrize("slots", [{}, {"attention": "fidelity"},
                                   {"attention": "fidelity", "fidelity_method": "swap_test", "adaptive_threshold": True},
                                   {"embedding_circuit": "polar"},
                                   {"embedding": "classical", "attention": "classical", "feed_forward": "classical"}],
                         ids=["quantum", "fidelity", "swap_test-adaptive", "polar", "classical"])
def test_kv_cache_gives_the_same_logits_and_tokens(slots):
    """Generation with the KV cache (one token's circuits per step) equals re-reading the window, also
    after the window slides past context_len."""
    from qelm.model import KVCache

    torch.manual_seed(0)
    model = QELM(QELMConfig(vocab_size=13, d_model=8, n_heads=2, d_hidden=16, context_len=8, n_qubits=2,
                            circuit_layers=1, **slots)).double().eval()
    idx = torch.randint(0, 13, (2, 3))
    plain = model.generate(idx, 12, generator=torch.Generator().manual_seed(1), use_cache=False)
    cached = model.generate(idx, 12, generator=torch.Generator().manual_seed(1))
    assert torch.equal(plain, cached)
    for options in SAMPLING:  # every sampling option, with and without the cache: the same tokens
        runs = [model.generate(idx, 12, generator=torch.Generator().manual_seed(2), use_cache=c, **options)
                for c in (False, True)]
        assert torch.equal(*runs), options
    cache = KVCache(1)
    step = [model(plain[:, :3], cache=cache)[0][:, -1]] + [model(plain[:, t - 1:t], cache=cache)[0][:, -1] for t in range(4, 9)]
    full = [model(plain[:, :t])[0][:, -1] for t in range(3, 9)]
    torch.testing.assert_close(torch.stack(step), torch.stack(full), atol=1e-12, rtol=0)
    with pytest.raises(ValueError, match="KV cache holds 8 tokens"):
        model(plain[:, 8:9], cache=cache)


def test_torch_compile_traces_a_fused_qelm_in_one_graph():
    """With qelm.fused the circuits are torch operations: dynamo captures the whole forward, no break."""
    import torch._dynamo as dynamo

    model = QELM(QELMConfig(vocab_size=11, d_model=8, n_heads=2, d_hidden=16, context_len=6, n_qubits=2, circuit_layers=1))
    idx = torch.randint(0, 11, (2, 6))
    model(idx, idx)
    explained = dynamo.explain(model)(idx, idx)
    assert (explained.graph_count, explained.graph_break_count) == (1, 0), explained.break_reasons
    dynamo.reset()


@pytest.mark.parametrize("backend", ["qelm.fused", "default.qubit"])
def test_torch_compile_runs_and_matches_eager(backend):
    """Other backends are a compile boundary (torch.compiler.disable); the rest of the model compiles."""
    import torch._dynamo as dynamo

    model = QELM(QELMConfig(vocab_size=11, d_model=8, n_heads=2, d_hidden=16, context_len=6, n_qubits=2,
                            circuit_layers=1, backend=backend))
    idx = torch.randint(0, 11, (2, 6))
    logits, loss = model(idx, idx)
    grads = torch.autograd.grad(loss, list(model.parameters()))
    compiled = torch.compile(model, backend="eager")  # dynamo's graphs run eagerly: fast to build
    logits_c, loss_c = compiled(idx, idx)
    torch.testing.assert_close(logits_c, logits)
    for a, b in zip(torch.autograd.grad(loss_c, list(model.parameters())), grads):
        torch.testing.assert_close(a, b)
    dynamo.reset()


@pytest.mark.parametrize("backend", ["qelm.fused", "default.qubit", "lightning.qubit", "qiskit.aer"])
def test_torch_save_and_deepcopy_keep_the_model(backend, tmp_path):
    """Backends drop their caches (QNodes, kernels, device tensors) when pickled and rebuild them on use."""
    import copy

    model = QELM(QELMConfig(vocab_size=11, d_model=8, n_heads=2, d_hidden=16, context_len=6, n_qubits=2,
                            circuit_layers=1, backend=backend, backend_options={"cuda_graph": True} if backend in ("qelm.fused", "default.qubit") else {}))
    idx = torch.randint(0, 11, (2, 6))
    logits, _ = model(idx)  # caches filled
    torch.save(model, tmp_path / "model.pt")
    loaded = torch.load(tmp_path / "model.pt", weights_only=False)
    for other in (loaded, copy.deepcopy(model)):
        assert other.backend is not model.backend and other.backend.name == model.backend.name
        torch.testing.assert_close(other(idx)[0], logits)


# --- sampling -------------------------------------------------------------------------------------------------
def _draws(logits, n=4000, **options):
    """How often each token is drawn from ``logits`` (1, V) by :func:`sample_next` in ``n`` draws."""
    from qelm.sampling import sample_next

    g = torch.Generator().manual_seed(0)
    seen = options.pop("seen", torch.zeros(1, 1, dtype=torch.long))
    counts = torch.zeros(logits.shape[-1])
    for _ in range(n):
        counts[int(sample_next(logits, seen, generator=g, **options))] += 1
    return counts / n


def test_top_p_keeps_the_fewest_tokens_whose_probability_reaches_p():
    probs = torch.tensor([[0.5, 0.3, 0.15, 0.05]])
    freq = _draws(probs.log(), top_p=0.75)  # 0.5 < 0.75 <= 0.5 + 0.3: the first two
    assert freq[2] == freq[3] == 0 and abs(freq[0] - 0.625) < 0.03
    assert (_draws(probs.log(), top_p=0.1)[0] == 1).all(), "the most likely token always stays"
    assert (_draws(probs.log(), n=2000, top_p=1.0) > 0).all(), "p = 1 keeps every token"


def test_min_p_drops_tokens_less_likely_than_p_times_the_best():
    probs = torch.tensor([[0.5, 0.3, 0.15, 0.05]])
    freq = _draws(probs.log(), min_p=0.3)  # threshold 0.15: 0.05 goes
    assert freq[3] == 0 and freq[2] > 0


def test_repetition_penalty_discourages_tokens_already_seen():
    logits = torch.tensor([[2.0, 2.0, -1.0, -1.0]])
    seen = torch.tensor([[0, 2, 0]])  # token 0 (positive logit) and 2 (negative) were seen
    freq = _draws(logits.clone(), repetition_penalty=2.0, seen=seen)
    plain = _draws(logits.clone(), seen=seen)
    assert freq[0] < plain[0] and freq[2] < plain[2] and freq[1] > plain[1]
    assert abs(freq[0] / freq[1] - math.exp(1.0 - 2.0)) < 0.05, "a positive logit is divided by the penalty"


@pytest.mark.parametrize("setting, message", [
    (dict(top_p=0.0), "top_p=0.0 is invalid: use a number in \\(0, 1\\]"),
    (dict(top_p=1.5), "top_p=1.5 is invalid"),
    (dict(top_p=math.nan), "top_p=nan is invalid"),
    (dict(min_p=-0.1), "min_p=-0.1 is invalid: use a number in \\[0, 1\\]"),
    (dict(min_p=2), "min_p=2 is invalid"),
    (dict(repetition_penalty=0), "repetition_penalty=0 is invalid: use a finite number > 0"),
    (dict(repetition_penalty=math.inf), "repetition_penalty=inf is invalid"),
    (dict(repetition_penalty=True), "repetition_penalty=True is invalid"),
])
def test_sampling_options_are_checked_before_any_step(tiny_config, setting, message):
    model = QELM(tiny_config)
    with pytest.raises(ValueError, match=message):
        model.generate(torch.zeros(1, 2, dtype=torch.long), 3, **setting)
    with pytest.raises(ValueError, match=message):
        model.stream(torch.zeros(1, 2, dtype=torch.long), 3, **setting)  # at the call, not at the first step


def test_stream_yields_the_tokens_generate_returns(tiny_config):
    model = QELM(tiny_config).eval()
    idx = torch.randint(0, tiny_config.vocab_size, (2, 3))
    options = dict(temperature=0.8, top_p=0.9, repetition_penalty=1.2)
    steps = list(model.stream(idx, 9, generator=torch.Generator().manual_seed(5), **options))
    assert all(s.shape == (2, 1) for s in steps)
    whole = model.generate(idx, 9, generator=torch.Generator().manual_seed(5), **options)
    assert torch.equal(torch.cat([idx, *steps], dim=1), whole)
