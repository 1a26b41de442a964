"""What the files of a checkpoint folder hold (:mod:`qelm.model_files` writes them and finds the newest
complete checkpoint): the config (``config.toml``, or a Hugging Face folder's ``config.json``), the training
state and the weights, each checked, with errors that name the folder and the file."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open

from .config import QELMConfig, read_toml
from .errors import CheckpointError
from .model_files import CONFIG, CONFIG_JSON, KINDS, TRAINING_STATE, WEIGHTS, snapshot

__all__ = ["read_checkpoint_config", "read_config", "read_training_state", "read_state", "read_weights", "check_weights"]


def read_checkpoint_config(directory: str | os.PathLike) -> tuple[str, QELMConfig]:
    """``(kind, config)`` from a checkpoint folder's ``config.toml`` (or a Hugging Face folder's
    ``config.json``), checked; one consistent save even while a run saves into the folder (:func:`snapshot`)."""
    with snapshot(directory) as (paths, _):
        return read_config(Path(directory), paths)


def read_config(folder: Path, paths: dict[str, Path]) -> tuple[str, QELMConfig]:
    """``(kind, config)`` of a folder whose files ``paths`` (:func:`checkpoint_files`) are checked."""
    if CONFIG in paths:
        name = CONFIG
        data = read_toml(paths[CONFIG], what=f"checkpoint {str(folder)!r} is corrupt: {CONFIG}")
        if not isinstance(data.get("model"), dict):
            raise CheckpointError(f"checkpoint {str(folder)!r} is corrupt: {CONFIG} has no [model] table")
        fields = data["model"]
    else:  # a Hugging Face folder: the fields flat, beside format and kind
        name = CONFIG_JSON
        try:
            data = json.loads(paths[CONFIG_JSON].read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
            raise CheckpointError(f"checkpoint {str(folder)!r} is corrupt: {CONFIG_JSON} cannot be read ({e})") from None
        if not isinstance(data, dict):
            raise CheckpointError(f"checkpoint {str(folder)!r} is corrupt: {CONFIG_JSON} is not a JSON object")
        fields = {k: v for k, v in data.items() if k not in ("format", "kind")}
    kind = data.get("kind", "qelm")
    if kind not in KINDS:
        raise CheckpointError(f"checkpoint {str(folder)!r}: {name} has kind={kind!r}; expected one of {', '.join(KINDS)}")
    try:
        config = QELMConfig.from_dict(fields)
    except (TypeError, ValueError) as e:
        raise CheckpointError(f"checkpoint {str(folder)!r}: {name} is invalid: {e}") from None
    return kind, config


def read_training_state(directory: str | os.PathLike) -> dict[str, Any] | None:
    """The training state of the newest complete checkpoint in ``directory`` (``None`` when it saved
    none), checked like :func:`load_checkpoint` checks it, without building the model."""
    folder = Path(directory)
    with snapshot(folder) as (paths, _):
        return read_state(folder, paths[TRAINING_STATE]) if TRAINING_STATE in paths else None


def read_state(folder: Path, path: Path) -> dict[str, Any]:
    """The training state in ``path`` of checkpoint ``folder``, checked: a dict with its ``step``."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch.load raises many types (pickle, zip, runtime) on a bad file
        if "Weights only load failed" in str(e):  # torch's advice there (weights_only=False) would run its code
            raise CheckpointError(f"checkpoint {str(folder)!r} is corrupt: {TRAINING_STATE} cannot be read: it is "
                                  f"damaged or holds Python objects a qelm save never writes (loading those would run "
                                  f"code, so they are refused): restore it from a copy, or remove it to use the "
                                  f"weights without resuming") from None
        raise CheckpointError(f"checkpoint {str(folder)!r} is corrupt: {TRAINING_STATE} cannot be read "
                         f"({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})") from None
    if not isinstance(state, dict) or "step" not in state:
        raise CheckpointError(f"checkpoint {str(folder)!r} is corrupt: {TRAINING_STATE} has no step")
    return state


def read_weights(folder: Path, paths: dict[str, Path]) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """``(tensors, safetensors metadata)`` of a checked folder's weights file. Only safetensors is read:
    nothing runs code."""
    try:
        with safe_open(str(paths[WEIGHTS]), framework="pt") as f:
            metadata = f.metadata() or {}
            weights = {name: f.get_tensor(name) for name in f.keys()}  # noqa: SIM118 (safe_open is no mapping)
    except (SafetensorError, OSError, ValueError) as e:
        raise CheckpointError(f"checkpoint {str(folder)!r} is corrupt: {WEIGHTS} cannot be read ({e})") from None
    return weights, metadata


def check_weights(folder: Path, model: torch.nn.Module, weights: dict[str, torch.Tensor], config: QELMConfig,
                   config_file: str = CONFIG) -> None:
    """Raise ``ValueError`` listing every tensor whose presence or shape differs from what ``config`` builds."""
    expected = {name: tuple(t.shape) for name, t in model.state_dict().items()}
    found = {name: tuple(t.shape) for name, t in weights.items()}
    problems = [f"{n} is {found[n]} in the file but {expected[n]} for the config"
                for n in sorted(expected.keys() & found.keys()) if expected[n] != found[n]]
    problems += [f"{n} is missing from the file" for n in sorted(expected.keys() - found.keys())]
    problems += [f"{n} in the file has no place in the config's model" for n in sorted(found.keys() - expected.keys())]
    if problems:
        shown = "; ".join(problems[:4]) + (f"; and {len(problems) - 4} more" if len(problems) > 4 else "")
        raise CheckpointError(f"checkpoint {str(folder)!r}: {WEIGHTS} does not match {config_file} "
                         f"(vocab_size={config.vocab_size}, d_model={config.d_model}, n_qubits={config.n_qubits}, "
                         f"embedding={config.embedding}, attention={config.attention}, "
                         f"feed_forward={config.feed_forward}): {shown}")
