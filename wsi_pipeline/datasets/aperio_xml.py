"""Aperio ImageScope XML annotations (MoNuSeg 2018, and what ImageScope users export).

    <Annotations MicronsPerPixel="0.252700">
      <Annotation Id="1" ...><Regions><Region Id=".." ...>
          <Vertices><Vertex X="114.4" Y="109.2"/>...</Vertices>
      </Region>...</Regions></Annotation>
    </Annotations>

Vertices are level-0 pixel coordinates (x = column), float. Each Region outlines one nucleus;
they become an instance map by `polygons.rasterise_polygons` (later drawn over earlier).
`read_monuseg` reads MoNuSeg's Tissue_Images/<id>.tif + Annotations/<id>.xml layout.
"""

from __future__ import annotations

import logging
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from wsi_pipeline.datasets.polygons import rasterise_polygons
from wsi_pipeline.datasets.sample import Sample
from wsi_pipeline.datasets.validate import OnError, load_all
from wsi_pipeline.io.plain_image import IMAGE_SUFFIXES
from wsi_pipeline.labels import relabel

log = logging.getLogger(__name__)

MONUSEG_CLASSES = ("background", "nucleus")


@dataclass(frozen=True)
class AperioAnnotations:
    mpp: float | None  # the root's MicronsPerPixel, None when absent or 0
    regions: list[np.ndarray]  # (N, 2) float (x, y) vertices, file order


def read_aperio_xml(path: Path) -> AperioAnnotations:
    """Parse every Region of every Annotation; a file that is not this XML names itself."""
    try:
        root = ET.parse(path).getroot()
    except ET.ParseError as exc:
        raise ValueError(f"not a readable XML file ({exc})") from exc
    if root.tag != "Annotations":
        raise ValueError(f"root element is <{root.tag}>, not an Aperio <Annotations>")
    mpp_text = root.get("MicronsPerPixel")
    mpp = float(mpp_text) if mpp_text and float(mpp_text) > 0 else None
    regions = []
    for region in root.iter("Region"):
        try:
            xy = [(float(v.get("X", "")), float(v.get("Y", ""))) for v in region.iter("Vertex")]
        except (TypeError, ValueError) as exc:
            raise ValueError(f"region {region.get('Id')}: vertex without numeric X/Y") from exc
        regions.append(np.array(xy, dtype=np.float64).reshape(-1, 2))
    return AperioAnnotations(mpp, regions)


def aperio_instance_map(path: Path, shape: tuple[int, int]) -> tuple[np.ndarray, dict]:
    """Contiguous instance map of one XML on an image of `shape`, plus what the rule dropped."""
    ann = read_aperio_xml(path)
    if not ann.regions:
        raise ValueError("no nucleus regions in the annotation file")
    r = rasterise_polygons(ann.regions, shape)
    if r.n_dropped:
        log.info("%s: %d of %d regions drawn over completely by later ones", path.name,
                 r.n_dropped, r.n_polygons)
    return relabel(r.index_map), {"regions": r.n_polygons, "dropped_regions": r.n_dropped,
                                  "xml_mpp": ann.mpp}


def _image_for(xml_path: Path, image_dir: Path) -> Path:
    for suffix in IMAGE_SUFFIXES:
        p = image_dir / f"{xml_path.stem}{suffix}"
        if p.exists():
            return p
    raise FileNotFoundError(f"no image {xml_path.stem}{{{','.join(IMAGE_SUFFIXES)}}} in {image_dir}")


def _load(xml_path: Path, image_dir: Path, mpp: float | None, fallback_mpp: float | None) -> Sample:
    image_path = _image_for(xml_path, image_dir)
    image = np.asarray(Image.open(image_path).convert("RGB"))
    inst, info = aperio_instance_map(xml_path, image.shape[:2])
    return Sample(
        name=xml_path.stem,
        image=image,
        inst_map=inst,
        type_map=None,
        class_names=MONUSEG_CLASSES,
        mpp=next((m for m in (mpp, info["xml_mpp"], fallback_mpp) if m is not None), None),
        group=xml_path.stem,  # one TCGA tile = one source
        meta={"source": str(image_path), "annotation": str(xml_path), **info},
    )


def read_monuseg(
    root: Path,
    *,
    mpp: float | None = None,
    fallback_mpp: float | None = 0.25,
    on_error: OnError = "fail",
) -> list[Sample]:
    """MoNuSeg layout: root/Annotations/*.xml with root/Tissue_Images/<stem>.tif (or the XML and
    images side by side in root). Pixel size: `mpp` if given, else the XML's MicronsPerPixel,
    else `fallback_mpp` (every MoNuSeg tile is 40×; one of the 13 here states no size)."""
    root = Path(root)
    xml_dir = root / "Annotations" if (root / "Annotations").is_dir() else root
    image_dir = root / "Tissue_Images" if (root / "Tissue_Images").is_dir() else xml_dir
    xmls = sorted(xml_dir.glob("*.xml"))
    if not xmls:
        raise FileNotFoundError(f"no Aperio .xml annotations in {xml_dir}")
    return load_all(xmls, lambda p: _load(p, image_dir, mpp, fallback_mpp), on_error)
