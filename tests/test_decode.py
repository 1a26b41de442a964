"""Launch-free inference (qelm.decode): the static KV cache gives the dynamic cache's tokens for the same seed,
recorded calls give the eager results, and a recording that fails falls back to eager with one warning. On
the CPU the graph logic runs with stand-in recorders; the real graphs are checked on a GPU (``-m gpu``)."""

from __future__ import annotations

import warnings

import pytest
import torch

import qelm.decode as decode
from qelm import QELM, ClassicalLM, QELMConfig
from qelm.backends.cuda_graph import Replays
from qelm.errors import ConfigError
from qelm.model import KVCache
from qelm.sampling import draw, next_probs
from qelm.kv_cache import StaticCache

SLOTS = [dict(), dict(embedding_circuit="polar"), dict(attention="fidelity"),
         dict(embedding="classical", attention="classical", feed_forward="classical")]
SAMPLING = [dict(temperature=0), dict(), dict(top_k=5, temperature=0.7), dict(top_p=0.8, repetition_penalty=1.3),
            dict(min_p=0.1, repetition_penalty=0.8)]


def _config(**changes) -> QELMConfig:
    return QELMConfig(vocab_size=16, d_model=8, n_heads=2, context_len=12, n_qubits=2, circuit_layers=1, **changes)


def _both(model, idx, n, **options):
    """``model.generate`` with the dynamic and the static cache, each from the same seeds."""
    out = []
    for implementation in ("dynamic", "static"):
        torch.manual_seed(5)  # the default generator too
        out.append(model.generate(idx, n, generator=torch.Generator().manual_seed(1),
                                  cache_implementation=implementation, **options))
    return out


@pytest.mark.parametrize("slots", SLOTS, ids=lambda s: ",".join(f"{k}={v}" for k, v in s.items()) or "default")
@pytest.mark.parametrize("cls", [QELM, ClassicalLM])
def test_static_cache_gives_the_dynamic_caches_tokens(cls, slots):
    torch.manual_seed(0)
    model = cls(_config(**slots)).eval()
    idx = torch.randint(0, 16, (3, 4))
    for options in SAMPLING:  # 4 + 20 tokens pass context_len 12: the window slides after 8 static steps
        dynamic, static = _both(model, idx, 20, **options)
        assert torch.equal(dynamic, static), options


def test_the_static_steps_run_and_their_logits_match_the_dynamic_cache():
    torch.manual_seed(0)
    model = QELM(_config()).eval()
    idx = torch.randint(0, 16, (2, 5))
    with torch.no_grad():
        kv = KVCache(len(model.blocks))
        model(idx, cache=kv)
        static = StaticCache(len(model.blocks), 12, idx.device)
        static.load([dict(b) for b in kv.blocks], kv.length)
        for _ in range(4):
            token = torch.randint(0, 16, (2, 1))
            want, _ = model(token, cache=kv)
            got = model._logits(token, static)
            torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)
        assert int(static.position) == kv.length == 9


def test_generate_uses_the_decoder_where_static(monkeypatch):
    steps = []
    real = decode.Decoder.step
    monkeypatch.setattr(decode.Decoder, "step", lambda self, g: steps.append(1) or real(self, g))
    model = QELM(_config()).eval()
    model.generate(torch.tensor([[1, 2, 3]]), 12, cache_implementation="static")  # 3 + 12 > 12: slides
    assert len(steps) == 12 - 3  # the prompt fills 3 slots, each step one more; then the window slides
    steps.clear()
    model.generate(torch.tensor([[1, 2, 3]]), 5)  # None on the CPU: dynamic
    assert not steps


def test_static_cache_is_refused_where_it_cannot_hold_the_attention():
    model = QELM(_config(attention="fidelity", fidelity_method="swap_test")).eval()
    with pytest.raises(ConfigError, match="swap_test.*dynamic"):
        model.generate(torch.tensor([[1, 2]]), 2, cache_implementation="static")
    with pytest.raises(ConfigError, match="cache_implementation='paged' is invalid"):
        model.generate(torch.tensor([[1, 2]]), 2, cache_implementation="paged")
    assert model.generate(torch.tensor([[1, 2]]), 2).shape == (1, 4)  # None: dynamic for it


