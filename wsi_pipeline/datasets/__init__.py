"""Dataset readers (training and evaluation only): every format becomes a list of `Sample`.

The names below load on first use (PEP 562), so importing one reader or `wsi_pipeline.datasets.sample`
does not import torch (`NucleusDataset`) and every other reader with it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from wsi_pipeline.lazy import lazy_attributes

#: public name -> the module that defines it
_LAZY = {
    "Augmenter": "wsi_pipeline.datasets.augment",
    "read_common": "wsi_pipeline.datasets.common",
    "write_common": "wsi_pipeline.datasets.common",
    "CONSEP_CLASSES": "wsi_pipeline.datasets.consep_patches",
    "read_consep_patches": "wsi_pipeline.datasets.consep_patches",
    "read_cpm15": "wsi_pipeline.datasets.cpm15",
    "read_brca_m2c": "wsi_pipeline.datasets.brca_m2c",
    "read_crchistophenotypes": "wsi_pipeline.datasets.crchistophenotypes",
    "NucleusDataset": "wsi_pipeline.datasets.dataset",
    "read_hovernet": "wsi_pipeline.datasets.hovernet_layout",
    "read_monusac": "wsi_pipeline.datasets.monusac",
    "read_nucls": "wsi_pipeline.datasets.nucls",
    "read_pannuke": "wsi_pipeline.datasets.pannuke",
    "READERS": "wsi_pipeline.datasets.readers",
    "Sample": "wsi_pipeline.datasets.sample",
    "split_by_group": "wsi_pipeline.datasets.split",
    "build_normalizer": "wsi_pipeline.stain",
    "normalize_samples": "wsi_pipeline.stain",
    "SampleError": "wsi_pipeline.datasets.validate",
    "check_sample": "wsi_pipeline.datasets.validate",
}

__all__ = [
    "Augmenter",
    "CONSEP_CLASSES",
    "NucleusDataset",
    "READERS",
    "Sample",
    "SampleError",
    "build_normalizer",
    "check_sample",
    "normalize_samples",
    "read_brca_m2c",
    "read_common",
    "read_consep_patches",
    "read_cpm15",
    "read_crchistophenotypes",
    "read_hovernet",
    "read_monusac",
    "read_nucls",
    "read_pannuke",
    "split_by_group",
    "write_common",
]


__getattr__, __dir__ = lazy_attributes(__name__, _LAZY)


if TYPE_CHECKING:
    from wsi_pipeline.datasets.augment import Augmenter
    from wsi_pipeline.datasets.brca_m2c import read_brca_m2c
    from wsi_pipeline.datasets.common import read_common, write_common
    from wsi_pipeline.datasets.consep_patches import CONSEP_CLASSES, read_consep_patches
    from wsi_pipeline.datasets.cpm15 import read_cpm15
    from wsi_pipeline.datasets.crchistophenotypes import read_crchistophenotypes
    from wsi_pipeline.datasets.dataset import NucleusDataset
    from wsi_pipeline.datasets.hovernet_layout import read_hovernet
    from wsi_pipeline.datasets.monusac import read_monusac
    from wsi_pipeline.datasets.nucls import read_nucls
    from wsi_pipeline.datasets.pannuke import read_pannuke
    from wsi_pipeline.datasets.readers import READERS
    from wsi_pipeline.datasets.sample import Sample
    from wsi_pipeline.datasets.split import split_by_group
    from wsi_pipeline.datasets.validate import SampleError, check_sample
    from wsi_pipeline.stain import build_normalizer, normalize_samples
