"""The feature-form matrices ``W`` (:mod:`.fused_features`) of every call a forward pass will make with
circuits of one structure, built in one batched call: what :meth:`FusedBackend.prepare
<qelm.backends.fused.FusedBackend.prepare>` holds for the length of a model's forward pass.

Why: a model's attention circuit (2 heads x q, k, v: 6 weight sets) and its feed-forward circuit (1 set) have
the same gates, and each of their calls builds its own ``W`` from its weights: a few dozen small tensor
operations forward and as many backward per call, whatever the number of sets. One
:func:`~.fused_features.feature_matrix` over the weight sets of all of them (7 for one block, 14 for two) costs
about what one call did (one thread, default model: 2.70 ms a step built per call, 1.73 ms built jointly).

The calls are grouped by their circuit's structure (:func:`structure`: the gate list with its angles placed,
the wires and which data columns repeat), never by name: circuits of one structure have the same ``W`` for
the same weights, whatever they read out. A prepared ``W`` serves only a call with the very weights tensor it
was built from, unchanged since (its version counter): anything else builds its own, as without preparation.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from collections.abc import Callable

import torch

from .fused_executor import Executor
from .fused_features import FeaturePlan, feature_matrix
from .fused_plan import Plan, _classify

__all__ = ["Call", "Prepared", "structure", "build"]


def structure(circuit, layout, same: list[int]) -> tuple:
    """What ``W`` depends on besides the weights: the wires, the gates with each angle placed (a weight's
    entry, a data column or a constant; :func:`~.fused_plan._classify`, what the plan is built from), the
    layout's sizes, and which data columns repeat (``same``: the feature plan's distinct angles)."""
    return (circuit.n_wires, tuple(_classify(circuit, layout)), tuple(layout), tuple(same))


@dataclass
class Call:
    """One call a forward pass will make: its circuit's structure, plans, and weights ``(*sets, *shape)``."""

    structure: tuple
    plan: Plan
    fp: FeaturePlan
    weights: torch.Tensor
    sets: tuple[int, ...]


@dataclass
class Prepared:
    """``W`` ``(*sets, Dc, F)`` of one call, built from ``weights`` at ``version``."""

    structure: tuple
    weights: torch.Tensor
    version: int
    W: torch.Tensor
    cplx: bool


class Held:
    """The prepared matrices of one forward pass, by the weights tensor they were built from."""

    def __init__(self, prepared: list[Prepared]) -> None:
        self._by_id = {id(p.weights): p for p in prepared}

    def __len__(self) -> int:
        return len(self._by_id)

    def get(self, structure: tuple, weights: torch.Tensor) -> tuple[torch.Tensor, bool] | None:
        """``(W, cplx)`` built from ``weights`` (this tensor, unchanged) for ``structure``, or None."""
        p = self._by_id.get(id(weights))
        if p is None or p.weights is not weights or p.version != weights._version or p.structure != structure:
            return None
        return p.W, p.cplx


def build(calls: list[Call], executor: Callable[[Plan, torch.device], Executor], real: torch.dtype,
          warmed: dict) -> Held:
    """``W`` of every call that shares its structure (and device) with another, one
    :func:`~.fused_features.feature_matrix` per structure over all their weight sets (cast to ``real``, as a
    call casts them); a structure with one call is left to build its own. A weights tensor that two calls
    name is built once.

    ``warmed``: the feature plans whose own build has run (by id). The joint build runs the first call's
    plan only; the others' tables (constants, index tensors) are built once here, without a gradient, so
    that a later call that builds its own ``W`` under ``torch.compile`` finds them (reading them from the
    host there breaks the graph)."""
    groups: dict[tuple, list[Call]] = {}
    seen: set[int] = set()
    for call in calls:
        if id(call.weights) in seen:
            continue
        seen.add(id(call.weights))
        groups.setdefault((call.structure, call.weights.device), []).append(call)
    prepared: list[Prepared] = []
    for (_, device), group in groups.items():
        if len(group) < 2:
            continue
        first = group[0]
        for c in group[1:]:
            if warmed.get((id(c.fp), device)) is not c.fp:
                with torch.no_grad():
                    _own(c, executor(c.plan, device), real)
                warmed[(id(c.fp), device)] = c.fp
        w = torch.cat([c.weights.to(real).reshape(math.prod(c.sets), -1) for c in group])  # (sum of sets, n_weights)
        ex = executor(first.plan, device)
        ex.begin(w)
        try:
            W, cplx = feature_matrix(first.fp, ex, (w.shape[0],))  # (sum of sets, Dc, F)
        finally:
            ex.end()
        start = 0
        for c in group:
            n = math.prod(c.sets)
            prepared.append(Prepared(c.structure, c.weights, c.weights._version,
                                     W[start:start + n].reshape(c.sets + W.shape[-2:]), cplx))
            start += n
    return Held(prepared)


def _own(call: Call, ex: Executor, real: torch.dtype) -> None:
    """The build ``call`` would run itself (its result dropped)."""
    ex.begin(call.weights.detach().to(real).reshape(call.sets + (-1,)))
    try:
        feature_matrix(call.fp, ex, call.sets)
    finally:
        ex.end()