def test_draw_is_multinomial_with_the_same_generator():
    for seed in range(50):
        g = torch.Generator().manual_seed(seed)
        probs = next_probs(torch.randn(4, 32, generator=g) * 3, 0.8, 10, 0.9, None, None)
        a = torch.multinomial(probs, 1, generator=torch.Generator().manual_seed(seed))
        g2 = torch.Generator().manual_seed(seed)
        assert torch.equal(a, draw(probs, torch.empty_like(probs).exponential_(1, generator=g2)))


def _static_recorder(calls):
    """A CPU stand-in for :func:`record_graph`: static inputs and one output buffer, rewritten per replay; a
    replay sees what the recording saw from :func:`~qelm.backends.cuda_graph.fixed_weights` (a CUDA graph
    replays the matrices it captured)."""
    import contextlib

    from qelm.backends.cuda_graph import fixed_store, fixed_weights

    def record(fn, inputs):
        store = fixed_store()
        calls.append(fn)
        static = tuple(t.clone() for t in inputs)
        out = fn(*static)

        def replay(*args):
            for buffer, a in zip(static, args):
                buffer.copy_(a)
            with fixed_weights(store) if store is not None else contextlib.nullcontext():
                out.copy_(fn(*static))
            return out
        return replay
    return record


@pytest.mark.parametrize("slots", [{}, {"embedding": "classical"}], ids=["default", "classical-embedding"])
def test_a_recorded_decode_step_applies_fixed_matrices_and_is_recorded_again_when_weights_change(slots, graphs_on_cpu,
                                                                                                  monkeypatch):
    """The decode step is recorded under fixed_weights: its circuits' matrices are built in the warm-up and
    applied per token (fewer operations than building them); changing a weight in place gives a new recording,
    so the tokens are always those of the eager model with the current weights."""
    from qelm.backends.cuda_graph import fixed_weights

    torch.manual_seed(0)
    model = QELM(_config(**slots)).eval()
    calls: list = []
    model.__dict__["_replays"] = Replays(record=_static_recorder(calls))
    idx = torch.randint(0, 16, (2, 3))

    def eager(n):
        model.cuda_graphs = False
        try:
            return model.generate(idx, n, temperature=0)
        finally:
            model.cuda_graphs = True

    assert torch.equal(model.generate(idx, 6, temperature=0), eager(6))
    assert len(calls) == 1
    decoder = next(iter(model.__dict__["_decoders"].values()))
    assert decoder._fixed  # the matrices of every circuit call, built once
    import qelm.backends.fused as fused

    with torch.no_grad(), monkeypatch.context() as m:
        m.setattr(fused, "capturing", lambda device: True)  # as while a graph records: no value-checked reuse
        decoder.load([{} for _ in model.blocks], 0, idx, idx[:, -1:])  # any state: count the step's operations
        with fixed_weights(decoder._fixed):
            fixed = len(_ops(decoder._step))
        built = len(_ops(decoder._step))
    assert fixed < 0.8 * built, (fixed, built)
    with torch.no_grad():
        model.blocks[0].attention.heads.weights.mul_(1.5)  # in place: same address, new values
    assert torch.equal(model.generate(idx, 6, temperature=0), eager(6))
    assert len(calls) == 2  # recorded again


def _raising(fn, inputs):
    raise RuntimeError("operation not permitted when stream is capturing\nmore detail")


@pytest.fixture
def graphs_on_cpu(monkeypatch):
    """Graphs apply on the CPU too (recorded by the stand-in a test installs)."""
    monkeypatch.setattr(decode, "_records", lambda device: True)


def test_graphs_apply_only_where_they_can(graphs_on_cpu):
    from qelm.backends import BackendSpec

    model = QELM(_config()).eval()
    cpu = torch.device("cpu")
    with torch.no_grad():
        assert decode.graphs_apply(model, cpu)
        with decode.eager():
            assert not decode.graphs_apply(model, cpu)
        model.blocks[0].attention.heads.keep_attention = True  # a plot reads the attention maps
        assert not decode.graphs_apply(model, cpu)
        model.blocks[0].attention.heads.keep_attention = False
        model.cuda_graphs = False
        assert not decode.graphs_apply(model, cpu)
        assert not decode.graphs_apply(QELM(_config(), BackendSpec("default.qubit")), cpu)  # not pure torch
    assert not decode.graphs_apply(ClassicalLM(_config()), cpu)  # gradients wanted


