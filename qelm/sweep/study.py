"""The sweep on Optuna: one study per sweep, stored in a database, worked on by any number of processes.

* Storage: a SQLite file in the sweep folder (``OUT/sweep.db``) unless a database URL is given; any URL
  Optuna's ``RDBStorage`` accepts (PostgreSQL, MySQL) lets processes on several machines join one study.
* The study records what it sweeps (the space file's text, the corpus and its sha256) as study user
  attributes, so a resumed or joining process runs the same sweep, on the same text.
* A trial is one configuration at every seed (:mod:`.trial`); its figures are trial user attributes, its
  value the mean perplexity ratio to the matched classical model, which the sampler minimises.
* A trial that fails (a non-finite loss, a config no classical model matches) is recorded as failed with
  its reason (user attribute ``error``) and the sweep goes on. A trial whose process died (killed,
  interrupted) is "lost": ``--resume`` fails it if it still shows as running and its worker on this host
  is gone, and queues a retry with its parameters (Optuna's ``RetryHeartbeatStaleTrialCallback``); on
  other hosts Optuna's heartbeat does the same once the trial has been silent for ``GRACE_PERIOD``.
* The sweep has run when ``trials`` trials are finished (complete, or failed with a reason; with the grid
  sampler, when that many distinct grid points are, at most the whole grid); lost trials do not count,
  so a killed sweep loses at most the trials that were in flight.
"""

from __future__ import annotations

import multiprocessing
import os
import socket
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from ..circuits import import_circuits, imports_for
from ..data import TextDataset, bundled_corpus
from ..errors import ConfigError, DataError
from ..evaluate import bits_per_unit, unigram_baseline
from ..files import atomic_write
from ..model_files import ensure_writable_dir
from ..redact import redact
from .folder import SPACE_FILE, check_sweep_folder, claim_sweep_folder
from .results import sweep_table, trial_row, trial_state
from .space import SearchSpace, load_space
from .storage import _open, _sampler, _storage, import_optuna, open_study, storage_url
from .trial import objective_value, run_configuration
from .workers import alive, joiner_seed_offset, worker_gone, worker_id

__all__ = ["run_sweep", "finished_trials", "lost_trials"]

Progress = Callable[[dict[str, Any]], None]  # called with a trial's row when it finishes (in its worker)


def finished_trials(study) -> list:
    """Trials that count towards the sweep's total: complete, or failed with a reason."""
    return [t for t in study.get_trials(deepcopy=False) if trial_state(t) in ("complete", "failed")]


def _progress(study, space: SearchSpace, *, running: bool) -> int:
    """How far the sweep is: finished trials (and, with ``running``, those in flight). A grid counts
    distinct grid points: two workers can race to the same point, and the grid is done when each point is."""
    states = ("complete", "failed", "running") if running else ("complete", "failed")
    trials = [t for t in study.get_trials(deepcopy=False) if trial_state(t) in states]
    if space.sweep["sampler"] == "grid":
        return len({tuple(sorted(t.params.items())) for t in trials})
    return len(trials)


def _target(space: SearchSpace, trials: int | None) -> int:
    target: int = trials or space.sweep["trials"]
    size = space.grid_size()
    return min(target, size) if space.sweep["sampler"] == "grid" and size is not None else target


def lost_trials(study) -> list:
    return [t for t in study.get_trials(deepcopy=False) if trial_state(t) == "lost"]


# --- workers --------------------------------------------------------------------------------------------------
def _known_baselines(study) -> dict[str, dict[str, dict]]:
    """``{key: {seed: figures}}`` of every model completed trials measured, for reuse by new trials."""
    known: dict[str, dict[str, dict]] = {}
    for t in study.get_trials(deepcopy=False, states=(_complete(),)):
        record = t.user_attrs.get("record") or {}
        for role in ("qelm", "twin", "matched"):
            if role in record:
                known.setdefault(record[role]["key"], {}).update(record[role]["seeds"])
    return known


def _complete():
    return import_optuna().trial.TrialState.COMPLETE


