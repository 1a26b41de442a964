"""qelm's version, and the distribution that installs it."""

__version__ = "0.1.0"
DISTRIBUTION = "qelm-lab"  # the name on the package index (``qelm`` there is another project); ``import qelm`` stays
URL = "https://github.com/qelm-lab/qelm"  # the project's home: the package metadata and every model card name it
