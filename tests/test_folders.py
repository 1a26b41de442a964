"""One rule for every command that writes a folder (qelm train and demo, gallery, sweep --out, compare
--keep-files): a folder that is not new, empty or the command's own is refused before anything is written,
naming what is in the way, and no write follows a link out of the folder. The property test draws random
trees of user files, folders and links and checks that no command changes any of them."""

import os
import re
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from qelm import QELMConfig
from qelm.train import train

pytestmark = pytest.mark.usefixtures("_one_thread")

TRAIN = ("--steps", "1", "--no-twin", "--no-matched")


def _circuit_names():
    from qelm import CIRCUITS

    return sorted(CIRCUITS)


def _train(cli, corpus, config_file, out, *more):
    return cli("train", "--data", corpus, "--config", config_file, *TRAIN, "--out", out, *more)


# --- D1, T4: qelm train ---------------------------------------------------------------------------------------
def test_train_keeps_a_users_file_in_a_model_folder(cli, corpus, config_file, tmp_path):
    out = tmp_path / "o"
    (out / "qelm" / "best").mkdir(parents=True)
    (out / "qelm" / "best" / "mine.txt").write_text("mine")
    line = cli.error("train", "--data", corpus, "--config", config_file, *TRAIN, "--out", out)
    assert "holds files that are not a qelm run (qelm/best/mine.txt)" in line
    assert (out / "qelm" / "best" / "mine.txt").read_text() == "mine"
    assert sorted(p.name for p in out.rglob("*")) == ["best", "mine.txt", "qelm"], "nothing written"


def test_train_never_writes_through_a_link_out_of_its_folder(cli, corpus, config_file, tmp_path):
    mine = tmp_path / "p"
    mine.mkdir()
    (mine / "model.safetensors").write_text("w")
    out = tmp_path / "o2"
    out.mkdir()
    (out / "qelm").symlink_to("../p")
    line = cli.error("train", "--data", corpus, "--config", config_file, *TRAIN, "--out", out, "--overwrite")
    assert "qelm -> ../p (a link)" in line and "choose an empty or new folder" in line
    assert [p.name for p in mine.iterdir()] == ["model.safetensors"] and (mine / "model.safetensors").read_text() == "w"


def test_a_linked_best_folder_is_refused_in_one_line(cli, corpus, config_file, tmp_path):
    """T4: a run whose qelm/best is a link: refused, with no traceback, and the linked folder kept."""
    out = tmp_path / "run"
    assert _train(cli, corpus, config_file, out)[0] == 0
    elsewhere = tmp_path / "elsewhere"
    (out / "qelm" / "best").rename(elsewhere)
    (out / "qelm" / "best").symlink_to(elsewhere)
    before = sorted(p.name for p in elsewhere.iterdir())
    assert "qelm/best -> " in cli.error("train", "--data", corpus, "--config", config_file, *TRAIN, "--out", out,
                                        "--overwrite")
    assert "links or special files (qelm/best -> " in cli.error("train", "--resume", out, "--steps", "2")
    assert sorted(p.name for p in elsewhere.iterdir()) == before


def test_a_run_folder_of_qelms_own_files_is_still_replaced(cli, corpus, config_file, tmp_path):
    out = tmp_path / "run"
    assert _train(cli, corpus, config_file, out)[0] == 0
    assert "already holds a training run" in cli.error("train", "--data", corpus, "--config", config_file, *TRAIN,
                                                       "--out", out)
    assert _train(cli, corpus, config_file, out, "--overwrite")[0] == 0
    assert _train(cli, corpus, config_file, tmp_path / "empty", "--overwrite")[0] == 0


def test_train_out_that_is_a_file_says_so(cli, corpus, config_file, tmp_path):
    assert "is a file; give a folder" in cli.error("train", "--data", corpus, "--config", config_file, *TRAIN,
                                                   "--out", corpus)


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs here")
def test_a_fifo_in_a_run_folder_is_refused_without_opening_it(cli, corpus, config_file, tmp_path):
    out = tmp_path / "run"
    (out / "qelm").mkdir(parents=True)
    os.mkfifo(out / "qelm" / "metrics.jsonl")
    assert "qelm/metrics.jsonl (not a regular file)" in cli.error("train", "--data", corpus, "--config", config_file,
                                                                   *TRAIN, "--out", out)


