"""Where a sweep is stored: Optuna imported on demand (the sweep extra), the study database (a SQLite file
in the sweep folder, or any URL Optuna's ``RDBStorage`` accepts) with its heartbeat and write lock, the
sampler each worker uses, and opening a stored study with its search space."""

from __future__ import annotations

import logging
import os
import time
import warnings
from pathlib import Path

from ..errors import ConfigError
from ..redact import redact
from .space import SearchSpace, parse_space

__all__ = ["import_optuna", "storage_url", "open_study", "STORAGE_FILE", "INSTALL_HINT", "HEARTBEAT_INTERVAL",
           "GRACE_PERIOD"]

STORAGE_FILE = "sweep.db"
INSTALL_HINT = 'qelm sweep needs Optuna: pip install "qelm-lab[sweep]" (or pip install "optuna>=4")'
HEARTBEAT_INTERVAL = 30  # seconds between a running trial's heartbeats
GRACE_PERIOD = 120  # a running trial silent this long is lost (its process died); Optuna fails and retries it


def import_optuna():
    """The ``optuna`` module, or ``ModuleNotFoundError`` saying how to install it."""
    try:  # lazy: optuna is optional (the sweep extra)
        import optuna
    except ModuleNotFoundError as e:
        if e.name != "optuna":
            raise
        raise ModuleNotFoundError(INSTALL_HINT, name="optuna") from None
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # the CLI prints one line per trial instead
    _quiet_trial_failures()
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    return optuna


class _NoTrialFailures(logging.Filter):
    """Drops Optuna's warning, with its traceback, for a failed or interrupted trial: the sweep records the
    reason in the trial (and the CLI prints it in one line); Ctrl-C is "interrupted", not a traceback."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.getMessage().startswith("Trial ") and " failed with " in record.getMessage())


def _quiet_trial_failures() -> None:
    log = logging.getLogger("optuna.study._optimize")
    if not any(isinstance(f, _NoTrialFailures) for f in log.filters):
        log.addFilter(_NoTrialFailures())


def storage_url(out: str | os.PathLike, storage: str | None = None) -> str:
    """The study database: ``storage`` if given, else the SQLite file in the sweep folder ``out``."""
    return storage or f"sqlite:///{(Path(out) / STORAGE_FILE).resolve()}"


def _storage(url: str):
    optuna = import_optuna()
    from optuna.storages import RDBStorage  # lazy: optional (the sweep extra)

    retry = getattr(optuna.storages, "RetryHeartbeatStaleTrialCallback", None) or optuna.storages.RetryFailedTrialCallback
    callback = "heartbeat_stale_trial_callback" if "RetryHeartbeat" in retry.__name__ else "failed_trial_callback"
    engine = {"connect_args": {"timeout": 60}} if url.startswith("sqlite") else {}
    for attempt in range(5):
        try:
            storage = RDBStorage(url, engine_kwargs=engine, heartbeat_interval=HEARTBEAT_INTERVAL,
                                 grace_period=GRACE_PERIOD, **{callback: retry(max_retry=3)})
            return _write_locked(storage) if url.startswith("sqlite") else storage
        except Exception as e:  # sqlalchemy: a bad URL, a missing driver, an unreachable server
            # two processes opening a new database at once (workers, a --report beside a running sweep) race
            # to write its schema version: the loser sees the row the winner wrote; open it again
            if "IntegrityError" in type(e).__name__ and attempt < 4:
                time.sleep(0.2 * (attempt + 1))
                continue
            why = (str(e).strip().splitlines() or [""])[0]  # sqlalchemy appends the SQL and a link: one line
            raise ConfigError(redact(f"cannot open the sweep storage {url!r}: {type(e).__name__}: {why}")) from None


def _write_locked(storage):
    """SQLite transactions that take the write lock when they begin (``BEGIN IMMEDIATE``). Optuna reads a
    queued trial's state and then claims it; in SQLite's default mode the read takes no lock, so two
    processes could both claim one queued trial (a retry) and run it at once. Locked, they take turns."""
    from sqlalchemy import event  # lazy: optuna's database layer, optional (the sweep extra)

    engine = storage.engine

    @event.listens_for(engine, "connect")
    def _no_implicit_transactions(connection, record) -> None:
        connection.isolation_level = None  # the driver's own BEGIN would be deferred: the one below replaces it

    @event.listens_for(engine, "begin")
    def _begin_immediate(connection) -> None:
        connection.exec_driver_sql("BEGIN IMMEDIATE")

    engine.dispose()  # connections made before the listeners: replaced by new ones that have them
    return storage


def _sampler(space: SearchSpace, worker: int):
    optuna = import_optuna()
    kind = space.sweep["sampler"]
    if kind == "grid":  # the seed orders the grid: every worker must share it (the storage keeps them apart)
        return optuna.samplers.GridSampler(space.grid(), seed=space.sweep["sampler_seed"])
    seed = space.sweep["sampler_seed"] + worker  # workers of one sweep must not propose the same trials
    if kind == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    startup = max(3, min(10, space.sweep["trials"] // 3))
    # constant_liar: a trial in flight counts as a poor result, so other workers look elsewhere meanwhile
    return optuna.samplers.TPESampler(seed=seed, n_startup_trials=startup, constant_liar=True)


def open_study(out: str | os.PathLike, storage: str | None = None, name: str | None = None, *, worker: int = 0):
    """``(study, space)`` of the sweep stored at ``storage`` (default: the sweep folder's database); ``name``
    picks the study when the storage holds several. Raises ``FileNotFoundError`` when there is none."""
    study, space, _ = _open(out, storage, name, worker)
    return study, space


def _open(out, storage, name, worker):
    optuna = import_optuna()
    url = storage_url(out, storage)
    if storage is None and not (Path(out) / STORAGE_FILE).is_file():
        raise FileNotFoundError(f"no sweep in {str(out)!r}: it holds no {STORAGE_FILE} (run qelm sweep --space FILE "
                                f"--out {out} first, or pass --storage URL)")
    st = _storage(url)
    names = optuna.get_all_study_names(st)
    if name is None:
        if len(names) != 1:
            raise ConfigError(f"the sweep storage {redact(url)!r} holds {len(names)} studies"
                             f"{' (' + ', '.join(names) + ')' if names else ''}: name one with --study")
        name = names[0]
    if name not in names:
        raise FileNotFoundError(f"no sweep {name!r} in the storage {redact(url)!r}"
                                f"{': it holds ' + ', '.join(names) if names else ''}")
    study = optuna.load_study(study_name=name, storage=st)
    space = parse_space(study.user_attrs["space"], source=study.user_attrs.get("space_file", name))
    study = optuna.load_study(study_name=name, storage=st, sampler=_sampler(space, worker))
    return study, space, st
