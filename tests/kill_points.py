"""Driver of tests/test_train_faults.py: runs ``qelm train`` in forked children and SIGKILLs each just before
its N-th file operation (a file written, synced, renamed or removed) or optimizer step, then resumes the run
(``qelm train --resume``) and reports what the folder holds. One process imports qelm once; every run is a
fork of it, so a run costs its training, not an interpreter start.

    python kill_points.py ROOT CORPUS CONFIG N_RANDOM N_TWICE SEED  ->  JSON on stdout

First an uninterrupted run records the sequence of events; then one run is killed before each event of the
last checkpoint save (every file of it written, synced, committed, moved), and before ``N_RANDOM`` other
events drawn with ``SEED``, ``N_TWICE`` of them killed again while resuming. The loss curve is written as a
stub: drawing it is slow and holds no weights.
"""

import gc
import hashlib
import json
import os
import random
import shutil
import signal
import sys
from pathlib import Path

import torch

torch.set_num_threads(1)

import safetensors.torch  # noqa: E402

import qelm.cli  # noqa: E402
import qelm.metrics  # noqa: E402
import qelm.model_files  # noqa: E402
import qelm.train.run  # noqa: E402
import qelm.train.steps  # noqa: E402
from qelm.files import atomic_write  # noqa: E402

qelm.train.run.plot_curves = lambda curves, path, **kwargs: atomic_write(path, b"a stub of the loss curve")
os.fsync = lambda fd: None  # a kill is not a power cut: what the kernel holds survives it, synced or not

# every point where a kill leaves a different state: (module, function)
HOOKED = [(qelm.train.steps, "_step"), (qelm.model_files, "fsync_path"), (qelm.model_files, "atomic_write"),
          (qelm.metrics, "atomic_write"), (qelm.train.steps, "atomic_write"), (qelm.train.run, "atomic_write"),
          (safetensors.torch, "save_file"), (torch, "save"), (os, "replace"), (os, "unlink"), (shutil, "rmtree")]


def install_kill(kill_at: int, events: list[str]) -> None:
    """Count every hooked call; SIGKILL this process just before call number ``kill_at`` (0: never)."""
    def hook(label, fn):
        def wrapped(*args, **kwargs):
            events.append(label)
            if len(events) == kill_at:
                os.kill(os.getpid(), signal.SIGKILL)
            return fn(*args, **kwargs)
        return wrapped

    for module, name in HOOKED:
        setattr(module, name, hook(f"{module.__name__}.{name}", getattr(module, name)))


def run(argv: list[str], kill_at: int, log: Path) -> int:
    """``qelm ARGV`` in a forked child: its exit code, or -9 when it was killed. Its stderr goes to ``log``,
    and with ``kill_at=0`` the events it passed to ``log.events.json``."""
    pid = os.fork()
    if pid == 0:  # the child: never returns
        os.dup2(os.open(os.devnull, os.O_WRONLY), 1)
        os.dup2(os.open(log, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644), 2)
        events: list[str] = []
        install_kill(kill_at, events)
        try:
            rc = qelm.cli.main(argv)
        except BaseException as e:  # a bug: report it, never hang the parent
            print(f"{type(e).__name__}: {e}", file=sys.stderr)
            rc = 99
        if not kill_at:
            Path(f"{log}.events.json").write_text(json.dumps(events))
        sys.stderr.flush()
        os._exit(rc)
    _, status = os.waitpid(pid, 0)
    return -os.WTERMSIG(status) if os.WIFSIGNALED(status) else os.WEXITSTATUS(status)


def weights_sha256(path: Path) -> str:
    """sha256 of a safetensors file's tensors, by name: the file's own bytes also hold its metadata, which
    safetensors writes in an order that changes from process to process."""
    from safetensors.numpy import load_file

    tensors = load_file(path)
    digest = hashlib.sha256()
    for name in sorted(tensors):
        digest.update(name.encode() + tensors[name].tobytes())
    return digest.hexdigest()


def outcome(out: Path) -> dict:
    """What a finished run folder holds: each model's weights (sha256 of its tensors), its logged losses,
    and any file a killed process left behind."""
    models = {}
    for folder in sorted(p for p in out.iterdir() if p.is_dir()):
        manifest = json.loads((folder / qelm.model_files.MANIFEST).read_text())
        records = qelm.metrics.read_metrics(folder / qelm.metrics.METRICS)
        models[folder.name] = {"weights": weights_sha256(folder / "model.safetensors"), "step": manifest["step"],
                               "steps": [r["step"] for r in records], "losses": [r["loss"] for r in records],
                               "val_losses": [r.get("val_loss") for r in records]}
    leftovers = sorted(str(p.relative_to(out)) for p in out.rglob("*")
                       if p.name.endswith(".tmp") or p.name == qelm.model_files.PENDING)
    return {"models": models, "leftovers": leftovers, "summary": (out / "summary.json").is_file()}


def kill_points(events: list[str], n_random: int, n_twice: int, seed: int) -> list[tuple[int, int | None]]:
    """Every event of the last save (from its weights file to its last sync), and random others."""
    saves = [i for i, e in enumerate(events) if e == "safetensors.torch.save_file"]
    end = next(i for i in range(saves[-1], len(events)) if events[i] == "qelm.model_files.fsync_path" and
               events[i - 1] == "shutil.rmtree")
    in_save = list(range(saves[-1] + 1, end + 2))  # 1-based: kill before each of them
    rng = random.Random(seed)
    others = sorted(rng.sample([k for k in range(1, len(events) + 1) if k not in in_save], n_random))
    twice = set(rng.sample(others, n_twice))
    return [(k, None) for k in in_save] + [(k, rng.randint(1, 40) if k in twice else None) for k in others]


def main() -> None:
    root, corpus, config = Path(sys.argv[1]), sys.argv[2], sys.argv[3]
    n_random, n_twice, seed = map(int, sys.argv[4:7])
    train = ["train", "--data", corpus, "--config", config, "--no-matched"]

    def attempt(i: int, kill_at: int, kill_resume_at: int | None) -> dict:
        out, log = root / f"run{i}", root / f"run{i}.log"
        entry = {"kill_at": kill_at, "kill_resume_at": kill_resume_at,
                 "first": run(train + ["--out", str(out)], kill_at, log), "resumes": []}
        kills = [kill_resume_at] if kill_resume_at else []
        while entry["first"] == -9 and len(entry["resumes"]) < 4:  # resume, as a user would, until it finishes
            rc = run(["train", "--resume", str(out)], kills.pop() if kills else 0, log)
            said = log.read_text().strip()
            if rc == 2 and "nothing to resume" in said:  # killed before its first checkpoint: start again
                rc = run(train + ["--out", str(out)], 0, log)
                said = log.read_text().strip()
            entry["resumes"].append({"rc": rc, "stderr": said})
            if rc != -9:
                break
        if entry["first"] == 0 or (entry["resumes"] and entry["resumes"][-1]["rc"] == 0):
            entry.update(outcome(out))
        return entry

    gc.freeze()  # the children share the parent's memory instead of copying every page the collector touches
    whole = attempt(0, 0, None)
    whole["events"] = json.loads(Path(f"{root / 'run0.log'}.events.json").read_text())
    points = kill_points(whole["events"], n_random, n_twice, seed)
    killed = [{**attempt(i, k, j), "event": whole["events"][k - 1]} for i, (k, j) in enumerate(points, 1)]
    print(json.dumps({"whole": whole, "killed": killed}))


if __name__ == "__main__":
    main()
