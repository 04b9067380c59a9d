"""Network maps → nucleus instances: two-step watershed, type vote, measurements."""

from wsi_pipeline.postproc.config import PostprocConfig
from wsi_pipeline.postproc.watershed import SegmentationResult, segment_instances

__all__ = ["PostprocConfig", "SegmentationResult", "segment_instances"]
