"""wsi-pipeline: find, outline and classify every nucleus in H&E whole-slide images.

The Python API (`wsi_pipeline.api`; the names load on first use, so that ``import
wsi_pipeline`` stays light for the command line):

>>> import wsi_pipeline
>>> sorted(set(wsi_pipeline.__all__) - {"__version__"})
['Model', 'ProcessingError', 'Segmentation', 'load_model', 'nuclei_frame', 'process_slide', 'run_cohort']
"""

from importlib.metadata import PackageNotFoundError, version
from typing import TYPE_CHECKING, Any

try:
    __version__ = version("wsi-pipeline")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0+unknown"

if TYPE_CHECKING:
    from wsi_pipeline.api import (
        Model,
        ProcessingError,
        Segmentation,
        load_model,
        nuclei_frame,
        process_slide,
        run_cohort,
    )

__all__ = ["Model", "ProcessingError", "Segmentation", "__version__", "load_model", "nuclei_frame",
           "process_slide", "run_cohort"]


def __getattr__(name: str) -> Any:
    """The API's names, imported from `wsi_pipeline.api` when first asked for (PEP 562)."""
    if name in __all__:
        from wsi_pipeline import api

        return getattr(api, name)
    raise AttributeError(f"module 'wsi_pipeline' has no attribute {name!r}")