# --- D2: gallery, sweep, compare ------------------------------------------------------------------------------
def test_gallery_keeps_a_users_readme(cli, tmp_path):
    g = tmp_path / "g"
    g.mkdir()
    (g / "README.md").write_text("# my project\n")
    line = cli.error("gallery", g)
    assert "gallery folder" in line and "holds files that are not a qelm gallery (README.md)" in line
    assert [p.name for p in g.iterdir()] == ["README.md"] and (g / "README.md").read_text() == "# my project\n"


def test_gallery_into_a_file_says_it_is_a_file(cli, corpus):
    assert "is a file; give a folder" in cli.error("gallery", corpus)
    assert "is a file, not a folder" in cli.error("gallery", corpus, "--check")


def test_a_gallery_is_regenerated_in_its_own_folder(tmp_path):
    from qelm.gallery import gallery_drift, write_gallery

    write_gallery(tmp_path / "g", images=False)
    (tmp_path / "g" / "angle.txt").write_text("stale")
    write_gallery(tmp_path / "g", images=False)
    assert gallery_drift(tmp_path / "g", tmp_path / "g") == [f"{n}.png: missing" for n in _circuit_names()]


@pytest.mark.parametrize("name", ["space.toml", "sweep.json"])
def test_sweep_keeps_a_users_file_in_out_and_announces_nothing(cli, tmp_path, corpus, name):
    pytest.importorskip("optuna")
    out = tmp_path / "s"
    out.mkdir()
    (out / name).write_text("mine")
    space = tmp_path / "space.toml"
    space.write_text("[sweep]\ntrials = 1\nseeds = [0]\n[train]\nsteps = 1\n[search.model]\n"
                     "feed_forward = ['quantum']\n")
    rc, stdout, err = cli("sweep", "--space", space, "--data", corpus, "--out", out)
    assert rc == 2 and f"is not empty ({name})" in err and "Traceback" not in err
    assert stdout == "", "nothing announced before the error"
    assert [p.name for p in out.iterdir()] == [name] and (out / name).read_text() == "mine"


def test_sweep_report_refuses_a_link_in_the_sweep_folder(cli, tmp_path):
    pytest.importorskip("optuna")
    out = tmp_path / "s"
    out.mkdir()
    (out / "sweep.db").write_text("")
    (tmp_path / "mine.json").write_text("mine")
    (out / "sweep.json").symlink_to(tmp_path / "mine.json")
    assert "sweep.json -> " in cli.error("sweep", "--report", "--out", out)
    assert (tmp_path / "mine.json").read_text() == "mine"


def test_compare_keep_files_keeps_the_users_files(cli, tmp_path):
    keep = tmp_path / "keep"
    (keep / "twin.checkpoint").mkdir(parents=True)
    (keep / "qelm.pt").write_text("mine")
    (keep / "twin.checkpoint" / "config.toml").write_text("mine")
    line = cli.error("compare", "--n-qubits", "2", "--d-model", "8", "--n-heads", "2", "--context-len", "4",
                     "--batch-size", "1", "--keep-files", keep)
    assert "holds files that are not qelm's (qelm.pt, twin.checkpoint/)" in line
    assert (keep / "qelm.pt").read_text() == "mine" and (keep / "twin.checkpoint" / "config.toml").read_text() == "mine"


# --- the property: a random tree of user files and links is never changed ---------------------------------
_NAMES = ("qelm", "twin", "best", ".pending", "trials", "0000", "seed-0", "notes.txt", "model.safetensors",
          "checkpoint.json", "config.toml", "metrics.jsonl", "summary.json", ".lock", "README.md", "angle.txt",
          "space.toml", "sweep.json", "sweep.db", "qelm.pt", "qelm.checkpoint")
_KINDS = ("file", "dir", "link-file", "link-dir", "link-missing")

# what each command may replace, written here independently of the code: a path it writes itself
_CKPT = r"(model\.safetensors|config\.toml|config\.json|tokenizer\.json|training_state\.pt|checkpoint\.json)"
_OWN = {
    "train": re.compile(rf"(summary\.json|loss_curve\.png|\.lock|(qelm|twin|matched)(/best)?(/\.pending)?"
                        rf"(/{_CKPT}|/metrics\.jsonl)?)"),
    "gallery": re.compile(rf"({'|'.join(_circuit_names())})\.(txt|qasm|json|png)"),  # README.md: if the gallery's
    "compare": re.compile(r"(?!)"),  # a new or empty folder only
    "sweep": re.compile(r"(?!)"),  # a new sweep: a new or empty folder only
}


