"""The checkpoint folder format: everything needed to use a trained model, or to resume training it exactly.
This module writes the files and finds the newest complete checkpoint among them;
:mod:`qelm.model_contents` reads what they hold. Neither knows a model class: :mod:`qelm.model` builds a
model from what they read, and :mod:`qelm.checkpoint` saves and loads a model with its tokenizer.

A checkpoint folder holds

* ``model.safetensors`` — the weights (safetensors: no pickle, so loading runs no code);
* ``config.toml`` — ``kind`` ("qelm" or "classical": which class to build) and the ``[model]`` table of
  :class:`~qelm.config.QELMConfig`;
* ``config.json`` — the same, flat, as Hugging Face reads it: with ``model.safetensors`` the folder is what
  ``QELM.save_pretrained`` writes and ``QELM.from_pretrained`` reads (:data:`CONFIG_JSON`);
* ``tokenizer.json`` — the tokenizer (:mod:`qelm.tokenizer`);
* ``training_state.pt`` — optional: optimizer, step, RNG states (the data sampler's too), run settings;
* ``checkpoint.json`` — the manifest: the step, every file above with its size and sha256, and an
  optional ``info`` table (the best checkpoint of a run records its step and validation loss there).

One format, two readers. :func:`qelm.checkpoint.load_checkpoint` also loads a Hugging Face folder (``model.safetensors``,
``config.json`` and a ``tokenizer.json`` saved beside them), and ``QELM.from_pretrained`` loads a
checkpoint folder, so neither needs converting; :func:`write_pretrained` writes the Hugging Face files.

A save commits as one unit. Every file is first written into the hidden folder ``.pending/`` beside
them, and its manifest last: the moment that manifest exists, the new checkpoint is complete. The files
then move into place one rename at a time and the manifest follows. A save killed before its manifest
leaves the previous checkpoint whole (the pending files are discarded by the next save or resume); one
killed after it is the newest complete checkpoint, read from ``.pending/`` and the files already moved,
and the next save or resume finishes moving it. Loading checks every file against the manifest and names
the one that is wrong, then checks every tensor against the config. A folder without a manifest (written
by an older qelm, or by hand) loads unchecked.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast

import safetensors.torch
import tomli_w
import torch

from .config import QELMConfig
from .disk import says_disk_full
from .errors import CheckpointError, DataError
from .files import atomic_path, atomic_write, fsync_path, make_ordinary, remove_stray_temps, sha256_file
from .paths import wrong_kind
from .tokenizer import Tokenizer

__all__ = ["WEIGHTS", "CONFIG", "CONFIG_JSON", "TOKENIZER", "TRAINING_STATE", "MANIFEST", "PENDING", "BEST", "FILES", "KINDS",
           "ensure_writable_dir", "config_texts", "model_weights", "write_checkpoint", "has_checkpoint", "checkpoint_files",
           "snapshot", "recover_checkpoint", "read_manifest", "check_pretrained_folder", "write_pretrained"]

WEIGHTS = "model.safetensors"
CONFIG = "config.toml"
CONFIG_JSON = "config.json"  # the Hugging Face config: the same fields, flat
TOKENIZER = "tokenizer.json"
TRAINING_STATE = "training_state.pt"
MANIFEST = "checkpoint.json"
PENDING = ".pending"  # the save in progress: complete once its manifest is there
BEST = "best"  # a training run keeps its best checkpoint by validation in this sub-folder of each model's
FILES = (WEIGHTS, CONFIG, CONFIG_JSON, TOKENIZER, TRAINING_STATE)
KINDS = ("qelm", "classical")
FORMAT = 2  # version of this folder layout (2: the manifest)


def ensure_writable_dir(path: str | os.PathLike) -> Path:
    """Create folder ``path`` (and parents) and prove a file can be written in it; otherwise raise
    ``PermissionError`` naming the folder."""
    p = Path(path)
    try:
        p.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=p):
            pass
    except OSError as e:
        raise PermissionError(f"output folder {str(p)!r} is not writable ({e.strerror or e}): choose another "
                              f"folder with --out") from None
    return p


def config_texts(kind: str, config: QELMConfig) -> tuple[str, str]:
    """``(config.toml, config.json)`` of a model: the same fields, in qelm's TOML and Hugging Face's JSON."""
    try:
        toml_text = tomli_w.dumps({"format": FORMAT, "kind": kind, "model": config.to_dict()})
    except TypeError as e:
        raise CheckpointError(f"config cannot be written to TOML ({e}): backend_options may hold only numbers, strings, "
                         f"booleans and tables of them") from None
    json_text = json.dumps({"format": FORMAT, "kind": kind, **config.to_dict()}, indent=2, sort_keys=True) + "\n"
    return toml_text, json_text


def model_weights(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The model's tensors on the CPU; ``ValueError`` naming those that hold NaN or infinity."""
    weights = {name: t.detach().to("cpu").contiguous() for name, t in model.state_dict().items()}
    bad = [name for name, t in weights.items() if t.is_floating_point() and not bool(torch.isfinite(t).all())]
    if bad:
        raise CheckpointError(f"the model's weights hold NaN or infinity ({', '.join(bad[:4])}"
                         f"{f' and {len(bad) - 4} more' if len(bad) > 4 else ''}): a diverged model is not saved")
    return weights


