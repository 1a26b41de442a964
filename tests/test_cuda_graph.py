"""CUDA-graph replay (``cuda_graph=True`` on default.qubit): a replay must never overwrite what a pending
backward pass or a caller still needs. The pool logic runs on the CPU here with a stand-in recorder that has
a graph's static-buffer semantics; the real graphs are checked against eager runs when a GPU is present."""

from __future__ import annotations

import pytest
import torch

from qelm import QELM
from qelm.backends import get_backend
from qelm.backends.cuda_graph import GraphPool
from qelm.circuits import build_circuit


def static_buffer_recorder(fn, samples):
    """Like ``torch.cuda.make_graphed_callables``: every call writes the same output buffer and keeps the
    activations for backward in one static buffer, so two calls before a backward corrupt the first."""
    assert len(samples) == 1
    static_in = samples[0].detach().clone()
    static_out = fn(static_in).detach().clone()

    class Replay(torch.autograd.Function):
        @staticmethod
        def forward(ctx, a):
            static_in.copy_(a)
            static_out.copy_(fn(a.detach()))
            return static_out.detach()

        @staticmethod
        def backward(ctx, g):
            with torch.enable_grad():
                x = static_in.clone().requires_grad_(True)
                (grad,) = torch.autograd.grad(fn(x), x, g)
            return grad

    return Replay.apply


def f(a):
    return torch.sin(a) * a


def test_two_calls_before_backward_take_two_graphs_and_keep_their_gradients():
    pool = GraphPool(record=static_buffer_recorder)
    a = torch.randn(5, 3, dtype=torch.float64, requires_grad=True)
    b = torch.randn(5, 3, dtype=torch.float64, requires_grad=True)
    ya, yb = pool("k", f, a), pool("k", f, b)  # same key and shape: the second must not reuse the first's graph
    assert pool.n_graphs == 2
    (ya.sum() + 2 * yb.sum()).backward()
    a2, b2 = a.detach().requires_grad_(True), b.detach().requires_grad_(True)
    (f(a2).sum() + 2 * f(b2).sum()).backward()
    torch.testing.assert_close(ya, f(a2), rtol=0, atol=1e-15)
    torch.testing.assert_close(a.grad, a2.grad, rtol=0, atol=1e-15)
    torch.testing.assert_close(b.grad, b2.grad, rtol=0, atol=1e-15)


def test_graphs_are_reused_after_backward_and_outputs_are_not_overwritten():
    pool = GraphPool(record=static_buffer_recorder)
    outs = []
    for step in range(4):
        a = torch.full((4, 2), float(step), dtype=torch.float64, requires_grad=True)
        y = pool("k", f, a)
        y.sum().backward()
        outs.append(y.detach())
    assert pool.n_graphs == 1 and pool.replays == 4
    for step, y in enumerate(outs):  # a later replay did not change an earlier output
        torch.testing.assert_close(y, f(torch.full((4, 2), float(step), dtype=torch.float64)))


def test_a_dropped_graph_frees_its_slot_and_a_full_pool_runs_eagerly():
    pool = GraphPool(per_key=1, record=static_buffer_recorder)
    a = torch.randn(3, 2, dtype=torch.float64, requires_grad=True)
    y = pool("k", f, a)
    y2 = pool("k", f, a * 2)  # the only slot is busy: eager, and still right
    assert pool.eager_calls == 1
    torch.testing.assert_close(y2, f(a * 2))
    del y, y2  # no backward: dropping the autograd graph frees the slot
    pool("k", f, a)
    assert pool.replays == 2 and pool.n_graphs == 1


def test_a_recording_failure_warns_once_and_runs_eagerly():
    def broken(fn, samples):
        raise RuntimeError("operation not permitted when stream is capturing")

    pool = GraphPool(record=broken)
    a = torch.randn(2, 2, dtype=torch.float64, requires_grad=True)
    with pytest.warns(UserWarning, match="CUDA graph recording failed"):
        y = pool("k", f, a)
    torch.testing.assert_close(y, f(a))
    pool("k", f, a)  # no second warning, no second attempt
    assert pool.eager_calls == 2


def test_cuda_graph_option_is_validated():
    with pytest.raises(ValueError, match="cuda_graph=True needs backend 'default.qubit' with shots=None"):
        get_backend("default.qubit", cuda_graph=True, shots=100)
    with pytest.raises(ValueError, match="cuda_graph=True needs"):
        get_backend("default.qubit", cuda_graph=True, diff_method="parameter-shift")
    with pytest.raises(ValueError, match="cuda_graph='yes' is invalid"):
        get_backend("default.qubit", cuda_graph="yes")
    with pytest.raises(ValueError, match="unknown option"):
        get_backend("qiskit.aer", cuda_graph=True)


def test_cuda_graph_leaves_cpu_calls_alone():
    circuit = build_circuit("angle", 3, 1)
    angles = torch.rand(6, circuit.n_angles, dtype=torch.float64, requires_grad=True)
    backend = get_backend("default.qubit", cuda_graph=True)
    out = backend.expval(circuit, angles)
    torch.testing.assert_close(out, get_backend("default.qubit").expval(circuit, angles), rtol=0, atol=0)
    assert backend._graphs.n_graphs == 0


needs_cuda = pytest.mark.gpu  # skipped, with the reason, where torch sees no CUDA GPU (see conftest.py)