def _snapshot(root: Path) -> dict[str, tuple]:
    """Every entry under ``root`` (never through a link): a file's bytes, a link's target, a folder."""
    found = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = Path(dirpath) / name
            rel = path.relative_to(root).as_posix()
            if path.is_symlink():
                found[rel] = ("link", os.readlink(path))
            elif path.is_dir():
                found[rel] = ("dir",)
            else:
                found[rel] = ("file", path.read_bytes())
    return found


def _make_tree(folder: Path, outside: Path, entries) -> None:
    outside.mkdir(exist_ok=True)
    (outside / "model.safetensors").write_text("outside")
    (outside / "d").mkdir(exist_ok=True)
    (outside / "d" / "config.toml").write_text("outside")
    folder.mkdir()
    for parts, kind in entries:
        path = folder.joinpath(*parts)
        if any(p.is_symlink() or (p.exists() and not p.is_dir()) for p in [*path.parents][: len(parts) - 1]):
            continue
        if path.exists() or path.is_symlink():
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        if kind == "file":
            path.write_text(f"user {'/'.join(parts)}")
        elif kind == "dir":
            path.mkdir()
        elif kind == "link-file":
            path.symlink_to(outside / "model.safetensors")
        elif kind == "link-dir":
            path.symlink_to(outside / "d")
        else:
            path.symlink_to(outside / "missing")


def _run(command: str, folder: Path, data: Path) -> None:
    """The command's library call (what its CLI calls), on a tiny model."""
    if command == "train":
        cfg = QELMConfig(d_model=8, n_heads=2, d_hidden=16, n_layers=1, context_len=6, n_qubits=2, circuit_layers=1)
        train(cfg, data, out=folder, overwrite=True, steps=1, batch_size=2, twin=False, matched=False)
    elif command == "gallery":
        from qelm.gallery import write_gallery

        write_gallery(folder, images=False)
    elif command == "compare":
        from qelm.compare import measure_models
        from qelm.model import ClassicalLM

        measure_models({"qelm": ClassicalLM(QELMConfig(vocab_size=5, d_model=4, n_heads=1, d_hidden=4, n_layers=1,
                                                         context_len=2))}, batch_size=1, keep_dir=folder)
    else:
        from qelm.sweep import run_sweep

        space = folder.parent / "space.toml"
        space.write_text("[sweep]\ntrials = 1\nseeds = [0]\n[train]\nsteps = 1\n[search.model]\n"
                         "feed_forward = ['quantum']\n")
        run_sweep(space, data, out=folder)


_tree = st.lists(st.tuples(st.lists(st.sampled_from(_NAMES), min_size=1, max_size=3).map(tuple),
                           st.sampled_from(_KINDS)), min_size=1, max_size=6)


@pytest.mark.parametrize("command", ["train", "gallery", "compare", "sweep"])
@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(entries=_tree)
def test_no_command_changes_a_users_tree(command, entries, tmp_path_factory):
    if command == "sweep":
        pytest.importorskip("optuna")
    root = tmp_path_factory.mktemp(command)
    data = root / "corpus.txt"
    data.write_text("the cat sat on the mat. the dog ran to the log. a hen and a fox.\n" * 8)
    folder, outside = root / "out", root / "outside"
    _make_tree(folder, outside, entries)
    before, before_outside = _snapshot(folder), _snapshot(outside)
    try:
        _run(command, folder, data)
        ok = True
    except (FileExistsError, ValueError, FileNotFoundError, PermissionError, NotADirectoryError):
        ok = False
    assert _snapshot(outside) == before_outside, "a link was followed out of the folder"
    after = _snapshot(folder)
    foreign = [rel for rel, entry in before.items() if entry[0] == "link" or not _OWN[command].fullmatch(rel)
               and not (entry[0] == "dir" and any(o.startswith(rel + "/") for o in before if _OWN[command].fullmatch(o)))]
    assert not (ok and [rel for rel in foreign if before[rel][0] == "link"]), f"{command} wrote beside a link"
    for rel, entry in before.items():
        changed = rel not in after if entry[0] == "dir" else after.get(rel) != entry
        if changed:
            assert not foreign and _OWN[command].fullmatch(rel), f"{command} changed the user's {rel} ({entry[0]})"