@says_disk_full(lambda directory, *args, **kwargs: directory)  # a full disk: one line naming the folder
def write_checkpoint(directory: str | os.PathLike, kind: str, model: torch.nn.Module, tokenizer: Tokenizer, *,
                     training_state: dict[str, Any] | None = None, info: dict[str, Any] | None = None) -> Path:
    """Write ``model`` (one of ``kind``: its ``config`` and its weights, :func:`model_weights`) and
    ``tokenizer`` into ``directory`` (created if needed); with ``training_state`` (a dict holding at least
    ``step``) also ``training_state.pt``; ``info`` (JSON values) goes into the manifest. The save commits
    as one unit (module docstring). Returns the folder."""
    config = cast(QELMConfig, model.config)
    if tokenizer.vocab_size != config.vocab_size:
        raise DataError(f"tokenizer has {tokenizer.vocab_size} tokens but the model's config says "
                         f"vocab_size={config.vocab_size}: save the tokenizer the model was trained with")
    metadata = {"format": "pt", "qelm_kind": kind}
    if training_state is not None:
        if "step" not in training_state:
            raise CheckpointError("training_state needs a 'step' entry (the optimizer steps taken)")
        metadata["step"] = str(int(training_state["step"]))
    config_text, config_json = config_texts(kind, config)
    weights = model_weights(model)
    folder = ensure_writable_dir(directory)
    recover_checkpoint(folder)
    pending = folder / PENDING
    if pending.exists():  # an interrupted save recover_checkpoint could not finish: never part of a checkpoint
        shutil.rmtree(pending)
    pending.mkdir()
    safetensors.torch.save_file(weights, str(pending / WEIGHTS), metadata=metadata)
    (pending / CONFIG).write_text(config_text, encoding="utf-8")
    (pending / CONFIG_JSON).write_text(config_json, encoding="utf-8")
    (pending / TOKENIZER).write_text(tokenizer.to_json(), encoding="utf-8")
    if training_state is not None:
        torch.save(training_state, pending / TRAINING_STATE)
    names = [n for n in FILES if (pending / n).is_file()]
    for name in names:
        make_ordinary(pending / name)  # safetensors writes a private file
        fsync_path(pending / name)
    manifest = {"format": FORMAT, "kind": kind, "step": None if training_state is None else int(training_state["step"]),
                "files": {name: _describe(pending / name) for name in names}}
    if info is not None:
        manifest["info"] = info
    atomic_write(pending / MANIFEST, json.dumps(manifest, indent=1) + "\n")  # the commit: complete from here on
    fsync_path(pending / MANIFEST)
    fsync_path(pending)
    _publish(folder)
    return folder


