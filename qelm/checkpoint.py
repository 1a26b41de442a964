"""Checkpoint folders: everything needed to use a trained model, or to resume training it exactly.

A checkpoint folder holds

* ``model.safetensors`` — the weights (safetensors: no pickle, so loading runs no code);
* ``config.toml`` — ``kind`` ("qelm" or "classical": which class to build) and the ``[model]`` table of
  :class:`~qelm.config.QELMConfig`;
* ``tokenizer.json`` — the tokenizer (:mod:`qelm.tokenizer`);
* ``training_state.pt`` — optional: optimizer, step, RNG states (the data sampler's too), run settings.

Every file is written to a temporary file in the same folder and moved into place with ``os.replace``, so
a killed save leaves the previous file whole. Weights and training state both record the step they were
saved at, and loading checks that they agree (a save interrupted between the two files is detected).
Loading checks every tensor against the config and says what mismatched.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import tomli_w
import torch

from ._compat import moved_names
from .config import QELMConfig, read_toml
from .config import with_backend as _with_backend  # private here: the public name is qelm.config.with_backend
from .files import atomic_path, atomic_write
from .model import QELM, ClassicalLM
from .tokenizer import Tokenizer, load_tokenizer

__all__ = ["Checkpoint", "save_checkpoint", "load_checkpoint", "atomic_write", "atomic_path", "ensure_writable_dir",
           "read_checkpoint_config", "WEIGHTS", "CONFIG", "TOKENIZER", "TRAINING_STATE"]

WEIGHTS = "model.safetensors"
CONFIG = "config.toml"
TOKENIZER = "tokenizer.json"
TRAINING_STATE = "training_state.pt"
KINDS = ("qelm", "classical")
FORMAT = 1  # version of this folder layout


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


def _kind(model: torch.nn.Module) -> str:
    if isinstance(model, ClassicalLM):
        return "classical"
    if isinstance(model, QELM):
        return "qelm"
    raise ValueError(f"save_checkpoint takes a QELM or ClassicalLM, got {type(model).__name__}")


def save_checkpoint(directory: str | os.PathLike, model: torch.nn.Module, tokenizer: Tokenizer, *,
                    training_state: dict[str, Any] | None = None) -> Path:
    """Write ``model`` (a :class:`QELM` or :class:`ClassicalLM`), its config and ``tokenizer`` into
    ``directory`` (created if needed); with ``training_state`` (a dict holding at least ``step``) also
    ``training_state.pt``. Returns the folder."""
    from safetensors.torch import save_file

    model = getattr(model, "module", model)  # a DistributedDataParallel wrapper saves its module
    kind = _kind(model)
    config: QELMConfig = model.config
    if tokenizer.vocab_size != config.vocab_size:
        raise ValueError(f"tokenizer has {tokenizer.vocab_size} tokens but the model's config says "
                         f"vocab_size={config.vocab_size}: save the tokenizer the model was trained with")
    folder = ensure_writable_dir(directory)
    metadata = {"format": "pt", "qelm_kind": kind}
    if training_state is not None:
        if "step" not in training_state:
            raise ValueError("training_state needs a 'step' entry (the optimizer steps taken)")
        metadata["step"] = str(int(training_state["step"]))
    try:
        config_text = tomli_w.dumps({"format": FORMAT, "kind": kind, "model": config.to_dict()})
    except TypeError as e:
        raise ValueError(f"config cannot be written to TOML ({e}): backend_options may hold only numbers, strings, "
                         f"booleans and tables of them") from None
    weights = {name: t.detach().to("cpu").contiguous() for name, t in model.state_dict().items()}
    # training state first, weights last: a save cut short leaves weights and state of different steps,
    # which load_checkpoint detects through the step recorded in both
    if training_state is not None:
        with atomic_path(folder / TRAINING_STATE) as tmp:
            torch.save(training_state, tmp)
    tokenizer.save(folder / TOKENIZER)
    atomic_write(folder / CONFIG, config_text)
    with atomic_path(folder / WEIGHTS) as tmp:
        save_file(weights, str(tmp), metadata=metadata)
    if training_state is None:  # a stale state from an earlier save would not match these weights
        with contextlib.suppress(FileNotFoundError):
            os.unlink(folder / TRAINING_STATE)
    return folder


@dataclass
class Checkpoint:
    """A loaded checkpoint folder. ``model`` is in eval mode."""

    model: QELM  # QELM, or ClassicalLM when kind == "classical"
    config: QELMConfig
    tokenizer: Tokenizer
    training_state: dict[str, Any] | None
    path: Path
    kind: str = "qelm"


def read_checkpoint_config(directory: str | os.PathLike) -> tuple[str, QELMConfig]:
    """``(kind, config)`` from a checkpoint folder's ``config.toml``, checked."""
    folder = Path(directory)
    path = folder / CONFIG
    if not folder.is_dir():
        raise FileNotFoundError(f"checkpoint folder {str(folder)!r} does not exist")
    if not path.is_file():
        inside = [n for n in ("qelm", "twin", "matched") if (folder / n / CONFIG).is_file()]
        hint = (f": it is a training run folder; pass one of its checkpoints, {' or '.join(str(folder / n) for n in inside)}"
                if inside else ": it is not a qelm checkpoint folder")
        raise FileNotFoundError(f"checkpoint {str(folder)!r} has no {CONFIG}{hint}")
    data = read_toml(path, what=f"checkpoint {str(folder)!r} is corrupt: {CONFIG}")
    kind = data.get("kind", "qelm")
    if kind not in KINDS:
        raise ValueError(f"checkpoint {str(folder)!r}: {CONFIG} has kind={kind!r}; expected one of {', '.join(KINDS)}")
    if not isinstance(data.get("model"), dict):
        raise ValueError(f"checkpoint {str(folder)!r} is corrupt: {CONFIG} has no [model] table")
    try:
        config = QELMConfig.from_dict(data["model"])
    except (TypeError, ValueError) as e:
        raise ValueError(f"checkpoint {str(folder)!r}: {CONFIG} is invalid: {e}") from None
    return kind, config


