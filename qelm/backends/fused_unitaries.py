"""The unitaries of a :class:`~qelm.backends.fused_blocks.BlockPlan`'s dense blocks, built in torch from the
weight angles once per call and weight set, so that autograd carries ``dL/dU`` (from the adjoint pass of
:mod:`qelm.backends.fused_adjoint`) to the weights.

Few and small operations, because each one is a node autograd walks back: every one-qubit gate of the whole
circuit gets its ``2 x 2`` matrix from one vectorized formula; each wire's run of one-qubit gates inside a
block (a chain: ``Rot`` is RZ RY RZ) is multiplied out for all chains at once; a block is then its chains,
each applied to the ``K x K`` unitary as one batched product, its fixed multi-qubit gates as a gather (or a
constant matrix) and its multi-qubit weight rotations as ``c U + s G U``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from .fused_blocks import BlockPlan, Dense
from .fused_plan import DenseMatrix, Op, Permute, Rotate, genperm, local_matrix

__all__ = ["Unitaries", "real_form", "embed"]


def real_form(u: torch.Tensor) -> torch.Tensor:
    """``(..., K, K)`` complex -> ``(..., 2K, 2K)`` real ``a`` with ``rows_out = rows_in @ a`` on interleaved
    (re, im) amplitudes: real GEMMs of small ``K`` run several times faster than complex ones."""
    ri = torch.view_as_real(u)
    ur, ui = ri[..., 0], ri[..., 1]
    a = torch.stack([torch.stack([ur, -ui], -1), torch.stack([ui, ur], -1)], -3)  # (..., K, 2, K, 2): [k, p, j, q]
    return a.flatten(-4, -3).flatten(-2).mT


def embed(m: np.ndarray, local: tuple[int, ...], k: int) -> np.ndarray:
    """A gate's matrix on local wires ``local`` of a ``k``-wire block (wire 0 most significant), ``2**k`` square."""
    g = len(local)
    t = np.eye(2**k, dtype=complex).reshape((2,) * k + (2**k,))
    t = np.tensordot(m.reshape((2,) * (2 * g)), t, axes=(list(range(g, 2 * g)), list(local)))
    return np.moveaxis(t, list(range(g)), list(local)).reshape(2**k, 2**k)


def constant_matrix(op: Op) -> np.ndarray:
    """The matrix of a fixed gate or of a rotation by a constant angle, on the gate's own wires."""
    m = local_matrix(op.name, len(op.wires))
    if op.source != "const":
        return m
    m = math.cos(op.value / 2) * np.eye(len(m)) + math.sin(op.value / 2) * m
    return m * np.exp(0.5j * op.value) if op.name == "PhaseShift" else m


@dataclass
class Chain:
    """A run of one-qubit gates on local wire ``wire``: chain ``index`` of the plan's chains."""

    wire: int
    index: int


#: an instruction of a block's program, in gate order
Instruction = Chain | Permute | DenseMatrix | Rotate


@dataclass
class _PermuteTensors:
    """:class:`Permute` on the device: ``u[perm]``, times ``phase`` unless every phase is 1."""

    perm: torch.Tensor
    phase: torch.Tensor | None


@dataclass
class _DenseTensor:
    matrix: torch.Tensor


@dataclass
class _RotateTensors:
    """:class:`Rotate` on the device: weight entry ``index``, generator term ``phase * u[perm]``; ``phase_shift``:
    the gate is a PhaseShift (an extra ``e^{i theta/2}``)."""

    index: int
    perm: torch.Tensor
    phase: torch.Tensor
    phase_shift: bool


_TensorInstruction = Chain | _PermuteTensors | _DenseTensor | _RotateTensors


def _program(block: Dense, chains: list[list[Op]]) -> list[Instruction]:
    """A block as instructions on its ``K x K`` unitary, in gate order: a :class:`Chain` for a run of
    one-qubit gates on a wire (``chains`` collects each run's gates), :class:`Permute` or
    :class:`DenseMatrix` for fixed or constant multi-qubit gates (consecutive ones merged), :class:`Rotate`
    for a multi-qubit weight rotation."""
    k, at = block.k, {w: i for i, w in enumerate(block.wires)}
    prog: list[Instruction] = []
    open_runs: dict[int, list[Op]] = {}

    def flush(wires) -> None:
        for w in wires:
            run = open_runs.pop(w, None)
            if run:
                chains.append(run)
                prog.append(Chain(at[w], len(chains) - 1))

    for op in block.ops:
        if len(op.wires) == 1:
            open_runs.setdefault(op.wires[0], []).append(op)
            continue
        flush(op.wires)
        local = tuple(at[w] for w in op.wires)
        if op.source == "weight":
            generator = genperm(local_matrix(op.name, len(local)), local, k)
            assert generator is not None  # a rotation's generator term is a Pauli string
            prog.append(Rotate(op, generator))
            continue
        m = constant_matrix(op)
        gp = genperm(m, local, k)
        last = prog[-1] if prog else None
        if gp is not None and isinstance(last, Permute):
            prog[-1] = Permute(last.gp.then(gp))
        elif gp is not None:
            prog.append(Permute(gp))
        elif isinstance(last, DenseMatrix):
            prog[-1] = DenseMatrix(embed(m, local, k) @ last.matrix)
        else:
            prog.append(DenseMatrix(embed(m, local, k)))
    flush(list(open_runs))
    return prog


