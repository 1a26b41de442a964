"""How much smaller is a QELM, honestly? Parameters, bytes on disk, FLOPs and circuit cost, side by side.

:func:`compare` puts a QELM, its full-size classical twin (``ClassicalLM(config)``) and the
parameter-matched classical baseline (``ClassicalLM.matched_to(qelm)``) next to each other, or any set of
trained checkpoints. Every figure is measured on the models themselves, at the same configuration:

* parameters are counted from ``named_parameters()``, grouped by component (embedding, attention,
  feed-forward, norms, LM head); the gate angles among them (variational circuit weights, and the learned
  per-token inputs of a quantum embedding) are counted separately;
* sizes are the byte counts of files actually written (safetensors in float32/float16/bfloat16,
  ``torch.save`` of the state_dict, a whole checkpoint folder through ``qelm.checkpoint``);
* classical FLOPs come from ``torch.utils.flop_counter.FlopCounterMode`` on a real forward pass, with the
  torch work done inside the circuit simulator subtracted and reported on its own line;
* circuit executions are counted by wrapping the backend's ``expval``/``state`` during that forward pass
  (a call on angles ``(N, P)`` is N executions); gates and depth come from ``qml.specs``; the simulation
  cost of one execution is ``2**n_wires`` amplitudes times its gates; shots per expectation for a target
  standard error ``eps`` follow from the variance of a Pauli-Z measurement, ``(1 - <Z>**2) / eps**2``;
* with checkpoints and a text, validation perplexity through ``qelm.evaluate``.

The package: :mod:`.run` (:func:`compare`), :mod:`.measure` (the measurements), :mod:`.results` (the
result classes), :mod:`.report` (verdicts and Markdown), :mod:`.plot` (the figure). The library never
prints: :func:`markdown`, :meth:`Comparison.to_dict` and :func:`plot_comparison` hand the
results to the CLI (``qelm compare``) or to a script.
"""

from .measure import count_flops, measure_models, serialized_sizes
from .plot import plot_comparison
from .results import (BASIS_GATES, COMPONENTS, METHOD, PUBLISHED_CLAIM, PUBLISHED_SETTING, SIZE_FORMATS, CircuitCost,
                      Comparison, ModelReport)
from .report import markdown
from .run import compare, published_config

__all__ = [
    "compare",
    "markdown",
    "measure_models",
    "Comparison",
    "ModelReport",
    "CircuitCost",
    "count_flops",
    "serialized_sizes",
    "plot_comparison",
    "published_config",
    "PUBLISHED_SETTING",
    "PUBLISHED_CLAIM",
    "COMPONENTS",
    "SIZE_FORMATS",
    "BASIS_GATES",
    "METHOD",
]