class _TrialFailed(Exception):
    """A trial that failed with a reason (recorded in its ``error`` attribute); the sweep goes on."""


def _objective(space: SearchSpace, dataset: TextDataset, out: Path):
    def objective(trial) -> float:
        trial.set_user_attr("worker", worker_id())
        start = time.perf_counter()
        try:
            config, settings = space.suggest(trial, dataset.vocab_size)
            twin = _in_flight_twin(trial)
            if twin is not None:  # another worker runs this configuration now: this trial is not run
                trial.set_user_attr("duplicate_of", twin)
                raise import_optuna().TrialPruned(f"trial {twin} is running the same configuration")
            record = run_configuration(config, settings, dataset, space.seeds, out / "trials" / f"{trial.number:04d}",
                                       known=_known_baselines(trial.study), sample_tokens=space.sweep["sample_tokens"],
                                       spec=space.spec)
            value = objective_value(record)
        except import_optuna().TrialPruned:
            raise
        except Exception as e:  # the reason is recorded and the sweep goes on (see the module docstring)
            trial.set_user_attr("error", f"{type(e).__name__}: {e}")
            trial.set_user_attr("wall_seconds", time.perf_counter() - start)
            raise _TrialFailed(str(e)) from e
        trial.set_user_attr("record", record)
        trial.set_user_attr("wall_seconds", time.perf_counter() - start)
        return value

    return objective


def _in_flight_twin(trial) -> int | None:
    """The number of an earlier trial running the same parameters as ``trial`` (its worker alive), if any:
    of two workers that drew one configuration, the later one steps aside."""
    optuna = import_optuna()
    for t in trial.study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
        if t.number < trial.number and t.params == trial.params and not worker_gone(t.user_attrs.get("worker", "")):
            return t.number
    return None


def _spawned(imports: list[str], *args) -> None:
    """A worker process of its own: first the imports (:func:`qelm.circuits.import_circuits`) that registered
    circuits of your own in the process that started it, then :func:`_work`."""
    for given in imports:
        import_circuits(given)
    _work(*args)


def _work(out: str, url: str, name: str, data: str, target: int, worker: int, threads: int,
          progress: Progress | None) -> None:
    """One worker: run trials of the study until ``target`` trials are finished or in flight."""
    torch.set_num_threads(threads)
    study, space = open_study(out, url, name, worker=worker)
    dataset = _dataset(data, space, study.user_attrs["data_sha256"])

    def stop_when_done(study, trial) -> None:
        if progress is not None:
            progress(trial_row(trial))
        if _progress(study, space, running=True) >= target:
            study.stop()

    if _progress(study, space, running=False) < target:
        study.optimize(_objective(space, dataset, Path(out)), callbacks=[stop_when_done], catch=(_TrialFailed,),
                       gc_after_trial=True)


def _dataset(data: str, space: SearchSpace, sha256: str | None = None) -> TextDataset:
    dataset = TextDataset.from_file(data, tokenizer=space.train.get("tokenizer", "char"),
                                    vocab_size=space.train.get("vocab_size"))
    if sha256 is not None and dataset.sha256 != sha256:
        raise DataError(f"the corpus {data!r} (sha256 {dataset.sha256[:12]}...) is not the text this sweep trains on "
                         f"(sha256 {sha256[:12]}...): pass the sweep's own --data")
    return dataset


def _describe(dataset: TextDataset, source: str) -> dict[str, Any]:
    return {"source": source, "sha256": dataset.sha256, "chars": dataset.chars,
            "tokenizer": dataset.tokenizer.kind, "vocab_size": dataset.vocab_size,
            "train_tokens": len(dataset.train_ids), "val_tokens": len(dataset.val_ids)}


def _unigram(dataset: TextDataset) -> dict[str, float]:
    """The unigram baseline of the corpus (token frequencies of the training split), scored like the models."""
    u = unigram_baseline(dataset.train_ids, dataset.val_ids, dataset.vocab_size)
    bits, unit = bits_per_unit(u["loss"], dataset.val_ids, dataset.tokenizer)
    return {"val_loss": u["loss"], "perplexity": u["perplexity"], f"bits_per_{unit}": bits}


