"""What generation keeps between steps: the growing :class:`KVCache`, and the :class:`StaticCache` of fixed
shapes (buffers of ``context_len`` tokens allocated once, the number of tokens held a tensor on the device,
as gpt-fast's and Hugging Face's ``StaticCache`` keep it).

The :class:`KVCache` grows by concatenation, so every step has new shapes and its length
is a Python int: each step costs fresh allocations and launches, and nothing can be recorded. Here a new
token's keys and values are written in place at ``position`` and attention reads all ``context_len`` slots
under a mask (slot ``j`` is visible to the query at ``position + i`` when ``j <= position + i``), so one decode
step has the same shapes and the same device addresses every time and a CUDA graph can replay it
(:mod:`qelm.decode`). Slots past ``position`` hold zeros or an earlier generation's values; the mask gives
them weight zero.

A :class:`StaticCache` is filled from a dynamic cache after the prompt (:meth:`StaticCache.load`), so the
prompt's pass and the first token are exactly the growing cache's.
"""

from __future__ import annotations

import torch

__all__ = ["KVCache", "StaticCache", "StaticBlock"]


class KVCache:
    """What generation keeps between steps: per block, the attention's keys and values (for quantum
    attention: q/k/v features, fidelity states or swap-test inputs) of every token seen, and how many."""

    def __init__(self, n_blocks: int) -> None:
        self.blocks: list[dict] = [{} for _ in range(n_blocks)]
        self.length = 0


def _token_axis(key: str) -> int:
    """Where the tokens are in a cached tensor: -2 for keys, values and states ``(B, H, T, .)``; 1 for the
    swap test's inputs ``x`` ``(B, T, H, n)``."""
    return 1 if key == "x" else -2


class StaticBlock:
    """One block's share of a :class:`StaticCache`: a buffer per cached tensor (``"k"``, ``"v"``, ``"psi"``),
    ``context_len`` slots along its token axis. Layers call :meth:`append` and :meth:`visible`."""

    def __init__(self, cache: StaticCache) -> None:
        self.cache = cache
        self.buffers: dict[str, torch.Tensor] = {}

    @property
    def start(self) -> torch.Tensor:
        """The position of the first new token: the tokens held before this call (a 0-dim long tensor)."""
        return self.cache.position

    def append(self, key: str, new: torch.Tensor) -> torch.Tensor:
        """Write ``new`` (its ``T`` tokens along the token axis) into slots ``start .. start + T - 1`` of the
        buffer ``key`` and return the whole buffer (``context_len`` slots); allocated, zeroed, on first use."""
        dim = _token_axis(key)
        if key not in self.buffers:
            shape = list(new.shape)
            shape[dim] = self.cache.context_len
            self.buffers[key] = new.new_zeros(shape)
        buffer = self.buffers[key]
        slots = self.start + torch.arange(new.shape[dim], device=new.device)  # (T,)
        buffer.index_copy_(dim % buffer.dim(), slots, new)
        return buffer

    def visible(self, T: int, device: torch.device) -> torch.Tensor:
        """``(T, context_len)`` bool: which slots each of the ``T`` new tokens attends to (itself and before)."""
        queries = self.start + torch.arange(T, device=device)  # (T,)
        return torch.arange(self.cache.context_len, device=device) <= queries[:, None]

    def load(self, held: dict) -> None:
        """Copy a dynamic cache's block (``{"k": ..., "v": ..., "length": n}``) into the first ``n`` slots."""
        for key, tensor in held.items():
            if isinstance(tensor, torch.Tensor):
                dim = _token_axis(key)
                if key not in self.buffers:
                    shape = list(tensor.shape)
                    shape[dim] = self.cache.context_len
                    self.buffers[key] = tensor.new_zeros(shape)
                self.buffers[key].narrow(dim, 0, tensor.shape[dim]).copy_(tensor)


class StaticCache:
    """What a recorded decode step keeps between tokens: per block a :class:`StaticBlock`, and ``position``,
    the tokens held (a 0-dim long tensor on ``device``, advanced in place by :meth:`advance`).

    Args:
        n_blocks: the model's blocks.
        context_len: slots per buffer (the model's ``context_len``).
        device: where the position lives (the buffers follow the tensors written into them).

    Examples:
        >>> import torch
        >>> cache = StaticCache(1, context_len=4, device=torch.device("cpu"))
        >>> block = cache.blocks[0]
        >>> block.append("k", torch.ones(1, 1, 2, 3)).shape  # two tokens' keys, four slots
        torch.Size([1, 1, 4, 3])
        >>> cache.advance(2)
        >>> block.visible(1, torch.device("cpu")).tolist()  # the third token sees slots 0-2
        [[True, True, True, False]]
    """

    def __init__(self, n_blocks: int, context_len: int, device: torch.device) -> None:
        self.context_len = context_len
        self.position = torch.zeros((), dtype=torch.long, device=device)
        self.blocks = [StaticBlock(self) for _ in range(n_blocks)]
        #: the embedding circuit's features of every token, where they do not depend on the position
        #: (``QuantumEmbedding.table``): computed once per generation, read by each step; None: none
        self.embedding: torch.Tensor | None = None

    def advance(self, T: int) -> None:
        """``T`` tokens were written: the next call writes after them (in place: a recorded step keeps it)."""
        self.position.add_(T)

    def load(self, blocks: list[dict], length: int, embedding: torch.Tensor | None = None) -> None:
        """Take over a dynamic cache (its ``blocks`` and ``length``): the prompt's keys and values, and the
        embedding's table (copied into the buffer a recorded step reads)."""
        for mine, held in zip(self.blocks, blocks, strict=True):
            mine.load(held)
        self.position.fill_(length)
        if embedding is not None:
            if self.embedding is None:
                self.embedding = embedding.clone()
            else:
                self.embedding.copy_(embedding)
