"""Atomic writes (qelm.files): the target is either the old file or the new one, never a partial one."""

import os
import stat

import pytest

from qelm.files import atomic_path, atomic_write


def test_failed_write_keeps_the_old_file_and_leaves_no_temp(tmp_path):
    target = tmp_path / "out.json"
    atomic_write(target, "old")
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_text("half")
        raise RuntimeError("killed mid-write")
    assert target.read_text() == "old"
    assert os.listdir(tmp_path) == ["out.json"]


def test_written_file_has_ordinary_permissions(tmp_path):
    old = os.umask(0o022)
    try:
        path = atomic_write(tmp_path / "a.bin", b"\x00\x01")
    finally:
        os.umask(old)
    assert path.read_bytes() == b"\x00\x01"
    assert stat.S_IMODE(path.stat().st_mode) == 0o644  # not mkstemp's private 0o600


def test_folder_errors_name_the_path(tmp_path):
    with pytest.raises(IsADirectoryError, match="is a folder"):
        atomic_write(tmp_path, "x")
    with pytest.raises(FileNotFoundError, match="does not exist: create it first"):
        atomic_write(tmp_path / "missing" / "a.txt", "x")
    assert atomic_write(tmp_path / "made" / "a.txt", "x", make_parents=True).read_text() == "x"


def test_a_read_only_folder_names_the_file_asked_for(tmp_path, monkeypatch):
    import errno
    import tempfile

    def read_only(*args, dir=None, **kwargs):  # as a read-only mount answers (root ignores mode bits)
        raise OSError(errno.EROFS, os.strerror(errno.EROFS), os.path.join(dir, ".out.json.x1y2.tmp"))

    monkeypatch.setattr(tempfile, "mkstemp", read_only)
    with pytest.raises(PermissionError) as e:
        atomic_write(tmp_path / "out.json", "{}")
    assert f"cannot write {str(tmp_path / 'out.json')!r}" in str(e.value) and ".tmp" not in str(e.value)