def _fail_lost(study, storage, *, requeue: bool = True, when: str = "when the sweep resumed") -> list[int]:
    """Trials shown as running whose worker on this host is gone: fail them and queue a retry of each
    (Optuna's heartbeat callback, as the heartbeat would after GRACE_PERIOD). Returns their numbers.
    A trial killed before its objective recorded its worker is left to the heartbeat, which fails it once
    it has been silent for GRACE_PERIOD (checked here and whenever a trial starts)."""
    optuna = import_optuna()
    optuna.storages.fail_stale_trials(study)
    host = socket.gethostname()
    study_id = storage.get_study_id_from_name(study.study_name)
    retry = storage.get_heartbeat_stale_trial_callback() if hasattr(storage, "get_heartbeat_stale_trial_callback") \
        else storage.get_failed_trial_callback()
    lost = []
    for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
        worker = t.user_attrs.get("worker", "")
        whost, _, pid = worker.rpartition(":")
        if whost != host or not pid.isdigit() or alive(int(pid)):
            continue
        trial_id = storage.get_trial_id_from_study_id_trial_number(study_id, t.number)
        storage.set_trial_user_attr(trial_id, "lost", f"its worker {worker} was gone {when}")
        try:
            storage.set_trial_state_values(trial_id, state=optuna.trial.TrialState.FAIL)
        except optuna.exceptions.UpdateFinishedTrialError:
            continue  # another process got there first
        lost.append(t.number)
        if retry is not None and requeue:
            retry(study, storage.get_trial(trial_id))
    return lost


