"""Every dataset reader by format name, for the `convert` command and training configs."""

from __future__ import annotations

from collections.abc import Callable

from wsi_pipeline.datasets.aperio_xml import read_monuseg
from wsi_pipeline.datasets.brca_m2c import read_brca_m2c
from wsi_pipeline.datasets.coco import read_coco
from wsi_pipeline.datasets.common import read_common
from wsi_pipeline.datasets.consep_patches import read_consep_patches
from wsi_pipeline.datasets.cpm15 import read_cpm15
from wsi_pipeline.datasets.crchistophenotypes import read_crchistophenotypes
from wsi_pipeline.datasets.hovernet_layout import read_hovernet
from wsi_pipeline.datasets.imagej_roi import read_cryonuseg
from wsi_pipeline.datasets.monusac import read_monusac
from wsi_pipeline.datasets.nucls import read_nucls
from wsi_pipeline.datasets.pannuke import read_pannuke
from wsi_pipeline.datasets.qupath_geojson import read_qupath_geojson
from wsi_pipeline.datasets.sample import Sample

READERS: dict[str, Callable[..., list[Sample]]] = {
    "brca-m2c": read_brca_m2c,
    "coco": read_coco,
    "common": read_common,
    "consep-patches": read_consep_patches,
    "cpm15": read_cpm15,
    "crchistophenotypes": read_crchistophenotypes,
    "cryonuseg": read_cryonuseg,
    "hovernet": read_hovernet,
    "monusac": read_monusac,
    "monuseg": read_monuseg,
    "nucls": read_nucls,
    "pannuke": read_pannuke,
    "qupath-geojson": read_qupath_geojson,
}
