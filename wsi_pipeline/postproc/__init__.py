"""Network maps → nucleus instances: two-step watershed, type vote, measurements.

The names below load on first use (PEP 562), so importing `postproc.config` (the settings a
run's config validates) does not import the segmentation stack (scikit-image, scipy).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

#: public name -> the module that defines it
_LAZY = {
    "PostprocConfig": "wsi_pipeline.postproc.config",
    "SegmentationResult": "wsi_pipeline.postproc.watershed",
    "segment_instances": "wsi_pipeline.postproc.watershed",
}

__all__ = ["PostprocConfig", "SegmentationResult", "segment_instances"]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later look-ups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))


if TYPE_CHECKING:
    from wsi_pipeline.postproc.config import PostprocConfig
    from wsi_pipeline.postproc.watershed import SegmentationResult, segment_instances
