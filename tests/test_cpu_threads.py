"""A model's CPU forward and backward run on ``cpu_threads`` intra-op threads, and the caller's count comes back
after each (qelm.backends.cpu_threads); speed is not asserted here."""

from typing import ClassVar

import pytest
import torch

from qelm import QELM, ClassicalLM, QELMConfig
from qelm.backends import get_backend
from qelm.errors import BackendError, ConfigError


@pytest.fixture
def two_threads():
    held = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(held)


def _threads_seen(model: QELM, idx: torch.Tensor, targets: torch.Tensor) -> dict:
    """The thread count when the embedding runs forward and when its output's gradient arrives."""
    seen: dict = {}

    def forward_hook(module, args, out):
        seen["forward"] = torch.get_num_threads()
        out.register_hook(lambda g: seen.__setitem__("backward", torch.get_num_threads()))

    handle = model.embedding.register_forward_hook(forward_hook)
    try:
        _, loss = model(idx, targets)
        seen["after_forward"] = torch.get_num_threads()
        loss.backward()
        seen["after_backward"] = torch.get_num_threads()
    finally:
        handle.remove()
    return seen


def test_forward_and_backward_run_on_one_thread_and_restore(two_threads):
    cfg = QELMConfig(vocab_size=8, d_model=8, n_heads=2, d_hidden=8, context_len=6, n_qubits=2, circuit_layers=1)
    torch.manual_seed(0)
    model = QELM(cfg)
    idx, targets = torch.randint(0, 8, (2, 6)), torch.randint(0, 8, (2, 6))
    seen = _threads_seen(model, idx, targets)
    assert seen == {"forward": 1, "backward": 1, "after_forward": 2, "after_backward": 2}
    grads = [p.grad.clone() for p in model.parameters()]

    model.cpu_threads = None  # torch's own setting throughout: the same numbers
    model.zero_grad(set_to_none=True)
    model.embedding.backend.cpu_threads = None
    seen = _threads_seen(model, idx, targets)
    assert seen == {"forward": 2, "backward": 2, "after_forward": 2, "after_backward": 2}
    for g, p in zip(grads, model.parameters()):
        torch.testing.assert_close(p.grad, g)  # float32 sums split over two threads: rounding apart


def test_a_no_grad_forward_restores_the_count(two_threads):
    cfg = QELMConfig(vocab_size=8, d_model=8, n_heads=2, d_hidden=8, context_len=6, n_qubits=2, circuit_layers=1)
    model = QELM(cfg)
    with torch.no_grad():
        model(torch.randint(0, 8, (1, 6)))
    assert torch.get_num_threads() == 2


@pytest.mark.parametrize("bad", [0, -1, 1.5, True, "2"])
def test_cpu_threads_option_is_validated(bad):
    with pytest.raises(BackendError, match=r"cpu_threads=.* is invalid: use a positive integer, or None"):
        get_backend("qelm.fused", cpu_threads=bad)
    assert get_backend("qelm.fused", cpu_threads=None).cpu_threads is None


@pytest.mark.parametrize("bad", [0, -1, 1.5, True, "2"])
def test_a_model_refuses_a_thread_count_that_is_not_one(bad):
    """``model.cpu_threads = 0`` fails where it is set, in one line, not inside torch.set_num_threads mid-call."""
    model = QELM(QELMConfig(vocab_size=8, d_model=8, n_heads=2, d_hidden=8, context_len=6, n_qubits=2, circuit_layers=1))
    with pytest.raises(ConfigError, match=r"^cpu_threads=.* is invalid: use a positive integer, or None[^\n]*$"):
        model.cpu_threads = bad
    assert model.cpu_threads == 1
    model.cpu_threads = 3
    assert model.cpu_threads == 3


class _Recording(torch.optim.SGD):
    seen: ClassVar[list] = []

    def step(self, closure=None):
        type(self).seen.append(torch.get_num_threads())
        return super().step(closure)


@pytest.mark.parametrize("cls", [QELM, ClassicalLM])
def test_an_optimizer_step_over_a_models_parameters_runs_on_its_threads(two_threads, cls):
    """The step of any torch optimizer over a model's parameters runs on ``cpu_threads`` and gives the
    caller's count back; an optimizer over other tensors is left alone."""
    model = cls(QELMConfig(vocab_size=8, d_model=8, n_heads=2, d_hidden=8, context_len=6, n_qubits=2, circuit_layers=1))
    _, loss = model(torch.randint(0, 8, (2, 6)), torch.randint(0, 8, (2, 6)))
    loss.backward()
    _Recording.seen = []
    _Recording(model.parameters(), lr=0.1).step()
    assert _Recording.seen == [1] and torch.get_num_threads() == 2
    model.cpu_threads = None
    _Recording(model.parameters(), lr=0.1).step()
    other = torch.zeros(3, requires_grad=True)
    other.grad = torch.ones(3)
    _Recording([other], lr=0.1).step()
    assert _Recording.seen == [1, 2, 2] and torch.get_num_threads() == 2


class _Failing(torch.optim.SGD):
    def step(self, closure=None):
        raise RuntimeError("a step that fails")


def test_a_step_that_raises_gives_the_threads_back_at_the_next_step(two_threads):
    """A step that raises skips torch's post hook: the next step over any parameters restores the caller's
    count before it runs (an optimizer over other tensors then sees the caller's threads)."""
    model = QELM(QELMConfig(vocab_size=8, d_model=8, n_heads=2, d_hidden=8, context_len=6, n_qubits=2, circuit_layers=1))
    for p in model.parameters():
        p.grad = torch.zeros_like(p)
    with pytest.raises(RuntimeError, match="a step that fails"):
        _Failing(model.parameters(), lr=0.1).step()
    other = torch.zeros(3, requires_grad=True)
    other.grad = torch.ones(3)
    _Recording.seen = []
    _Recording([other], lr=0.1).step()
    assert _Recording.seen == [2] and torch.get_num_threads() == 2
