"""``python -m qelm``: the ``qelm`` command line."""

import sys

from .cli import main

sys.exit(main())