def run_sweep(space: SearchSpace | str | os.PathLike | None = None, data: str | os.PathLike | None = None, *,
              out: str | os.PathLike, storage: str | None = None, study: str | None = None, workers: int = 1,
              resume: bool = False,
              trials: int | None = None, threads: int = 1, progress: Progress | None = None,
              started: Callable[[], None] | None = None) -> dict[str, Any]:
    """Run (or resume, or join) a sweep and return its table (:func:`qelm.sweep.results.sweep_table`).

    ``space``: a :class:`SearchSpace` or its TOML file (required for a new sweep; on resume the study's own
    is used, and a given one must match it). ``data``: the corpus every trial trains on (default: the
    bundled corpus; on resume the study's). ``storage``: an Optuna database URL (default: ``OUT/sweep.db``);
    ``study``: the sweep's name there (default: the space's ``[sweep] name``, else its file name).
    ``workers``: processes that work on the study at once. ``trials``: the total to reach (default: the
    space's ``[sweep] trials``). ``progress(row)`` is called in the worker when each trial finishes;
    ``started()`` once every input is checked, before the first trial.

    ``out`` must be new or empty for a new sweep, and the sweep's own folder to resume one
    (:mod:`qelm.sweep.folder`): a folder holding other files is refused before anything is written."""
    optuna = import_optuna()
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise ConfigError(f"workers={workers!r} is invalid: use an integer >= 1")
    if trials is not None and (isinstance(trials, bool) or not isinstance(trials, int) or trials < 1):
        raise ConfigError(f"trials={trials!r} is invalid: use an integer >= 1")
    out = check_sweep_folder(out, resume=resume)  # nothing is made before every input is checked
    given = space if isinstance(space, SearchSpace) or space is None else load_space(space)
    opened: Any  # the Optuna study (an untyped library's object)
    url = storage_url(out, storage)
    if resume:
        found, stored, st = _open(out, storage, study or (given.name if given is not None else None), 0)
        if given is not None and given.text != stored.text:
            raise ConfigError(f"the search space {given.source!r} differs from the one sweep {found.study_name!r} was "
                             f"started with: drop --space to resume it as it was, or start a new sweep in another --out")
        chosen, opened = stored, found
        data = data or opened.user_attrs["data"]
        _dataset(str(data), chosen, opened.user_attrs["data_sha256"])  # the same text, or an error now
        ensure_writable_dir(claim_sweep_folder(out, resume=True))
        _fail_lost(opened, st)
    else:
        if given is None:
            raise ConfigError("a new sweep needs a search space: pass --space FILE (see examples/sweep.toml)")
        chosen = given
        name = study or chosen.name
        if storage is not None:  # a database elsewhere: checked before the folder is made
            st = _storage(url)
            if name in optuna.get_all_study_names(st):
                raise ConfigError(f"the sweep storage {redact(url)!r} already holds sweep {name!r}: continue it with "
                                  f"--resume, or start a new one under another name (--study)")
        source = str(data) if data is not None else "qelm/data/corpus.txt (the bundled corpus)"
        data = Path(data or bundled_corpus()).resolve()
        dataset = _dataset(str(data), chosen)
        contexts = {chosen.model["context_len"]} | {v for d in chosen.dims if d.table == "model"
                                                    and d.name == "context_len" for v in d.values() or ()}
        for context_len in sorted(contexts):  # the corpus is long enough for every context (before any trial)
            dataset.check_context(context_len)
        ensure_writable_dir(claim_sweep_folder(out, resume=False))
        if storage is None:
            st = _storage(url)
            held = optuna.get_all_study_names(st)
            if name in held:
                raise ConfigError(f"the sweep storage {redact(url)!r} already holds sweep {name!r}: continue it with "
                                  f"--resume, or start a new one in another --out")
            if held:  # another sweep's folder: its space.toml and table are not this sweep's to replace
                raise FileExistsError(f"sweep folder {str(out)!r} holds sweep {', '.join(map(repr, held))}: continue "
                                      f"it with --resume, or start a new sweep in another --out")
        opened = optuna.create_study(study_name=name, storage=st, direction="minimize",
                                     sampler=_sampler(chosen, 0))
        for key, value in {"space": chosen.text, "space_file": str(chosen.source), "data": str(data),
                           "data_sha256": dataset.sha256, "corpus": _describe(dataset, source),
                           "unigram": _unigram(dataset)}.items():
            opened.set_user_attr(key, value)
        atomic_write(out / SPACE_FILE, chosen.text)
    target = _target(chosen, trials)
    if started is not None:
        started()
    args = (str(out), url, opened.study_name, str(data), target)
    first = joiner_seed_offset() if resume else 0  # a joining process seeds its samplers apart from every other
    for _round in range(5):  # rounds: each runs the retries of trials lost in the one before
        _run_workers(args, workers, first, threads, progress, opened, chosen, target)
        # a trial another process of this host left running when it died: failed (it is lost), and run again
        # here while the sweep still needs it; a live worker's trial stays running
        if not _fail_lost(opened, st, requeue=_progress(opened, chosen, running=True) < target,
                          when="when another process of the sweep finished its trials"):
            break
        if _progress(opened, chosen, running=True) >= target:
            break
    return sweep_table(opened)


def _run_workers(args: tuple[str, str, str, str, int], workers: int, first: int, threads: int, progress: Progress | None, study, space,
                 target: int) -> None:
    if workers == 1:
        _work(*args, first, threads, progress)
        return
    ctx = multiprocessing.get_context("spawn")  # torch and sqlite connections do not survive fork safely
    imports = imports_for()  # a spawned process knows the built-in circuits only
    procs = [ctx.Process(target=_spawned, args=(imports, *args, first + i, threads, progress), name=f"qelm-sweep-{i}")
             for i in range(workers)]
    for p in procs:
        p.start()
    try:
        for p in procs:
            p.join()
    finally:
        for p in procs:
            if p.is_alive():
                p.terminate()
    failed = [p.name for p in procs if p.exitcode not in (0, None)]
    if failed and _progress(study, space, running=False) < target:
        raise RuntimeError(f"sweep worker(s) {', '.join(failed)} stopped with an error before the sweep finished "
                           f"(see their messages above); resume with --resume")
