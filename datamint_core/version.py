"""The installed version of datamint, read from the distribution's metadata."""

from importlib import metadata as _metadata

try:
    __version__ = _metadata.version("datamint")
except _metadata.PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0+unknown"