def test_generation_without_a_cache_records_nothing(graphs_on_cpu):
    model = QELM(_config()).eval()
    calls: list = []
    model.__dict__["_replays"] = Replays(record=_static_recorder(calls))
    model.generate(torch.tensor([[1, 2, 3]]), 12, use_cache=False)  # windows of 3, 4, ... 12 tokens
    assert not calls


@pytest.mark.parametrize("cls", [QELM, ClassicalLM])
def test_recorded_forward_equals_eager_and_is_kept_per_shape(cls, graphs_on_cpu):
    torch.manual_seed(0)
    model = cls(_config()).eval()
    calls: list = []
    model.__dict__["_replays"] = Replays(size=2, record=_static_recorder(calls))
    a, b = torch.randint(0, 16, (2, 6)), torch.randint(0, 16, (2, 6))
    with torch.no_grad():
        ya, yb = model(a)[0], model(b)[0]
        model.cuda_graphs = False
        want_a, want_b = model(a)[0], model(b)[0]
        model.cuda_graphs = True
        model(torch.randint(0, 16, (1, 6)))  # a second shape: a second recording
    assert len(calls) == 2 and model._replays.replays == 3
    torch.testing.assert_close(ya, want_a, rtol=0, atol=0)  # the first output was cloned, not overwritten
    torch.testing.assert_close(yb, want_b, rtol=0, atol=0)
    with torch.no_grad():
        model.lm_head.weight.mul_(2)  # values changed in place: read anew by the same graph
        graphed = model(a)[0]
        model.cuda_graphs = False
        assert torch.equal(graphed, model(a)[0]) and not torch.equal(graphed, want_a)
        model.cuda_graphs = True
    assert len(calls) == 2
    _, loss = model(a, targets=a)  # gradients wanted: eager
    assert loss.requires_grad


def test_a_recording_that_fails_runs_eagerly_with_one_warning(graphs_on_cpu):
    torch.manual_seed(0)
    model = QELM(_config()).eval()
    model.__dict__["_replays"] = Replays(record=_raising)
    idx = torch.randint(0, 16, (2, 6))
    with pytest.warns(UserWarning, match=r"CUDA graph recording failed \(RuntimeError: operation not permitted") as w:
        with torch.no_grad():
            got = [model(idx)[0], model(idx[:1])[0]]
        g = torch.Generator().manual_seed(3)
        tokens = model.generate(idx, 5, generator=g, cache_implementation="static")
    assert len([x for x in w if "CUDA graph" in str(x.message)]) == 1
    model.cuda_graphs = False
    with torch.no_grad():
        assert torch.equal(got[0], model(idx)[0]) and torch.equal(got[1], model(idx[:1])[0])
    assert torch.equal(tokens, model.generate(idx, 5, generator=torch.Generator().manual_seed(3),
                                              cache_implementation="dynamic"))


@pytest.mark.parametrize("cls", [QELM, ClassicalLM])
def test_a_recorded_decode_step_gives_the_same_tokens_and_is_reused(cls, graphs_on_cpu):
    torch.manual_seed(0)
    model = cls(_config()).eval()
    calls: list = []
    model.__dict__["_replays"] = Replays(record=_static_recorder(calls))
    idx = torch.randint(0, 16, (3, 4))
    with warnings.catch_warnings():
        warnings.filterwarnings("error", message="CUDA graph recording failed")
        for options in SAMPLING:
            got = [model.generate(idx, 20, generator=torch.Generator().manual_seed(s), **options) for s in (1, 2)]
            model.cuda_graphs = False
            want = [model.generate(idx, 20, generator=torch.Generator().manual_seed(s), cache_implementation="dynamic",
                                   **options) for s in (1, 2)]
            model.cuda_graphs = True
            assert torch.equal(got[0], want[0]) and torch.equal(got[1], want[1]), options
    steps = [fn for fn in calls if getattr(fn, "__name__", "") == "_step"]
    assert len(steps) == len(SAMPLING)  # one recording per sampling setting: the second call reused it


def test_replays_are_bounded_and_never_copied():
    import copy
    calls: list = []
    pool = Replays(size=2, record=_static_recorder(calls))
    for n in (1, 2, 3, 1):
        pool(("k", n), lambda x: x * 2, torch.ones(n))
    assert len(pool) == 2 and len(calls) == 4  # (k, 1) was dropped for (k, 3), then recorded again
    assert len(copy.deepcopy(pool)) == 0
    model = QELM(_config()).eval()
    model.__dict__["_replays"] = pool
    assert len(copy.deepcopy(model).__dict__["_replays"]) == 0


