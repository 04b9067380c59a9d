"""wsi-pipeline: find, outline and classify every nucleus in H&E whole-slide images."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("wsi-pipeline")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0+unknown"

__all__ = ["__version__"]
