import pytest
import torch

from qelm import QELMConfig


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
    yield


@pytest.fixture
def tiny_config() -> QELMConfig:
    """A QELM small enough that every test on it runs in well under a second."""
    return QELMConfig(vocab_size=11, d_model=8, n_heads=2, d_hidden=16, n_layers=1, context_len=6, n_qubits=2,
                      circuit_layers=1)
