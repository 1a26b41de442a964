"""``python -m qelm.bench``: the measurement server (:mod:`.server`) that forks one process per measurement."""

from .server import serve

serve()
