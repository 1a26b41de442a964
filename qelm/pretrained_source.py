"""Where ``from_pretrained`` reads from: a local folder, or a Hugging Face Hub repository id. A name that
looks like a path (a ``Path``; an absolute, ``./``, ``~`` or ``..`` path; more than one ``/``; a name
whose first part exists here; one that is not a valid repo id) is local, and a missing one is an error
naming the folder at once: it is never sent to the Hub. Only a repo id (``owner/name``) is downloaded."""

from __future__ import annotations

import os
from pathlib import Path

from huggingface_hub.utils import validate_repo_id

__all__ = ["local_folder_or_repo_id"]


def _looks_like_a_path(name: str) -> bool:
    if os.path.isabs(name) or name.startswith((".", "~")) or "\\" in name or name.endswith("/"):
        return True
    parts = name.split("/")
    if len(parts) > 2 or ".." in parts or Path(parts[0]).exists():
        return True
    try:
        validate_repo_id(name)
    except Exception:  # HFValidationError: not a repo id, so a path
        return True
    return False


def local_folder_or_repo_id(name: str | os.PathLike) -> Path | str:
    """The local folder ``name`` names (checked to be a folder), or ``name`` as a Hub repo id.

    Raises ``FileNotFoundError`` naming a missing local folder, ``NotADirectoryError`` for a file."""
    path = Path(name).expanduser()
    if path.is_dir():
        return path
    if path.exists():
        raise NotADirectoryError(f"{str(name)!r} is a file, not a folder: from_pretrained reads a folder "
                                 f"(save_pretrained's, or a qelm checkpoint) or a Hub repo id 'owner/name'")
    if isinstance(name, os.PathLike) or _looks_like_a_path(str(name)):
        raise FileNotFoundError(f"folder {str(name)!r} does not exist (from {os.getcwd()!r}): check the path; "
                                f"from_pretrained downloads only a Hub repo id 'owner/name', and this is a local path")
    return str(name)
