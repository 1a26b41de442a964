"""The errors qelm raises for what a user can fix, one family: :class:`QelmError`.

Each message names the bad value and the fix. The command line prints a ``QelmError`` as one line and
exits with code 2; any other exception is a bug and keeps its traceback. The value errors are also
``ValueError``, so code that catches ``ValueError`` keeps working.
"""

from __future__ import annotations

__all__ = ["QelmError", "ConfigError", "DataError", "CheckpointError", "BackendError"]


class QelmError(Exception):
    """Base of every error a user can fix: a bad setting, file, folder or backend, named in the message."""


class ConfigError(QelmError, ValueError):
    """A config field, a training, sampling, comparison, sweep or benchmark setting, or an argument is invalid."""


class DataError(QelmError, ValueError):
    """A corpus, a text, a prompt, token ids or a tokenizer file cannot be used."""


class CheckpointError(QelmError, ValueError):
    """A checkpoint or run folder is corrupt, incomplete, inconsistent, or does not hold what was asked for."""


class BackendError(QelmError, ValueError):
    """A backend, its options, a noise or mitigation spec, or a circuit on it is invalid."""
