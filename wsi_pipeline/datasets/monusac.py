"""Reader for MoNuSAC: one folder per patient holding <image>.tif and <image>.xml.

The XML lists `Annotation` elements whose `Attribute Name` is the class, each with `Region`s whose
`Vertex X= Y=` (column, row) outline one nucleus. Regions are rasterised in file order.
"Ambiguous" regions (MoNuSAC test set) are areas, not nuclei, and are skipped.
"""

from __future__ import annotations

import logging
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
from PIL import Image

from wsi_pipeline.datasets.polygons import rasterise_polygons
from wsi_pipeline.datasets.sample import Sample
from wsi_pipeline.datasets.validate import OnError, load_all
from wsi_pipeline.io.plain_image import IMAGE_SUFFIXES
from wsi_pipeline.labels import relabel

log = logging.getLogger(__name__)

MONUSAC_CLASSES = ("background", "epithelial", "lymphocyte", "neutrophil", "macrophage")
_CLASS_ID = {name: i for i, name in enumerate(MONUSAC_CLASSES) if i}
_SKIPPED = {"ambiguous"}


def rasterise_monusac_xml(xml_path: Path, shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """inst_map (1..N in region order) and type_map of one annotation file."""
    polygons: list[np.ndarray] = []
    classes: list[int] = []
    for ann in ET.parse(xml_path).getroot().iter("Annotation"):
        attr = ann.find("./Attributes/Attribute")
        cls = (attr.get("Name") if attr is not None else "") or ""
        if cls.strip().lower() in _SKIPPED:
            continue
        class_id = _CLASS_ID.get(cls.strip().lower())
        if class_id is None:
            raise ValueError(f"unknown MoNuSAC class {cls!r}")
        for region in ann.iter("Region"):
            polygons.append(np.array(
                [(float(v.get("X", "")), float(v.get("Y", ""))) for v in region.iter("Vertex")],
                dtype=np.float64).reshape(-1, 2))
            classes.append(class_id)
    # MoNuSAC outlines are not checked against the image extent (outside_tolerance_px=None).
    r = rasterise_polygons(polygons, shape, outside_tolerance_px=None)
    if r.n_dropped:
        log.debug("%s: %d region(s) fully covered by later ones", xml_path.name, r.n_dropped)
    lut = np.zeros(len(polygons) + 1, np.int32)
    lut[1:] = classes
    return relabel(r.index_map), lut[r.index_map]


def _image_for(xml_path: Path) -> Path:
    for suffix in IMAGE_SUFFIXES:
        p = xml_path.with_suffix(suffix)
        if p.exists():
            return p
    raise FileNotFoundError(f"no image ({'/'.join(IMAGE_SUFFIXES)}) next to it")


def _load(xml_path: Path, mpp: float | None) -> Sample:
    image_path = _image_for(xml_path)
    image = np.asarray(Image.open(image_path).convert("RGB"))
    inst, typ = rasterise_monusac_xml(xml_path, image.shape[:2])
    return Sample(
        name=xml_path.stem,
        image=image,
        inst_map=inst,
        type_map=typ,
        class_names=MONUSAC_CLASSES,
        mpp=mpp,
        group=xml_path.parent.name,  # the patient: never split one patient across train/val
        meta={"source": str(image_path)},
    )


def read_monusac(root: Path, *, mpp: float | None = 0.25, on_error: OnError = "fail") -> list[Sample]:
    """Every <image>.xml with an image beside it under `root` (searched recursively)."""
    xmls = sorted(Path(root).rglob("*.xml"))
    if not xmls:
        raise FileNotFoundError(f"no MoNuSAC .xml annotations under {root}")
    return load_all(xmls, lambda p: _load(p, mpp), on_error)