needs_cuda = pytest.mark.gpu


@needs_cuda
@pytest.mark.parametrize("cls", [QELM, ClassicalLM])
def test_cuda_graphed_forward_equals_eager(cls):
    torch.manual_seed(0)
    model = cls(QELMConfig(context_len=64)).cuda().eval()
    idx = torch.randint(0, 64, (2, 64), device="cuda")
    with warnings.catch_warnings():
        warnings.filterwarnings("error", message="CUDA graph recording failed")
        with torch.no_grad():
            graphed = [model(idx)[0] for _ in range(3)]
    model.cuda_graphs = False
    with torch.no_grad():
        eager = model(idx)[0]
    assert model._replays.replays == 3 and len(model._replays) == 1
    for g in graphed:
        torch.testing.assert_close(g, eager, rtol=1e-5, atol=1e-6)


@needs_cuda
@pytest.mark.parametrize("cls", [QELM, ClassicalLM])
@pytest.mark.parametrize("options", SAMPLING, ids=str)
def test_cuda_graphed_generation_gives_the_dynamic_caches_tokens(cls, options):
    torch.manual_seed(0)
    model = cls(QELMConfig(context_len=32)).cuda().eval()
    idx = torch.randint(0, 64, (4, 8), device="cuda")
    with warnings.catch_warnings():
        warnings.filterwarnings("error", message="CUDA graph recording failed")
        got = [model.generate(idx, 40, generator=torch.Generator("cuda").manual_seed(s), **options) for s in (1, 2)]
    decoders = list(model._decoders.values())
    assert decoders and decoders[-1]._replay is not None  # the step was recorded and replayed
    want = [model.generate(idx, 40, generator=torch.Generator("cuda").manual_seed(s), cache_implementation="dynamic",
                           **options) for s in (1, 2)]
    assert torch.equal(got[0], want[0]) and torch.equal(got[1], want[1])


@needs_cuda
def test_cuda_graphed_generation_with_the_default_generator():
    torch.manual_seed(0)
    model = QELM(QELMConfig(context_len=32)).cuda().eval()
    idx = torch.randint(0, 64, (2, 8), device="cuda")
    torch.manual_seed(7)
    got = model.generate(idx, 16)
    torch.manual_seed(7)
    assert torch.equal(got, model.generate(idx, 16, cache_implementation="dynamic"))


@pytest.mark.parametrize("cls", [QELM, ClassicalLM])
def test_compile_model_gives_the_same_logits_and_tokens(cls):
    import torch._dynamo as dynamo

    torch.manual_seed(0)
    model = cls(_config()).eval()
    idx = torch.randint(0, 16, (3, 4))
    with torch.no_grad():
        want_logits = model(idx)[0]
    want = model.generate(idx, 12, generator=torch.Generator().manual_seed(1), cache_implementation="dynamic")
    decode.compile_model(model, backend="eager")  # dynamo's graphs run eagerly: fast to build
    with torch.no_grad():
        torch.testing.assert_close(model(idx)[0], want_logits)
    assert torch.equal(model.generate(idx, 12, generator=torch.Generator().manual_seed(1)), want)  # static: compiled
    assert any(d._run is not d._step for d in model._decoders.values())
    _, loss = model(idx, targets=idx)  # training through the compiled forward
    loss.backward()
    dynamo.reset()


def test_the_decode_step_traces_in_one_graph():
    """Compiled, the whole step (model and sampling) is one graph: nothing in it reads a tensor on the host."""
    import torch._dynamo as dynamo

    torch.manual_seed(0)
    model = QELM(_config()).eval()
    idx = torch.randint(0, 16, (2, 4))
    with torch.no_grad():
        kv = KVCache(len(model.blocks))
        model(idx, cache=kv)
        sampling = dict(temperature=0.8, top_k=5, top_p=0.9, min_p=0.05, repetition_penalty=1.2, never=(3,))
        decoder = decode.Decoder(model, 2, idx.device, sampling, graphs=False)
        decoder.load(kv.blocks, kv.length, idx, idx[:, -1:])
        decoder.noise.exponential_(1)
        explained = dynamo.explain(decoder._step)()
    assert (explained.graph_count, explained.graph_break_count) == (1, 0), explained.break_reasons
    dynamo.reset()


