"""Processes that join a sweep (``qelm sweep --resume``, the several-machines mode): each seeds its sampler
apart from every other, none runs a configuration another worker is running, and a trial whose worker
died is reported as lost, not running (and run again while the sweep still needs it). Trials here fail at
once (a fake training), so the sweep's bookkeeping is tested in a second."""

import socket
import subprocess
import sys

import pytest

optuna = pytest.importorskip("optuna")

import qelm.sweep.study as study_module  # noqa: E402
from qelm.sweep import open_study, run_sweep  # noqa: E402

SPACE = """
[sweep]
trials = {trials}
seeds = [0]
sampler = "random"

[model]
d_model = 8
n_heads = 2
d_hidden = 16
context_len = 8
n_qubits = 2
circuit_layers = 1

[train]
steps = 1
batch_size = 4

[search.train]
lr = {{ low = 0.0001, high = 0.1, log = true }}
"""


@pytest.fixture
def fake_training(monkeypatch):
    """Every trial fails at once with a reason (it counts towards the sweep's total); the calls are kept."""
    import gc

    calls = []
    monkeypatch.setattr(gc, "collect", lambda *args: 0)  # the sweep collects after each trial: 1 s in a test process

    def run_configuration(config, settings, *args, **kwargs):
        calls.append(settings)
        raise ValueError("fake training")

    monkeypatch.setattr(study_module, "run_configuration", run_configuration)
    return calls


def _space(tmp_path, trials):
    path = tmp_path / "space.toml"
    path.write_text(SPACE.format(trials=trials))
    return path


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def _lrs(out):
    study, _ = open_study(out)
    return [t.params.get("train.lr") for t in study.get_trials(deepcopy=False)]


def test_a_joining_process_proposes_its_own_trials(tmp_path, corpus, fake_training, monkeypatch):
    out = tmp_path / "sweep"
    run_sweep(_space(tmp_path, 3), corpus, out=out)
    import importlib

    for pid in (101, 102):  # two processes join, one after the other: each is a process of its own
        try:
            workers = importlib.import_module("qelm.sweep.workers")
            monkeypatch.setattr(workers, "worker_id", lambda pid=pid: f"{socket.gethostname()}-joiner:{pid}")
        except ModuleNotFoundError:
            pass
        run_sweep(out=out, resume=True, trials=3 + 3 * (pid - 100))
    lrs = _lrs(out)
    assert len(lrs) == 9 and len(set(lrs)) == 9, "a joining process re-proposed trials another one ran"


def test_a_configuration_in_flight_is_not_run_twice(tmp_path, corpus, fake_training):
    out = tmp_path / "sweep"
    run_sweep(_space(tmp_path, 1), corpus, out=out)
    fake_training.clear()
    study, space = open_study(out)
    first = study.get_trials(deepcopy=False)[0]
    live = optuna.trial.create_trial(state=optuna.trial.TrialState.RUNNING, params={"train.lr": 0.01},
                                     distributions=first.distributions,
                                     user_attrs={"worker": f"{socket.gethostname()}:{study_module.os.getpid()}"})
    study.add_trial(live)  # another worker runs lr=0.01 now
    study.enqueue_trial({"train.lr": 0.01})  # and this worker draws it too
    dataset = study_module._dataset(study.user_attrs["data"], space, study.user_attrs["data_sha256"])
    study.optimize(study_module._objective(space, dataset, out), n_trials=1, catch=(study_module._TrialFailed,))
    assert fake_training == [], "the configuration in flight was trained again"
    last = study.get_trials(deepcopy=False)[-1]
    assert last.state.name == "PRUNED" and last.user_attrs["duplicate_of"] == 1


def test_a_trial_whose_worker_died_is_reported_lost_and_run_again(tmp_path, corpus, fake_training):
    out = tmp_path / "sweep"
    run_sweep(_space(tmp_path, 1), corpus, out=out)
    study, _ = open_study(out)
    distributions = study.get_trials(deepcopy=False)[0].distributions
    dead = f"{socket.gethostname()}:{_dead_pid()}"
    injected = []

    def dies_meanwhile(config, settings, *args, **kwargs):  # the first process's trial, killed after this join
        if not injected:
            injected.append(1)
            study.add_trial(optuna.trial.create_trial(state=optuna.trial.TrialState.RUNNING,
                                                      params={"train.lr": 0.05}, distributions=distributions,
                                                      user_attrs={"worker": dead}))
        raise ValueError("fake training")

    study_module.run_configuration, saved = dies_meanwhile, study_module.run_configuration
    try:
        table = run_sweep(out=out, resume=True, trials=4)
    finally:
        study_module.run_configuration = saved
    states = [t["state"] for t in table["trials"]]
    assert "running" not in states, states
    lost = [t for t in table["trials"] if t["state"] == "lost"]
    assert len(lost) == 1 and f"its worker {dead} was gone" in lost[0]["error"]
    assert states.count("failed") == 4, "the sweep ran its trials to the total, the lost one not among them"


POPPER = """
import sys
from qelm.sweep.storage import _storage, import_optuna
optuna = import_optuna()
study = optuna.load_study(study_name="queue", storage=_storage(sys.argv[1]))
got = []
while (trial_id := study._pop_waiting_trial_id()) is not None:  # what optimize does to take a queued trial
    got.append(trial_id)
print(" ".join(map(str, got)))
"""


@pytest.mark.slow  # two fresh processes import qelm: seconds each on a busy machine
def test_two_processes_never_take_the_same_queued_trial(tmp_path):
    """A retried trial waits in a queue; two workers taking from it must never both run one (SQLite's
    default transactions let both claim it)."""
    url = f"sqlite:///{tmp_path / 'queue.db'}"
    study = optuna.create_study(study_name="queue", storage=study_module._storage(url))
    for i in range(60):
        study.enqueue_trial({"x": i})
    procs = [subprocess.Popen([sys.executable, "-c", POPPER, url], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True) for _ in range(2)]
    taken = [p.communicate(timeout=120) for p in procs]
    assert all(p.returncode == 0 for p in procs), [err for _, err in taken]
    a, b = (set(out.split()) for out, _ in taken)
    assert not a & b, f"trials {sorted(a & b)} were taken by both processes"
    assert len(a | b) == 60
