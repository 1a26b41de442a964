"""Training: train a QELM and two classical baselines on the same batches and say how they compare.

* :mod:`.run` — :func:`train`, the run folder it writes, exact resume, data parallel;
* :mod:`.steps` — one model's training: fresh or restored, step by step, logged, evaluated, saved;
* :mod:`.settings` — :class:`TrainOverrides` (what a caller gives) resolved into :class:`TrainSettings`, their
  defaults and the ``[train]`` table of a config file;
* :mod:`.results` — :class:`TrainResult` and :class:`ModelRun`, what :func:`train` returns;
* :mod:`.report` — ``summary.json`` and the verdict, every number from the measured figures.

``from qelm.train import train`` gives the function. Evaluation and generation live in
:mod:`qelm.evaluate`, the process-group set-up in :mod:`qelm.distributed`.
"""

from ..metrics import METRICS
from .report import LABELS
from .results import Callback, ModelRun, TrainResult
from .run import LOSS_CURVE, MODEL_NAMES, SUMMARY, matched_config, train
from .settings import MATCH_TOLERANCE, TRAIN_DEFAULTS, TrainOverrides, TrainSettings, load_run_config

__all__ = ["train", "TrainSettings", "TrainOverrides", "TrainResult", "ModelRun", "Callback", "matched_config", "load_run_config",
           "TRAIN_DEFAULTS", "MATCH_TOLERANCE", "LABELS", "MODEL_NAMES", "METRICS", "SUMMARY", "LOSS_CURVE"]