def _describe(path: Path) -> dict[str, Any]:
    return {"bytes": path.stat().st_size, "sha256": sha256_file(path)}


def _read_manifest(path: Path, folder: Path) -> dict[str, Any]:
    try:
        text = path.read_bytes()
    except OSError as e:
        raise CheckpointError(f"checkpoint {str(folder)!r} is corrupt: {MANIFEST} cannot be read ({e})") from None
    return _read_manifest_text(text, folder)


def _read_manifest_text(text: bytes, folder: Path) -> dict[str, Any]:
    try:
        manifest = json.loads(text.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise CheckpointError(f"checkpoint {str(folder)!r} is corrupt: {MANIFEST} cannot be read ({e})") from None
    files = manifest.get("files") if isinstance(manifest, dict) else None
    described = isinstance(files, dict) and all(isinstance(v, dict) and {"bytes", "sha256"} <= set(v) for v in files.values())
    if not isinstance(files, dict) or not described or not {WEIGHTS, CONFIG, TOKENIZER} <= set(files) \
            or not set(files) <= set(FILES):
        raise CheckpointError(f"checkpoint {str(folder)!r} is corrupt: {MANIFEST} does not list the checkpoint's files "
                         f"with their sizes and sha256")
    return manifest


def _resolve(folder: Path) -> dict[str, Path] | None:
    """The files of the newest complete checkpoint in ``folder``, each checked against its manifest;
    ``None`` for a folder without a manifest (an older layout: its files are read unchecked)."""
    pending_manifest = folder / PENDING / MANIFEST
    where: tuple[Path, ...]
    if pending_manifest.is_file():  # a committed save not yet (fully) moved into place: the newest
        manifest, where = _read_manifest(pending_manifest, folder), (folder / PENDING, folder)
    elif (folder / MANIFEST).is_file():
        manifest, where = _read_manifest(folder / MANIFEST, folder), (folder,)
    else:
        return None
    paths = {}
    for name, expected in manifest["files"].items():
        path = next((d / name for d in where if (d / name).is_file()), None)
        if path is None:
            raise FileNotFoundError(f"checkpoint {str(folder)!r} has no {name}, which its {MANIFEST} lists: the "
                                    f"folder is incomplete (files removed)")
        if path.stat().st_size != expected["bytes"] or sha256_file(path) != expected["sha256"]:
            raise CheckpointError(f"checkpoint {str(folder)!r} is corrupt: {name} is not the file that was saved (its size "
                             f"or sha256 differs from {MANIFEST}): it was edited or damaged; restore it, or remove "
                             f"{MANIFEST} to load the files as they are, unchecked")
        paths[name] = path
    return paths


def has_checkpoint(directory: str | os.PathLike) -> bool:
    """Whether ``directory`` holds a checkpoint (complete or not: loading it says which)."""
    folder = Path(directory)
    return any((folder / p).is_file() for p in (MANIFEST, f"{PENDING}/{MANIFEST}", CONFIG, WEIGHTS))


SNAPSHOT_TRIES = 40  # reads of a checkpoint that a running save keeps changing, before giving up


def _manifest_state(folder: Path) -> tuple[bytes | None, bytes | None]:
    """The two manifests' bytes (pending, in place): what a concurrent commit or publish changes."""
    def read(path: Path) -> bytes | None:
        try:
            return path.read_bytes()
        except OSError:
            return None

    return read(folder / PENDING / MANIFEST), read(folder / MANIFEST)


def _read_verified(folder: Path) -> tuple[dict[str, Any], dict[str, bytes]] | None:
    """``(manifest, {file name: bytes})`` of the newest complete checkpoint, every file read once and
    checked against the manifest; ``None`` for a folder without one. A file moving from ``.pending/`` into
    place while it is read is found where it went (moves only go that way)."""
    candidates: tuple[tuple[Path, tuple[Path, ...]], ...] = (
        (folder / PENDING / MANIFEST, (folder / PENDING, folder)), (folder / MANIFEST, (folder,)))
    for path, dirs in candidates:
        try:
            text = path.read_bytes()
        except FileNotFoundError:
            continue
        manifest, where = _read_manifest_text(text, folder), dirs
        break
    else:
        return None
    contents = {}
    for name, expected in manifest["files"].items():
        data = None
        for d in where:
            try:
                data = (d / name).read_bytes()
                break
            except FileNotFoundError:
                continue
        if data is None:
            raise FileNotFoundError(f"checkpoint {str(folder)!r} has no {name}, which its {MANIFEST} lists: the "
                                    f"folder is incomplete (files removed)")
        if len(data) != expected["bytes"] or hashlib.sha256(data).hexdigest() != expected["sha256"]:
            raise CheckpointError(f"checkpoint {str(folder)!r} is corrupt: {name} is not the file that was saved (its "
                                  f"size or sha256 differs from {MANIFEST}): it was edited or damaged; restore it, or "
                                  f"remove {MANIFEST} to load the files as they are, unchecked")
        contents[name] = data
    return manifest, contents


@contextlib.contextmanager
def snapshot(directory: str | os.PathLike) -> Iterator[tuple[dict[str, Path], dict[str, Any] | None]]:
    """Yield ``(paths, manifest)`` of one consistent checkpoint in ``directory``, even while a training run
    saves into it: every file is read once, checked against the manifest read before it, and the reads
    are retried when a save commits or moves its files meanwhile (an error is raised only when the folder
    did not change: then it is real). The checked bytes are copied into a private folder, so what is
    parsed is exactly what was checked. A folder without a manifest is read in place, unchecked
    (``manifest`` is then ``None``)."""
    folder = Path(directory)
    if not folder.is_dir():
        checkpoint_files(folder)  # its error: missing, or the wrong kind
    for attempt in range(SNAPSHOT_TRIES):
        before = _manifest_state(folder)
        try:
            found = _read_verified(folder)
        except (ValueError, OSError):
            if _manifest_state(folder) == before:
                raise
            time.sleep(min(0.002 * 2**attempt, 0.1))  # a save committed meanwhile: read the newer one
            continue
        if found is None:  # no manifest: an older layout or a Hugging Face folder
            yield checkpoint_files(folder), None
            return
        manifest, contents = found
        with tempfile.TemporaryDirectory(prefix="qelm-checkpoint-") as tmp:
            for name, data in contents.items():
                Path(tmp, name).write_bytes(data)
            yield {name: Path(tmp, name) for name in contents}, manifest
        return
    raise CheckpointError(f"checkpoint {str(folder)!r} changed {SNAPSHOT_TRIES} times while it was read (a run is "
                          f"saving into it): try again, or read a copy of it")


def checkpoint_files(directory: str | os.PathLike) -> dict[str, Path]:
    """``{file name: path}`` of the newest complete checkpoint in ``directory``, every file checked against
    the manifest (``ValueError`` names a file that differs, ``FileNotFoundError`` a missing one). Only
    ``training_state.pt`` may be absent (and, in a Hugging Face folder, which has ``config.json`` for
    ``config.toml``, ``tokenizer.json``). Reads only: a save another process is finishing is read where
    it lies."""
    folder = Path(directory)
    if wrong_kind(folder, "folder"):
        raise NotADirectoryError(f"checkpoint folder {str(folder)!r} {wrong_kind(folder, 'folder')}: pass a checkpoint "
                                 f"folder (e.g. runs/demo/qelm)")
    if not folder.is_dir():
        raise FileNotFoundError(f"checkpoint folder {str(folder)!r} does not exist")
    paths = _resolve(folder)
    if paths is None:  # an older layout: the files as they are
        paths = {name: folder / name for name in FILES if (folder / name).is_file()}
        has_config = CONFIG in paths or CONFIG_JSON in paths
        if not has_config and (folder / PENDING).exists():
            raise FileNotFoundError(f"checkpoint {str(folder)!r} holds no complete checkpoint yet: its first save "
                                    f"was interrupted")
        if not has_config:
            inside = [n for n in ("qelm", "twin", "matched") if (folder / n / CONFIG).is_file() or
                      (folder / n / MANIFEST).is_file() or (folder / n / PENDING / MANIFEST).is_file()]
            hint = (f": it is a training run folder; pass one of its checkpoints, "
                    f"{' or '.join(str(folder / n) for n in inside)}" if inside else ": it is not a qelm checkpoint folder")
            raise FileNotFoundError(f"checkpoint {str(folder)!r} has no {CONFIG}{hint}")
        for name in (WEIGHTS,) if CONFIG not in paths else (WEIGHTS, TOKENIZER):
            if name not in paths:
                raise FileNotFoundError(f"checkpoint {str(folder)!r} has no {name}: the folder is incomplete "
                                        f"(an interrupted save, or files removed)")
    return paths


def recover_checkpoint(directory: str | os.PathLike) -> None:
    """Bring ``directory`` to its newest complete checkpoint: finish moving a committed save into place, or
    discard the files of one killed before it committed, and the temporary files of killed writes. Only
    for the process that writes the folder (a training run holding its lock)."""
    folder = Path(directory)
    pending = folder / PENDING
    if (pending / MANIFEST).is_file():
        _resolve(folder)  # every file of the committed save is there and whole
        _publish(folder)
    elif pending.exists():
        shutil.rmtree(pending)
    if folder.is_dir():
        remove_stray_temps(folder, FILES + (MANIFEST,))


def _publish(folder: Path) -> None:
    """Move a committed save from ``.pending/`` into place: its files, then the removal of a training state
    it does not have, then its manifest, then the empty ``.pending/``. Each step is one rename or unlink,
    and the state between any two of them resolves to this save (:func:`_resolve`)."""
    pending = folder / PENDING
    manifest = _read_manifest(pending / MANIFEST, folder)
    for name in FILES:
        if (pending / name).is_file():
            os.replace(pending / name, folder / name)
    for name in FILES:
        if name not in manifest["files"]:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(folder / name)  # a stale state would not match these weights
    os.replace(pending / MANIFEST, folder / MANIFEST)
    shutil.rmtree(pending)  # only temporary files of the save can be left in it
    fsync_path(folder)


def read_manifest(directory: str | os.PathLike) -> dict[str, Any] | None:
    """The manifest of the newest complete checkpoint in ``directory`` (``None`` for a folder without one:
    an older layout, or a Hugging Face folder). Its files are not checked here (:func:`checkpoint_files`)."""
    folder = Path(directory)
    for path in (folder / PENDING / MANIFEST, folder / MANIFEST):
        if path.is_file():
            return _read_manifest(path, folder)
    return None


def check_pretrained_folder(directory: str | os.PathLike) -> None:
    """Refuse (``ValueError``) to write Hugging Face files into a qelm checkpoint folder: its manifest would
    no longer match them."""
    if read_manifest(directory) is not None:
        raise CheckpointError(f"folder {str(directory)!r} holds a qelm checkpoint; save_pretrained would leave its "
                         f"{MANIFEST} out of date: update it with save_checkpoint, or choose another folder")


def write_pretrained(directory: str | os.PathLike, kind: str, model: torch.nn.Module) -> Path:
    """Write ``model.safetensors`` and ``config.json`` of ``model`` (one of ``kind``) into ``directory`` (what
    ``QELM.save_pretrained`` writes, each file atomically). A qelm checkpoint folder (one with a manifest)
    is refused: its manifest would no longer match; update it with :func:`qelm.checkpoint.save_checkpoint`."""
    config_json = config_texts(kind, cast(QELMConfig, model.config))[1]
    weights = model_weights(model)
    folder = ensure_writable_dir(directory)
    check_pretrained_folder(folder)
    with atomic_path(folder / WEIGHTS) as tmp:
        safetensors.torch.save_file(weights, str(tmp), metadata={"format": "pt", "qelm_kind": kind})
    atomic_write(folder / CONFIG_JSON, config_json)
    return folder
