"""A model's CPU forward and backward run on ``cpu_threads`` intra-op threads, and the caller's count comes back
after each (qelm.backends.cpu_threads); speed is not asserted here."""

import pytest
import torch

from qelm import QELM, QELMConfig
from qelm.backends import get_backend
from qelm.errors import BackendError


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
