"""Which quantum circuits earn their parameters? A sweep over QELM configurations, each set against the
classical models of equal parameters, on Optuna (``pip install "qelm-lab[sweep]"``).

* :mod:`.space` — the search space: a TOML file read and checked before any trial (:func:`load_space`);
* :mod:`.trial` — one trial: a configuration at every seed, with its twin and matched classical model;
* :mod:`.study` — the Optuna study: storage, workers, resume (:func:`run_sweep`, :func:`open_study`);
* :mod:`.results` — the table of all trials, the Pareto frontier and the verdict (:func:`sweep_table`);
* :mod:`.report`, :mod:`.plot` — the ``--report`` text and the Pareto plot.

Optuna is imported only when a sweep runs or is read, so ``import qelm`` never needs it.
"""

from .plot import plot_pareto
from .report import report_text
from .results import GOAL_RATIO, pareto_frontier, sweep_table, verdict
from .space import SearchSpace, load_space, parse_space
from .storage import INSTALL_HINT, STORAGE_FILE, open_study
from .study import run_sweep
from .trial import measure_model, run_configuration

__all__ = ["run_sweep", "open_study", "load_space", "parse_space", "SearchSpace", "sweep_table", "pareto_frontier",
           "verdict", "run_configuration", "measure_model", "report_text", "plot_pareto", "GOAL_RATIO",
           "INSTALL_HINT", "STORAGE_FILE"]

