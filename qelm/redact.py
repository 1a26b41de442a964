"""URL credentials kept out of what qelm prints or writes: a storage URL such as
``postgresql://user:secret@host/db`` is shown as ``postgresql://user:***@host/db`` in messages, logs,
JSON and reports (the user name stays: it says which account, and is not a secret)."""

from __future__ import annotations

import re

__all__ = ["redact", "HIDDEN"]

HIDDEN = "***"
# scheme://userinfo@ : the userinfo runs to the last '@' before the host (a password may hold '@')
_USERINFO = re.compile(r"(?P<scheme>\b[A-Za-z][A-Za-z0-9+.\-]*://)(?P<userinfo>[^/\s?#]*)@")


def _hide(match: re.Match) -> str:
    user, colon, password = match["userinfo"].partition(":")
    if not colon or password == HIDDEN:
        return match[0]
    return f"{match['scheme']}{user}:{HIDDEN}@"


def redact(text: str) -> str:
    """``text`` with the password of every URL in it replaced by ``***``.

    >>> redact("starting the sweep in postgresql://u:secretpw@127.0.0.1:1/db")
    'starting the sweep in postgresql://u:***@127.0.0.1:1/db'
    """
    return _USERINFO.sub(_hide, str(text))
