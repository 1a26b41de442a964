"""Crash safety: a training run SIGKILLed at any moment (between steps, while logging, inside a checkpoint
save: as each file is written, synced, committed, moved into place; while writing its summary), and killed
again while resuming, resumes to exactly the weights and losses of a run never interrupted, and leaves no
stray file behind. The runs are forks of one process (tests/kill_points.py), so the whole test takes seconds."""

import json
import os
import subprocess
import sys
from pathlib import Path

import qelm

DRIVER = Path(__file__).with_name("kill_points.py")


def test_a_run_killed_anywhere_resumes_to_the_weights_of_an_uninterrupted_run(tmp_path):
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("the cat sat on the mat. the dog ran to the log. a hen and a fox.\n" * 8, encoding="utf-8")
    config = tmp_path / "tiny.toml"
    config.write_text('[model]\nd_model = 8\nn_heads = 2\nd_hidden = 16\ncontext_len = 8\nn_qubits = 2\n'
                      'circuit_layers = 1\n\n[train]\nsteps = 4\nbatch_size = 2\neval_every = 2\nsave_every = 2\n')
    runs = tmp_path / "runs"
    runs.mkdir()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(qelm.__file__).parents[1]),
                                                         os.environ.get("PYTHONPATH", "")])}
    # 5 random kill points besides every event of the last save, 2 of them killed once more while resuming
    proc = subprocess.run([sys.executable, str(DRIVER), str(runs), str(corpus), str(config), "5", "2", "0"],
                          capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    whole, killed = report["whole"], report["killed"]
    assert whole["first"] == 0 and set(whole["models"]) == {"qelm", "twin"}
    assert all(m["steps"] == [1, 2, 3, 4] for m in whole["models"].values())
    assert len(killed) >= 20
    # inside a save: as the weights and the state are written, at the commit, as files move into place
    assert {"safetensors.torch.save_file", "torch.save", "qelm.model_files.atomic_write", "os.replace",
            "shutil.rmtree"} <= {e["event"] for e in killed}
    assert any(len(e["resumes"]) > 1 for e in killed), "a resume was killed as well"
    for entry in killed:
        where = f"killed before event {entry['kill_at']} ({entry['event']})"
        assert entry["first"] == -9, where  # the run really died there
        assert entry["resumes"][-1]["rc"] == 0, (where, entry["resumes"])
        for name, expected in whole["models"].items():
            got = entry["models"][name]
            assert got["weights"] == expected["weights"], (where, name)  # bit for bit
            assert (got["steps"], got["losses"], got["val_losses"]) == \
                (expected["steps"], expected["losses"], expected["val_losses"]), (where, name)
        assert entry["summary"] and entry["leftovers"] == [], (where, entry["leftovers"])
