"""wsi-pipeline: find, outline and classify every nucleus in H&E whole-slide images.

The Python API is `wsi_pipeline.api`; its names are handed out here, imported on first use, so
that ``import wsi_pipeline`` (the command line, every stage's ``__version__``) stays light:

>>> import wsi_pipeline
>>> sorted(set(wsi_pipeline.__all__) - {"__version__"})
['Model', 'ProcessingError', 'Segmentation', 'load_model', 'nuclei_frame', 'process_slide', 'run_cohort']
"""

import importlib
from importlib.metadata import PackageNotFoundError, version
from typing import Any

try:
    __version__ = version("wsi-pipeline")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0+unknown"

__all__ = ["Model", "ProcessingError", "Segmentation", "__version__", "load_model", "nuclei_frame",
           "process_slide", "run_cohort"]


def __getattr__(name: str) -> Any:
    """The API's names, from `wsi_pipeline.api` when first asked for (PEP 562)."""
    if name in __all__:
        return getattr(importlib.import_module("wsi_pipeline.api"), name)
    raise AttributeError(f"module 'wsi_pipeline' has no attribute {name!r}")
