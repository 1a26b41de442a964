"""``python -m qelm.cli``: the ``qelm`` command line."""

import sys

from . import main

sys.exit(main())
