"""ImageJ/Fiji ROI sets (CryoNuSeg, and what ImageJ users export): one ROI per nucleus in a
`RoiSet.zip`, read with the `roifile` package.

CryoNuSeg ships each tile as a zip holding the image (<id>.tif), `RoiSet.zip` and `Centroid.txt`;
`read_cryonuseg` reads those zips as they are, or folders with the same content. Polygon,
freehand and traced ROIs are outlines; rectangles and ovals are taken by their bounds. ROIs
become an instance map by `polygons.rasterise_polygons` (later ROIs drawn over earlier ones).
"""

from __future__ import annotations

import io
import logging
import zipfile
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from wsi_pipeline.datasets.polygons import rasterise_polygons
from wsi_pipeline.datasets.sample import Sample

if TYPE_CHECKING:
    from roifile import ImagejRoi
from wsi_pipeline.datasets.validate import OnError, load_all
from wsi_pipeline.io.plain_image import IMAGE_SUFFIXES
from wsi_pipeline.labels import relabel

log = logging.getLogger(__name__)

CRYONUSEG_CLASSES = ("background", "nucleus")
ROISET_NAME = "RoiSet.zip"


def roi_outline(roi: ImagejRoi) -> np.ndarray:
    """(N, 2) float (x, y) outline of one ImageJ ROI."""
    from roifile import ROI_TYPE

    if roi.roitype in (ROI_TYPE.RECT, ROI_TYPE.OVAL):
        x0, y0, x1, y1 = roi.left, roi.top, roi.right, roi.bottom
        if roi.roitype == ROI_TYPE.RECT:
            return np.array([(x0, y0), (x1, y0), (x1, y1), (x0, y1)], dtype=np.float64)
        t = np.linspace(0, 2 * np.pi, 64, endpoint=False)
        cx, cy, rx, ry = (x0 + x1) / 2, (y0 + y1) / 2, (x1 - x0) / 2, (y1 - y0) / 2
        return np.stack([cx + rx * np.cos(t), cy + ry * np.sin(t)], axis=1)
    xy = np.asarray(roi.coordinates(), dtype=np.float64)
    if xy.ndim != 2 or xy.shape[1] != 2:
        raise ValueError(f"ROI {roi.name!r} of type {roi.roitype!r} has no single outline")
    return xy


def read_roiset(data: bytes) -> list[np.ndarray]:
    """Outlines of every .roi in a RoiSet.zip (given as bytes), in the zip's order."""
    from roifile import ImagejRoi

    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
    except zipfile.BadZipFile as exc:
        raise ValueError(f"{ROISET_NAME} is not a zip archive") from exc
    names = [n for n in archive.namelist() if n.lower().endswith(".roi")]
    return [roi_outline(ImagejRoi.frombytes(archive.read(n))) for n in names]


def _members(source: Path) -> tuple[bytes, bytes, str]:
    """(image bytes, RoiSet.zip bytes, image name) of a CryoNuSeg zip or folder."""
    if source.is_dir():
        images = sorted(p for p in source.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if not images or not (source / ROISET_NAME).is_file():
            raise FileNotFoundError(f"needs one image and {ROISET_NAME}")
        return images[0].read_bytes(), (source / ROISET_NAME).read_bytes(), images[0].name
    with zipfile.ZipFile(source) as z:
        names = z.namelist()
        members = sorted(n for n in names if Path(n).suffix.lower() in IMAGE_SUFFIXES)
        roisets = [n for n in names if Path(n).name == ROISET_NAME]
        if not members or not roisets:
            raise FileNotFoundError(f"zip holds no image and {ROISET_NAME} ({len(names)} members)")
        return z.read(members[0]), z.read(roisets[0]), members[0]


def _load(source: Path, mpp: float | None) -> Sample:
    from PIL import Image

    image_bytes, roiset, image_name = _members(source)
    image = np.asarray(Image.open(io.BytesIO(image_bytes)).convert("RGB"))
    outlines = read_roiset(roiset)
    if not outlines:
        raise ValueError(f"{ROISET_NAME} holds no ROI")
    r = rasterise_polygons(outlines, image.shape[:2])
    if r.n_dropped:
        log.info("%s: %d of %d ROIs drawn over completely", source.name, r.n_dropped, r.n_polygons)
    name = source.stem if source.is_file() else source.name
    return Sample(
        name=name,
        image=image,
        inst_map=relabel(r.index_map),
        type_map=None,
        class_names=CRYONUSEG_CLASSES,
        mpp=mpp,
        group=name,
        meta={"source": f"{source}:{image_name}", "rois": r.n_polygons, "dropped_rois": r.n_dropped},
    )


def read_cryonuseg(root: Path, *, mpp: float | None = 0.25, on_error: OnError = "fail") -> list[Sample]:
    """Every CryoNuSeg tile under root: `*.zip` with an image and RoiSet.zip inside, or folders
    holding both. mpp: CryoNuSeg is scanned at 40× (0.25 µm/px); the TIFFs state no unit."""
    root = Path(root)
    sources = sorted(p for p in root.iterdir() if p.suffix.lower() == ".zip" and p.name != ROISET_NAME)
    sources += sorted(p for p in root.iterdir() if p.is_dir() and (p / ROISET_NAME).is_file())
    if not sources:
        raise FileNotFoundError(f"no CryoNuSeg zips or folders with {ROISET_NAME} in {root}")
    return load_all(sources, lambda p: _load(p, mpp), on_error)
