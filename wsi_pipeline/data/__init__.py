"""Dataset readers (training and evaluation only): every format becomes a list of `Sample`."""

from wsi_pipeline.data.augment import AugmentConfig, Augmenter
from wsi_pipeline.data.common import read_common, write_common
from wsi_pipeline.data.consep_patches import CONSEP_CLASSES, read_consep_patches
from wsi_pipeline.data.cpm15 import read_cpm15
from wsi_pipeline.data.dataset import NucleusDataset
from wsi_pipeline.data.hovernet_layout import read_hovernet
from wsi_pipeline.data.monusac import read_monusac
from wsi_pipeline.data.nucls import read_nucls
from wsi_pipeline.data.pannuke import read_pannuke
from wsi_pipeline.data.readers import READERS
from wsi_pipeline.data.sample import Sample
from wsi_pipeline.data.split import split_by_group
from wsi_pipeline.data.stain import StainNormConfig, build_normalizer, normalize_samples
from wsi_pipeline.data.validate import SampleError, check_sample

__all__ = [
    "CONSEP_CLASSES",
    "READERS",
    "AugmentConfig",
    "Augmenter",
    "NucleusDataset",
    "Sample",
    "SampleError",
    "StainNormConfig",
    "build_normalizer",
    "check_sample",
    "normalize_samples",
    "read_common",
    "read_consep_patches",
    "read_cpm15",
    "read_hovernet",
    "read_monusac",
    "read_nucls",
    "read_pannuke",
    "split_by_group",
    "write_common",
]
