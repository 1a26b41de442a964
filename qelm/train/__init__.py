"""Training: train a QELM and two classical baselines on the same batches and say how they compare.

* :mod:`.run` — :func:`train`, the run folder it writes, exact resume, data parallel;
* :mod:`.steps` — one model's training: fresh or restored, step by step, logged, evaluated, saved;
* :mod:`.settings` — :class:`TrainSettings`, their defaults and the ``[train]`` table of a config file;
* :mod:`.results` — :class:`TrainResult` and :class:`ModelRun`, what :func:`train` returns;
* :mod:`.report` — ``summary.json`` and the verdict, every number from the measured figures.

``qelm.train`` is this package; calling it (``qelm.train(config, data, out=...)``, or
``from qelm import train``) runs :func:`train`. Evaluation and generation live in :mod:`qelm.evaluate`,
the process-group set-up in :mod:`qelm.distributed`.
"""

from .._compat import make_callable, moved_names
from ..metrics import METRICS
from .report import LABELS
from .results import Callback, ModelRun, TrainResult
from .run import LOSS_CURVE, MODEL_NAMES, SUMMARY, matched_config, train
from .settings import MATCH_TOLERANCE, TRAIN_DEFAULTS, TrainSettings, load_run_config

__all__ = ["train", "TrainSettings", "TrainResult", "ModelRun", "Callback", "matched_config", "load_run_config",
           "TRAIN_DEFAULTS", "MATCH_TOLERANCE", "LABELS", "MODEL_NAMES", "METRICS", "SUMMARY", "LOSS_CURVE"]


def plot_loss_curves(histories, path, unigram_loss=None, title=None):
    """Deprecated: :func:`qelm.plot.plot_curves` draws every loss curve (``{label: records}``)."""
    import warnings

    from ..plot import plot_curves

    warnings.warn("qelm.train.plot_loss_curves moved to qelm.plot.plot_curves; the old name goes in the next release",
                  DeprecationWarning, stacklevel=2)
    return plot_curves({LABELS.get(n, n): h for n, h in histories.items()}, path, unigram_loss=unigram_loss, title=title)


# names that moved out of the training module
__getattr__ = moved_names(__name__, {
    "evaluate": "qelm.evaluate:evaluate",
    "unigram_baseline": "qelm.evaluate:unigram_baseline",
    "generate_text": "qelm.evaluate:generate_text",
    "init_distributed": "qelm.distributed:init_distributed",
    "read_metrics": "qelm.metrics:read_metrics",
})

make_callable(__name__)