def load_checkpoint(directory: str | os.PathLike, *, backend: str | None = None, **backend_options: Any) -> Checkpoint:
    """Load a checkpoint folder written by :func:`save_checkpoint`. ``backend`` (and options such as
    ``shots``) run the circuits elsewhere than the saved config says; the weights are the same.

    Raises ``FileNotFoundError`` when a file is missing, ``ValueError`` naming the file and what is wrong
    when one is corrupt or the weights do not match the config, and ``BackendUnavailable`` when the
    backend cannot run here."""
    from safetensors import SafetensorError, safe_open

    folder = Path(directory)
    kind, config = read_checkpoint_config(folder)
    for name in (WEIGHTS, TOKENIZER):
        if not (folder / name).is_file():
            raise FileNotFoundError(f"checkpoint {str(folder)!r} has no {name}: the folder is incomplete "
                                    f"(an interrupted save, or files removed)")
    tokenizer = load_tokenizer(folder / TOKENIZER)
    if tokenizer.vocab_size != config.vocab_size:
        raise ValueError(f"checkpoint {str(folder)!r} does not match its config: {TOKENIZER} has "
                         f"{tokenizer.vocab_size} tokens but {CONFIG} says vocab_size={config.vocab_size}")
    config = _with_backend(config, backend, backend_options)
    model = ClassicalLM(config) if kind == "classical" else QELM(config)

    try:
        with safe_open(str(folder / WEIGHTS), framework="pt") as f:
            metadata = f.metadata() or {}
            weights = {name: f.get_tensor(name) for name in f.keys()}
    except (SafetensorError, OSError, ValueError) as e:
        raise ValueError(f"checkpoint {str(folder)!r} is corrupt: {WEIGHTS} cannot be read ({e})") from None
    _check_weights(folder, model, weights, config)
    model.load_state_dict(weights, strict=True)
    model.eval()

    state = None
    if (folder / TRAINING_STATE).is_file():
        try:
            state = torch.load(folder / TRAINING_STATE, map_location="cpu", weights_only=True)
        except Exception as e:  # torch.load raises many types (pickle, zip, runtime) on a bad file
            raise ValueError(f"checkpoint {str(folder)!r} is corrupt: {TRAINING_STATE} cannot be read "
                             f"({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})") from None
        if not isinstance(state, dict) or "step" not in state:
            raise ValueError(f"checkpoint {str(folder)!r} is corrupt: {TRAINING_STATE} has no step")
        saved_step = metadata.get("step")
        if saved_step is not None and int(saved_step) != int(state["step"]):
            raise ValueError(f"checkpoint {str(folder)!r} is inconsistent: {WEIGHTS} is from step {saved_step} but "
                             f"{TRAINING_STATE} from step {state['step']} (a save was interrupted); resume from "
                             f"another copy or start again")
    return Checkpoint(model=model, config=model.config, tokenizer=tokenizer, training_state=state, path=folder,
                      kind=kind)


def _check_weights(folder: Path, model: torch.nn.Module, weights: dict[str, torch.Tensor], config: QELMConfig) -> None:
    """Raise ``ValueError`` listing every tensor whose presence or shape differs from what ``config`` builds."""
    expected = {name: tuple(t.shape) for name, t in model.state_dict().items()}
    found = {name: tuple(t.shape) for name, t in weights.items()}
    problems = [f"{n} is {found[n]} in the file but {expected[n]} for the config"
                for n in sorted(expected.keys() & found.keys()) if expected[n] != found[n]]
    problems += [f"{n} is missing from the file" for n in sorted(expected.keys() - found.keys())]
    problems += [f"{n} in the file has no place in the config's model" for n in sorted(found.keys() - expected.keys())]
    if problems:
        shown = "; ".join(problems[:4]) + (f"; and {len(problems) - 4} more" if len(problems) > 4 else "")
        raise ValueError(f"checkpoint {str(folder)!r}: {WEIGHTS} does not match {CONFIG} "
                         f"(vocab_size={config.vocab_size}, d_model={config.d_model}, n_qubits={config.n_qubits}, "
                         f"embedding={config.embedding}, attention={config.attention}, "
                         f"feed_forward={config.feed_forward}): {shown}")


# config helpers that lived here before they moved to qelm.config
__getattr__ = moved_names(__name__, {"config_differences": "qelm.config:config_differences",
                                     "with_backend": "qelm.config:with_backend"})
