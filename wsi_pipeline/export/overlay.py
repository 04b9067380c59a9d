"""Quick-look overlay: slide thumbnail, tissue outline, nuclei coloured by type.

Drawn at a thumbnail resolution chosen from the longest side, reading the nucleus table in
batches; nuclei are outlines where they are big enough to see and dots where they are not.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import shapely
from PIL import Image, ImageDraw
from scipy import ndimage as ndi

from wsi_pipeline.atomic import atomic_path
from wsi_pipeline.export.geojson import hex_to_rgb
from wsi_pipeline.io import SlideReadError, open_slide

log = logging.getLogger(__name__)

TISSUE_OUTLINE_RGB = (20, 20, 20)


def _background(slide_path: str | None, slide_mpp: float, thumb_mpp: float,
                size_wh: tuple[int, int]) -> np.ndarray:
    """The slide at `thumb_mpp` when its file can still be read; white otherwise."""
    w, h = size_wh
    if slide_path and Path(slide_path).is_file():
        try:
            with open_slide(slide_path, mpp=slide_mpp) as slide:
                thumb = slide.thumbnail_at_mpp(thumb_mpp)
            out = np.full((h, w, 3), 255, dtype=np.uint8)
            th, tw = min(h, thumb.shape[0]), min(w, thumb.shape[1])
            out[:th, :tw] = thumb[:th, :tw]
            return out
        except SlideReadError as err:
            log.warning("overlay without slide background: %s", err)
    return np.full((h, w, 3), 255, dtype=np.uint8)


def _tissue_outline(tissue_png: Path, size_wh: tuple[int, int]) -> np.ndarray | None:
    """Boolean (h, w) ring around the tissue mask, resized to the overlay."""
    if not tissue_png.is_file():
        return None
    with Image.open(tissue_png) as im:
        mask = np.asarray(im.convert("L").resize(size_wh, Image.Resampling.NEAREST)) > 0
    return mask & ~ndi.binary_erosion(mask, iterations=2, border_value=0)


def render_overlay(
    parquet_path: Path,
    out_path: Path,
    *,
    level0_wh: tuple[int, int],
    slide_mpp: float,
    slide_path: str | None,
    tissue_png: Path,
    class_colors: list[str],
    max_px: int = 2048,
    contour_min_px: float = 4.0,
    batch_rows: int = 65536,
) -> float:
    """Write overlay.png atomically; returns the overlay's µm per pixel."""
    down = max(1.0, max(level0_wh) / max_px)  # level-0 pixels per overlay pixel
    size_wh = (max(1, round(level0_wh[0] / down)), max(1, round(level0_wh[1] / down)))
    thumb_mpp = slide_mpp * down
    rgb = _background(slide_path, slide_mpp, thumb_mpp, size_wh)
    outline = _tissue_outline(tissue_png, size_wh)
    if outline is not None:
        rgb[outline] = TISSUE_OUTLINE_RGB
    colors = np.array([hex_to_rgb(c) for c in class_colors], dtype=np.uint8)
    image = Image.fromarray(rgb)
    draw = ImageDraw.Draw(image)
    outlines: bool | None = None  # decided on the first batch: nuclei are alike in size
    columns = ["x", "y", "area_um2", "type_id", "geometry"]
    for batch in pq.ParquetFile(parquet_path).iter_batches(batch_size=batch_rows, columns=columns):
        if not batch.num_rows:
            continue
        type_ids = batch.column("type_id").to_numpy(False).astype(np.int64)
        if outlines is None:
            diam_px = 2 * np.sqrt(batch.column("area_um2").to_numpy(False) / np.pi) / thumb_mpp
            outlines = bool(np.median(diam_px) >= contour_min_px)
        if outlines:
            geoms = shapely.from_wkb(batch.column("geometry").to_numpy(False))
            coords, owner = shapely.get_coordinates(shapely.get_exterior_ring(geoms), return_index=True)
            starts = np.flatnonzero(np.r_[True, np.diff(owner) != 0])
            for ring, k in zip(np.split(coords / down, starts[1:]), owner[starts], strict=True):
                fill = tuple(int(v) for v in colors[type_ids[k]])
                draw.polygon([tuple(p) for p in ring], outline=fill)
        else:
            c = np.clip(np.rint(batch.column("x").to_numpy(False) / down), 0, size_wh[0] - 1)
            r = np.clip(np.rint(batch.column("y").to_numpy(False) / down), 0, size_wh[1] - 1)
            rgb = np.asarray(image).copy()
            rgb[r.astype(int), c.astype(int)] = colors[type_ids]
            image = Image.fromarray(rgb)
            draw = ImageDraw.Draw(image)
    with atomic_path(out_path) as tmp:
        image.save(tmp, format="PNG")
    return thumb_mpp
