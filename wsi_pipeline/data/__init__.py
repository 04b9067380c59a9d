"""Dataset readers (training and evaluation only): every format becomes a list of `Sample`."""

from wsi_pipeline.data.sample import Sample

__all__ = ["Sample"]
