"""qelm's version, and the distribution that installs it."""

__version__ = "0.1.0"
"""qelm's version (``qelm --version`` prints it with the versions it runs on)."""
DISTRIBUTION = "qelm-lab"
"""The distribution's name on the package index (``qelm`` there is another project); ``import qelm`` stays."""
URL = "https://github.com/qelm-lab/qelm"  # the project's home: the package metadata and every model card name it
