"""Dataset readers (training and evaluation only): every format becomes a list of `Sample`."""

from wsi_pipeline.data.augment import AugmentConfig, Augmenter
from wsi_pipeline.data.consep_patches import CONSEP_CLASSES, read_consep_patches
from wsi_pipeline.data.dataset import NucleusDataset
from wsi_pipeline.data.sample import Sample
from wsi_pipeline.data.split import split_by_group
from wsi_pipeline.data.stain import StainNormConfig, build_normalizer, normalize_samples
from wsi_pipeline.data.validate import SampleError, check_sample, relabel_contiguous

__all__ = [
    "CONSEP_CLASSES",
    "AugmentConfig",
    "Augmenter",
    "NucleusDataset",
    "Sample",
    "SampleError",
    "StainNormConfig",
    "build_normalizer",
    "check_sample",
    "normalize_samples",
    "read_consep_patches",
    "relabel_contiguous",
    "split_by_group",
]
