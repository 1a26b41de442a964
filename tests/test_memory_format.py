"""Sizes in memory messages: never "0.0 GiB" for a small allocation."""

import pytest

from qelm.memory import format_bytes


@pytest.mark.parametrize("n, text", [(0, "0 B"), (1000, "1000 B"), (1536, "1.5 KiB"), (48 * 2**20, "48.0 MiB"),
                                     (3.25 * 2**30, "3.2 GiB"), (2048 * 2**30, "2048.0 GiB")])
def test_format_bytes(n, text):
    assert format_bytes(n) == text
