"""One family of user errors: each library error a user can fix is a ``QelmError`` (the value errors are
also ``ValueError``), and the command line prints exactly those as one line, while a bug keeps its
traceback."""

import pytest

import qelm.cli.draw
from qelm import QELMConfig, get_backend
from qelm.backends import BackendUnavailable
from qelm.data import TextDataset
from qelm.errors import BackendError, CheckpointError, ConfigError, DataError, QelmError
from qelm.files import FolderInUse
from qelm.model_files import checkpoint_files


def test_the_family():
    for cls in (ConfigError, DataError, CheckpointError, BackendError):
        assert issubclass(cls, QelmError) and issubclass(cls, ValueError)
    assert issubclass(BackendUnavailable, QelmError) and issubclass(BackendUnavailable, RuntimeError)
    assert issubclass(FolderInUse, QelmError)
    assert issubclass(qelm.cli.options.UserError, QelmError)


def test_each_room_raises_its_kind(tmp_path):
    with pytest.raises(ConfigError, match="n_qubits=0 is invalid"):
        QELMConfig(n_qubits=0)
    with pytest.raises(BackendError, match="unknown backend 'nope'"):
        get_backend("nope")
    with pytest.raises(DataError, match="is empty"):
        TextDataset.from_text("")
    (tmp_path / "ck").mkdir()
    (tmp_path / "ck" / "checkpoint.json").write_text("{not json")
    with pytest.raises(CheckpointError, match="is corrupt"):
        checkpoint_files(tmp_path / "ck")


def test_the_command_line_prints_a_user_error_as_one_line(cli):
    line = cli.error("draw", "no_such_circuit")
    assert line.startswith("qelm draw: error:")


def test_a_bug_keeps_its_traceback(cli, monkeypatch):
    """A ``ValueError`` that is not a ``QelmError`` is a bug: the command line lets it through."""
    def broken(args):
        raise ValueError("an internal invariant broke")

    monkeypatch.setattr(qelm.cli.draw, "_draw", broken)
    with pytest.raises(ValueError, match="an internal invariant broke"):
        cli("draw", "angle")
