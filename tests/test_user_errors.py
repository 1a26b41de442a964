"""The campaign's cases of bad input: each is refused in one line that names what is wrong and how to fix
it (no traceback, exit 2), before any work, and the library raises an error that says the same."""

import os
import sys

import pytest

from qelm import QELM

pytestmark = pytest.mark.usefixtures("_one_thread")


# --- M5: from_pretrained never sends a local path to the Hub ------------------------------------------------
@pytest.fixture
def no_hub(monkeypatch):
    import huggingface_hub
    import huggingface_hub.hub_mixin

    def refuse(*args, **kwargs):
        raise AssertionError("the Hub was asked")

    for module in (huggingface_hub, huggingface_hub.hub_mixin):
        for name in ("snapshot_download", "hf_hub_download"):
            if hasattr(module, name):
                monkeypatch.setattr(module, name, refuse)


@pytest.mark.parametrize("name", ["runs/typo", "./typo", "runs/a/b", "~/no-such-qelm-folder", "../typo"])
def test_from_pretrained_of_a_missing_local_path_fails_here_naming_it(tmp_path, monkeypatch, no_hub, name):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "runs").mkdir()
    with pytest.raises(FileNotFoundError, match=f"folder '{name}' does not exist"):
        QELM.from_pretrained(name)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        QELM.from_pretrained(tmp_path / "runs" / "typo")  # a Path is always local


def test_from_pretrained_of_a_file_says_it_is_a_file(tmp_path, no_hub):
    (tmp_path / "small.txt").write_text("x")
    with pytest.raises(NotADirectoryError, match="is a file, not a folder"):
        QELM.from_pretrained(str(tmp_path / "small.txt"))


def test_a_repo_id_still_goes_to_the_hub(tmp_path, monkeypatch, no_hub):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(AssertionError, match="the Hub was asked"):
        QELM.from_pretrained("someone/qelm-tiny")
