import errno
import json
import math
import os
import tempfile
from pathlib import Path

import pytest
import torch

import qelm.cli
from qelm import QELMConfig
from qelm.data import TextDataset

PERIODIC = "hello world. " * 60  # 9 characters; which one follows 'l' or 'o' depends on context


def pytest_collection_modifyitems(config, items):
    """Tests marked ``gpu`` need an NVIDIA GPU: without one they skip and say so (``make test-gpu`` runs them)."""
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs an NVIDIA GPU: torch sees no CUDA device here")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture
def corpus(tmp_path):
    """A small English text (the CLI and training tests' corpus)."""
    path = tmp_path / "corpus.txt"
    path.write_text("the cat sat on the mat. the dog ran to the log. a hen and a fox.\n" * 8, encoding="utf-8")
    return path


@pytest.fixture
def config_file(tmp_path):
    """A TOML config of a tiny model and a 4-step run."""
    path = tmp_path / "tiny.toml"
    path.write_text('[model]\nd_model = 8\nn_heads = 2\nd_hidden = 16\ncontext_len = 8\nn_qubits = 2\n'
                    'circuit_layers = 1\n\n[train]\nsteps = 4\nbatch_size = 4\neval_every = 2\nsave_every = 2\n')
    return path


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
    yield


@pytest.fixture(scope="module")
def _one_thread():
    """Tiny tensors: one torch thread is fastest, and far faster on a busy machine. Modules that train
    use it (``pytestmark = pytest.mark.usefixtures("_one_thread")``)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def tiny_config() -> QELMConfig:
    """A QELM small enough that every test on it runs in well under a second."""
    return QELMConfig(vocab_size=11, d_model=8, n_heads=2, d_hidden=16, n_layers=1, context_len=6, n_qubits=2,
                      circuit_layers=1)


@pytest.fixture(scope="session")
def periodic() -> TextDataset:
    """A periodic text a tiny model can learn far below its unigram entropy."""
    return TextDataset.from_text(PERIODIC)


@pytest.fixture
def write_run():
    """``write_run(root, slopes)``: a training run folder with one ``metrics.jsonl`` per (model, slope):
    a loss decaying at that slope, logged every 5 steps to step 40, validated every 20."""

    def write(root, slopes=(("qelm", 1.0), ("twin", 0.7))):
        for sub, k in slopes:
            (root / sub).mkdir(parents=True)
            with open(root / sub / "metrics.jsonl", "w") as f:
                for step in range(0, 41, 5):
                    loss = 2.4 * math.exp(-k * step / 20) + 0.5
                    r = {"step": step, "loss": loss, "tokens_per_s": 1000.0, "peak_memory_bytes": 1 << 20}
                    if step % 20 == 0:
                        r.update(val_loss=loss + 0.1, val_perplexity=math.exp(loss + 0.1))
                    f.write(json.dumps(r) + "\n")
        return root

    return write


class _CLI:
    """The ``qelm`` command line, run in-process through ``qelm.cli.main`` as the console script runs it."""

    def __init__(self, capsys) -> None:
        self.capsys = capsys

    def __call__(self, *argv) -> tuple[int, str, str]:
        """``qelm ARGV...`` -> ``(exit code, stdout, stderr)``; an argparse rejection is exit code 2."""
        try:
            rc = qelm.cli.main([str(a) for a in argv])
        except SystemExit as e:  # argparse rejects a value before main's own handling
            rc = e.code
        out = self.capsys.readouterr()
        return rc, out.out, out.err

    def error(self, *argv) -> str:
        """The one stderr line of a user error (exit code 2, no traceback)."""
        rc, out, err = self(*argv)
        lines = [line for line in err.splitlines() if line.strip()]
        assert rc == 2, (rc, out, err)
        assert len(lines) == 1 and "Traceback" not in err, err
        return lines[0]


@pytest.fixture
def cli(capsys) -> _CLI:
    """``cli("train", "--data", ...)`` -> ``(rc, stdout, stderr)``; ``cli.error(...)`` -> the error line."""
    return _CLI(capsys)


@pytest.fixture
def read_only_folder(tmp_path, monkeypatch) -> Path:
    """A folder that refuses new files, as a read-only mount does: by its mode bits, or (for root, who
    writes whatever they say) by refusing the temporary files qelm probes and writes with."""
    folder = tmp_path / "read-only"
    folder.mkdir(mode=0o500)
    try:
        (folder / "probe").touch()
    except PermissionError:
        return folder
    (folder / "probe").unlink()

    def refuse(real):
        def make(*args, dir=None, **kwargs):
            if dir is not None and Path(dir).is_relative_to(folder):
                raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(dir))
            return real(*args, dir=dir, **kwargs)
        return make

    for name in ("TemporaryFile", "mkstemp"):
        monkeypatch.setattr(tempfile, name, refuse(getattr(tempfile, name)))
    return folder