@needs_cuda
@pytest.mark.parametrize("name", ["angle", "polar", "amplitude", "attention", "feed_forward"])
def test_cuda_graph_replay_equals_eager(name):
    circuit = build_circuit(name, 3, 2)
    eager, graphed = get_backend("default.qubit"), get_backend("default.qubit", cuda_graph=True)
    for _ in range(3):  # first call records, the next ones replay
        angles = torch.rand(64, circuit.n_angles, dtype=torch.float64, device="cuda") * 3
        a1, a2 = angles.clone().requires_grad_(True), angles.clone().requires_grad_(True)
        y1, y2 = eager.expval(circuit, a1), graphed.expval(circuit, a2)
        w = torch.arange(y1.numel(), device="cuda", dtype=torch.float64).reshape(y1.shape)
        (y1 * w).sum().backward()
        (y2 * w).sum().backward()
        torch.testing.assert_close(y2, y1, rtol=0, atol=1e-12)
        torch.testing.assert_close(a2.grad, a1.grad, rtol=0, atol=1e-12)
    assert graphed._graphs.replays == 3


def _three_steps_graphed_vs_eager(config, backend, tol):
    """Train two copies of one QELM for 3 SGD steps on CUDA, eager and with CUDA graphs; losses agree to
    ``tol`` at every step. Returns (eager model, graphed model)."""
    torch.manual_seed(0)
    ref = QELM(config).cuda()
    ref.set_backend(backend, cuda_graph=False)
    fast = QELM(config).cuda()
    fast.load_state_dict(ref.state_dict())
    fast.set_backend(backend, cuda_graph=True)
    opts = [torch.optim.SGD(m.parameters(), lr=0.1) for m in (ref, fast)]
    idx = torch.randint(0, config.vocab_size, (4, 6), device="cuda")
    for _ in range(3):
        losses = []
        for model, opt in zip((ref, fast), opts):
            opt.zero_grad()
            _, loss = model(idx, idx)
            loss.backward()
            opt.step()
            losses.append(loss.item())
        assert losses[1] == pytest.approx(losses[0], abs=tol)
    assert fast.backend._graphs.replays > 0
    return ref, fast


@needs_cuda
def test_qelm_training_steps_with_cuda_graphs_equal_eager(tiny_config):
    ref, fast = _three_steps_graphed_vs_eager(tiny_config, "default.qubit", 1e-9)
    for p, q in zip(ref.parameters(), fast.parameters()):
        torch.testing.assert_close(q, p, rtol=0, atol=1e-9)


@needs_cuda
@pytest.mark.parametrize("name", ["angle", "polar", "amplitude", "attention", "fidelity", "swap_test", "feed_forward"])
def test_cuda_equals_cpu_for_every_circuit(name):
    """On CUDA ``Rot`` runs as RZ RY RZ; values, states and gradients must not change."""
    circuit = build_circuit(name, 3, 2)
    backend = get_backend("default.qubit")
    angles = torch.rand(16, circuit.n_angles, dtype=torch.float64) * 3
    outs = {}
    for device in ("cpu", "cuda"):
        a = angles.detach().to(device).clone().requires_grad_(True)  # a leaf on each device
        y = backend.state(circuit, a) if circuit.returns == "state" else backend.expval(circuit, a)
        y.abs().sum().backward()
        outs[device] = (y.detach().cpu(), a.grad.cpu())
    torch.testing.assert_close(outs["cuda"][0], outs["cpu"][0], rtol=0, atol=1e-12)
    torch.testing.assert_close(outs["cuda"][1], outs["cpu"][1], rtol=0, atol=1e-10)


@needs_cuda
@pytest.mark.parametrize("name", ["angle", "polar", "amplitude", "attention", "fidelity", "swap_test", "feed_forward"])
def test_fused_on_cuda_equals_cpu_and_default_qubit(name):
    circuit = build_circuit(name, 3, 2)
    g = torch.Generator().manual_seed(0)
    x = torch.rand((2, 16) + circuit.input_shape, generator=g, dtype=torch.float64) * 3
    w = torch.rand((2,) + circuit.weight_shape, generator=g, dtype=torch.float64) * 6
    kind = circuit.returns
    outs = {}
    for device, backend in (("cpu", "default.qubit"), ("cpu", "qelm.fused"), ("cuda", "qelm.fused")):
        xs, ws = x.detach().to(device).clone().requires_grad_(True), w.detach().to(device).clone().requires_grad_(True)
        y = get_backend(backend).run(circuit, xs, ws, kind)
        y.abs().square().sum().backward()
        outs[device, backend] = (y.detach().cpu(), xs.grad.cpu(), ws.grad.cpu())
    for key in (("cpu", "qelm.fused"), ("cuda", "qelm.fused")):
        for a, b in zip(outs[key], outs["cpu", "default.qubit"]):
            torch.testing.assert_close(a, b, rtol=0, atol=1e-10)


@needs_cuda
def test_fused_cuda_graph_training_steps_equal_eager(tiny_config):
    _three_steps_graphed_vs_eager(tiny_config, "qelm.fused", 1e-6)


def test_fused_cuda_graph_pool_takes_inputs_and_weights():
    """The pool records fn(inputs, weights): two tensors, either one requiring grad."""
    calls = []

    class Replayed(torch.autograd.Function):  # a graph's output comes from a custom autograd node
        @staticmethod
        def forward(ctx, y):
            return y.clone()

        @staticmethod
        def backward(ctx, g):
            return g

    def recorder(fn, samples):
        calls.append(tuple(s.shape for s in samples))
        return lambda *t: Replayed.apply(fn(*t))

    pool = GraphPool(record=recorder)
    x = torch.rand(3, 2, requires_grad=True)
    w = torch.rand(2)
    out = pool("k", lambda a, b: (a * b).sum(-1), x, w)
    assert calls == [((3, 2), (2,))]
    torch.testing.assert_close(out, (x * w).sum(-1))