def test_compile_is_refused_in_one_line_for_a_backend_it_cannot_trace():
    from qelm.backends import BackendSpec

    with pytest.raises(ConfigError, match=r"--compile needs circuits torch.compile can trace: backend qelm.fused"):
        decode.compile_model(QELM(_config(), BackendSpec("default.qubit")))
    assert decode.compile_model(ClassicalLM(_config())) is not None  # no circuits: compiles


def test_generate_compile_on_a_backend_that_cannot_be_compiled_is_one_line(cli, tmp_path):
    from qelm.checkpoint import save_checkpoint
    from qelm.tokenizer import CharTokenizer

    tokenizer = CharTokenizer.from_text("abcdefgh ")
    model = QELM(_config().replace(vocab_size=tokenizer.vocab_size))
    save_checkpoint(tmp_path / "ck", model, tokenizer)
    for command in (["generate", "--checkpoint", tmp_path / "ck", "--prompt", "ab"], ["chat", tmp_path / "ck"]):
        line = cli.error(*command, "--compile", "--backend", "default.qubit", "--max-new-tokens", "2")
        assert "--compile needs circuits torch.compile can trace: backend qelm.fused" in line


def test_bench_compile_on_cuda_is_refused_in_one_line(cli, monkeypatch):
    """On CUDA the recorded graphs measured faster than compiled ones: refused before any measurement."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)  # past the check for a GPU, on any machine
    line = cli.error("bench", "--quick", "--device", "cuda", "--compile")
    assert "--compile is for the CPU: on CUDA qelm replays recorded CUDA graphs" in line


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_compile_model_on_cuda_is_refused_in_one_line():
    with pytest.raises(ConfigError, match="--compile is for the CPU"):
        decode.compile_model(QELM(_config()).cuda())


#: ops that read a tensor on the host, make one from Python data or give a value-dependent shape: none of them
#: may run inside a recorded CUDA graph
HOST_OPS = ("_local_scalar_dense", "lift_fresh", "equal", "is_nonzero", "nonzero", "_unique", "unique", "masked_select")


def _ops(fn) -> list[str]:
    from torch.utils._python_dispatch import TorchDispatchMode

    class Record(TorchDispatchMode):
        def __init__(self):
            super().__init__()
            self.names: list[str] = []

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            self.names.append(func.__name__)
            return func(*args, **(kwargs or {}))

    with Record() as record:
        fn()
    return record.names


@pytest.mark.parametrize("slots", SLOTS, ids=lambda s: ",".join(f"{k}={v}" for k, v in s.items()) or "default")
def test_what_is_recorded_never_reads_the_host(slots, monkeypatch):
    """The recorded forward and the decode step, on their fixed-shape path (what ``capturing()`` selects while
    a graph records), issue no op that would sync with the host or change shape with values."""
    import qelm.backends.fused as fused
    import qelm.layers as layers

    torch.manual_seed(0)
    model = QELM(_config(**slots)).eval()
    idx = torch.randint(0, 16, (2, 4))
    sampling = dict(temperature=0.8, top_k=5, top_p=0.9, min_p=0.05, repetition_penalty=1.2, never=(3,))
    with torch.no_grad():
        kv = KVCache(len(model.blocks))
        model(idx, cache=kv)
        model(idx)  # plans and constants built, as a recorder's warm-up builds them
        decoder = decode.Decoder(model, 2, idx.device, sampling, graphs=False)
        decoder.load(kv.blocks, kv.length, idx, idx[:, -1:])
        decoder.noise.exponential_(1)
        monkeypatch.setattr(layers, "capturing", lambda device: True)
        monkeypatch.setattr(fused, "capturing", lambda device: True)
        names = _ops(lambda: model._logits(idx, None)) + _ops(decoder._step)
    bad = sorted({n for n in names if any(n.startswith(h) for h in HOST_OPS)})
    assert not bad, bad


def test_torch_compile_of_the_model_under_no_grad_is_one_graph():
    """``torch.compile(model)`` (as windows.py runs it) traces the forward's graph dispatch without a break."""
    import torch._dynamo as dynamo

    model = QELM(_config()).eval()
    idx = torch.randint(0, 16, (2, 6))
    with torch.no_grad():
        model(idx)
        explained = dynamo.explain(model)(idx)
    assert (explained.graph_count, explained.graph_break_count) == (1, 0), explained.break_reasons
    dynamo.reset()
