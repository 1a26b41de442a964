"""qelm.gallery: the committed circuits/ gallery is what the code draws now, drift is reported file by
file, and `qelm gallery` regenerates or checks it."""

import shutil
from pathlib import Path

import pytest

from qelm import CIRCUITS
from qelm.gallery import gallery_drift, write_gallery

GALLERY = Path(__file__).resolve().parent.parent / "circuits"


@pytest.fixture(scope="module")
def regenerated(tmp_path_factory):
    """The deterministic gallery files, regenerated once for this module."""
    out = tmp_path_factory.mktemp("gallery")
    write_gallery(out, images=False)
    return out


def test_committed_gallery_has_no_drift(regenerated):
    problems = gallery_drift(GALLERY, regenerated)
    assert not problems, "circuits/ is out of date, run `make gallery`:\n" + "\n".join(problems)
    assert {p.stem for p in GALLERY.glob("*.png")} == set(CIRCUITS)


def test_gallery_drift_is_detected(regenerated, tmp_path):
    copy = tmp_path / "circuits"
    shutil.copytree(GALLERY, copy)
    qasm = copy / "angle.qasm"
    qasm.write_text(qasm.read_text().replace("ry(1.0) q[1];", "ry(1.5) q[1];"))
    (copy / "polar.txt").unlink()
    (copy / "old_circuit.txt").write_text("stale")
    assert gallery_drift(copy, regenerated) == [
        "angle.qasm: differs from the regenerated file",
        "polar.txt: missing",
        "old_circuit.txt: not part of the gallery (a removed circuit?)",
    ]


def test_cli_gallery_check_passes_on_the_committed_gallery_and_fails_on_drift(cli, tmp_path):
    rc, out, err = cli("gallery", GALLERY, "--check")
    assert rc == 0 and "up to date" in out and err == ""
    copy = tmp_path / "circuits"
    shutil.copytree(GALLERY, copy)
    (copy / "polar.txt").unlink()
    rc, out, err = cli("gallery", copy, "--check")
    assert rc == 1 and f"{copy}/polar.txt: missing" in err and "run `make gallery`" in err


