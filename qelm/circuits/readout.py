"""How a circuit is read out: the Pauli-Z products a backend measures, and the sign tables that turn
basis-state probabilities into their expectations."""

from __future__ import annotations

from functools import lru_cache

import pennylane as qml
import torch

__all__ = ["READOUTS", "z_product", "z_signs"]

#: how a feature circuit is read out: <Z_i>; <Z_i> and <Z_i Z_j>; basis probabilities
READOUTS = ("z", "zz", "probs")



def z_product(wires: tuple[int, ...]):
    """The PennyLane observable ``Z_a Z_b ...`` on ``wires``."""
    op = qml.PauliZ(wires[0])
    for w in wires[1:]:
        op = op @ qml.PauliZ(w)
    return op


def z_signs(n_wires: int, wires, like: torch.Tensor) -> torch.Tensor:
    """``(2**n_wires, len(wires))`` matrix of Pauli-Z eigenvalues (+1 for bit 0, -1 for bit 1) of each basis
    state on each wire (or the product over a tuple of wires: a Z string); wire 0 is the most significant bit. ``probs @ z_signs`` gives <Z_w>. Read-only: one
    tensor per (wires, device, dtype) is built and reused, so a call never copies from the host (which
    also lets the call be captured in a CUDA graph)."""
    return _z_signs(n_wires, tuple(int(w) if not isinstance(w, tuple) else tuple(int(v) for v in w) for w in wires),
                    like.device, like.dtype)


@lru_cache(maxsize=256)
def _z_signs(n_wires: int, wires: tuple, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    index = torch.arange(2**n_wires, device=device).unsqueeze(-1)
    columns = []
    for w in wires:  # a wire, or a tuple of wires: the product of their signs
        mask = sum(1 << (n_wires - 1 - v) for v in ((w,) if isinstance(w, int) else w))
        columns.append(mask)
    masks = torch.tensor(columns, device=device)
    parity = torch.zeros(index.shape[0], len(columns), dtype=torch.long, device=device)
    bits = index & masks
    for _ in range(n_wires):  # popcount of each (basis state, mask)
        parity ^= bits & 1
        bits = bits >> 1
    return (1 - 2 * parity).to(dtype)
