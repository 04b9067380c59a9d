"""Network maps → nucleus instances: two-step watershed, type vote, measurements.

The names below load on first use (PEP 562), so importing `postproc.config` (the settings a
run's config validates) does not import the segmentation stack (scikit-image, scipy).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from wsi_pipeline.lazy import lazy_attributes

#: public name -> the module that defines it
_LAZY = {
    "PostprocConfig": "wsi_pipeline.postproc.config",
    "SegmentationResult": "wsi_pipeline.postproc.watershed",
    "segment_instances": "wsi_pipeline.postproc.watershed",
}

__all__ = ["PostprocConfig", "SegmentationResult", "segment_instances"]


__getattr__, __dir__ = lazy_attributes(__name__, _LAZY)


if TYPE_CHECKING:
    from wsi_pipeline.postproc.config import PostprocConfig
    from wsi_pipeline.postproc.watershed import SegmentationResult, segment_instances