class Unitaries:
    """Builds the real forms (:func:`real_form`) of a plan's dense (non-gather) blocks from the weights'
    half-angle cosines and sines ``(B, n_weights)``: ``(B, 2K, 2K)`` per weight block, ``(2K, 2K)`` per
    constant one."""

    def __init__(self, plan: BlockPlan, device, cplx) -> None:
        self.cplx, self.device = cplx, device
        chains: list[list[Op]] = []
        blocks = [s for s in plan.steps if isinstance(s, Dense) and not s.gather]
        self.programs = [self._tensors(_program(b, chains)) for b in blocks]
        self.sizes = [2**b.k for b in blocks]
        self.weighted = [b.uses_weights for b in blocks]
        # every one-qubit gate of every chain: weight gates first (their 2x2 from the angles), then constants
        weights = [o for ch in chains for o in ch if o.source == "weight"]
        consts = [o for ch in chains for o in ch if o.source != "weight"]
        slot = {id(o): i for i, o in enumerate(weights)}
        slot.update({id(o): len(weights) + i for i, o in enumerate(consts)})
        identity = len(weights) + len(consts)
        depth = max((len(ch) for ch in chains), default=1)
        table = np.full((len(chains), depth), identity, dtype=np.int64)
        for c, ch in enumerate(chains):
            for d, o in enumerate(ch):
                table[c, d] = slot[id(o)]
        as_c = lambda a: torch.as_tensor(np.asarray(a), dtype=cplx, device=device)  # noqa: E731
        self.chain_table = torch.as_tensor(table, device=device)
        self.weight_index = torch.as_tensor([o.index for o in weights], dtype=torch.long, device=device)
        self.generators = as_c([local_matrix(o.name, 1) for o in weights]) if weights else None
        phase = [o.name == "PhaseShift" for o in weights]
        self.phase = torch.as_tensor(phase, device=device) if any(phase) else None
        self.fixed = as_c([constant_matrix(o) for o in consts] + [np.eye(2)])
        self.eye2 = as_c(np.eye(2))

    def _tensors(self, prog: list[Instruction]) -> list[_TensorInstruction]:
        out: list[_TensorInstruction] = []
        for ins in prog:
            if isinstance(ins, Permute):
                gp = ins.gp
                phase = None if gp.unit_phases else torch.as_tensor(gp.phase, dtype=self.cplx, device=self.device)[:, None]
                out.append(_PermuteTensors(torch.as_tensor(gp.perm, device=self.device), phase))
            elif isinstance(ins, DenseMatrix):
                out.append(_DenseTensor(torch.as_tensor(ins.matrix, dtype=self.cplx, device=self.device)))
            elif isinstance(ins, Rotate):
                gp = ins.gp
                out.append(_RotateTensors(ins.op.index, torch.as_tensor(gp.perm, device=self.device),
                                          torch.as_tensor(gp.phase, dtype=self.cplx, device=self.device)[:, None],
                                          ins.op.name == "PhaseShift"))
            else:
                out.append(ins)
        return out

    def _chains(self, cw: torch.Tensor | None, sw: torch.Tensor | None, B: int) -> torch.Tensor:
        """Every chain's product ``(B, C, 2, 2)``, later gates on the left."""
        table = self.fixed.expand((B,) + self.fixed.shape)
        if self.generators is not None:
            assert cw is not None and sw is not None  # weight gates: the weights were given
            c = cw[:, self.weight_index, None, None]  # (B, G, 1, 1)
            s = sw[:, self.weight_index, None, None]
            m = c * self.eye2 + s * self.generators  # (B, G, 2, 2): exp(-i theta/2 P)
            if self.phase is not None:  # PhaseShift = e^{i theta/2} RZ
                m = m * torch.where(self.phase[:, None, None], torch.complex(c, s), torch.ones_like(c, dtype=m.dtype))
            table = torch.cat([m, table], dim=1)
        t = table[:, self.chain_table]  # (B, C, depth, 2, 2)
        out = t[:, :, 0]
        for d in range(1, t.shape[2]):
            out = t[:, :, d] @ out
        return out

    def build(self, cw: torch.Tensor | None, sw: torch.Tensor | None, B: int) -> list[torch.Tensor]:
        chains = self._chains(cw, sw, B) if self.chain_table.numel() else None
        mats = []
        for i, (prog, K) in enumerate(zip(self.programs, self.sizes)):
            u = torch.eye(K, dtype=self.cplx, device=self.device)
            for ins in prog:
                if isinstance(ins, Chain):
                    assert chains is not None
                    m = chains[:, ins.index]  # (B, 2, 2)
                    if not self.weighted[i]:
                        m = m[0]
                    u = m.unsqueeze(-3) @ u.reshape(u.shape[:-2] + (2**ins.wire, 2, -1))
                    u = u.reshape(u.shape[:-3] + (K, K))
                elif isinstance(ins, _PermuteTensors):
                    u = u.index_select(-2, ins.perm)
                    u = u if ins.phase is None else ins.phase * u
                elif isinstance(ins, _DenseTensor):
                    u = ins.matrix @ u
                else:
                    assert cw is not None and sw is not None  # a weight rotation: the weights were given
                    c, s = cw[:, ins.index, None, None], sw[:, ins.index, None, None]
                    u = c * u + s * (ins.phase * u.index_select(-2, ins.perm))
                    if ins.phase_shift:
                        u = torch.complex(c, s) * u
            mats.append(real_form(u))
        return mats
