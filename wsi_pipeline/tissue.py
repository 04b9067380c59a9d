"""Tissue detection on a low-resolution thumbnail.

Stained tissue is coloured; glass, scanner background and most dust are grey. So the
mask thresholds HSV saturation at a fraction of its Otsu threshold (Otsu alone splits dense
from pale tissue, not tissue from glass), floored by absolute minimums on saturation and
optical density so that an empty slide (whose Otsu threshold splits noise) yields no tissue.
Clean-up sizes are in µm / µm² and converted with the thumbnail's pixel size.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image
from pydantic import BaseModel, ConfigDict, Field
from scipy import ndimage as ndi
from skimage.filters import threshold_otsu
from skimage.morphology import disk, remove_small_objects

from wsi_pipeline.atomic import atomic_path, write_text_atomic

log = logging.getLogger(__name__)


class TissueConfig(BaseModel):
    """Tissue detection parameters; sizes in microns so they hold at any magnification."""

    model_config = ConfigDict(extra="forbid")

    thumb_mpp: float = Field(8.0, gt=0, description="pixel size (µm) of the thumbnail the mask is computed on")
    otsu_fraction: float = Field(0.5, gt=0, le=1, description="saturation threshold = this x Otsu's threshold")
    min_saturation: float = Field(0.05, ge=0, le=1, description="floor on the saturation threshold")
    min_optical_density: float = Field(0.05, ge=0, description="mean RGB optical density a tissue pixel must exceed")
    min_object_um2: float = Field(20_000.0, ge=0, description="tissue pieces smaller than this are specks: removed")
    max_hole_um2: float = Field(50_000.0, ge=0, description="holes smaller than this inside tissue are filled")
    dilate_um: float = Field(24.0, ge=0, description="margin added around tissue so edge nuclei are inferred")


@dataclass(frozen=True)
class TissueResult:
    """mask: bool (H, W) at `mpp` (dilated: what gets inferred); mm2: area before dilation."""

    mask: np.ndarray
    mpp: float
    mm2: float

    @property
    def empty(self) -> bool:
        return not bool(self.mask.any())


def saturation_and_od(rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """HSV saturation in [0, 1] and mean optical density -log10(I/255) per pixel."""
    x = rgb.astype(np.float32)
    mx, mn = x.max(axis=2), x.min(axis=2)
    sat = np.where(mx > 0, (mx - mn) / np.maximum(mx, 1e-6), 0.0).astype(np.float32)
    od = -np.log10(np.clip(x, 1.0, 255.0) / 255.0).mean(axis=2)
    return sat, od.astype(np.float32)


def detect_tissue(thumb: np.ndarray, mpp: float, cfg: TissueConfig | None = None) -> TissueResult:
    """Tissue mask of an RGB thumbnail whose pixels are `mpp` microns wide."""
    cfg = cfg or TissueConfig()
    sat, od = saturation_and_od(thumb)
    threshold = cfg.min_saturation
    if sat.min() < sat.max():
        threshold = max(threshold, cfg.otsu_fraction * float(threshold_otsu(sat)))
    mask = (od > cfg.min_optical_density) & (sat > threshold)
    px_area = mpp * mpp
    mask = remove_small_objects(mask, max_size=max(int(cfg.min_object_um2 / px_area) - 1, 0))
    mask = _fill_small_holes(mask, max(int(cfg.max_hole_um2 / px_area) - 1, 0))
    mm2 = float(mask.sum()) * px_area / 1e6
    radius = round(cfg.dilate_um / mpp)
    if radius > 0 and mask.any():
        mask = ndi.binary_dilation(mask, structure=disk(radius))
    log.debug("tissue: saturation threshold %.3f, %.3f mm2", threshold, mm2)
    return TissueResult(mask=mask, mpp=mpp, mm2=mm2)


def _fill_small_holes(mask: np.ndarray, max_size: int) -> np.ndarray:
    """Fill enclosed background regions of at most `max_size` px (not background at the image border,
    which skimage's remove_small_holes would fill on a small, empty thumbnail)."""
    holes = ndi.binary_fill_holes(mask) & ~mask
    big_holes = remove_small_objects(holes, max_size=max_size)
    return mask | (holes & ~big_holes)


def save_tissue(result: TissueResult, out_dir: Path) -> None:
    """Write tissue.png (mask) and tissue.json ({mm2, thumb_mpp}) atomically into `out_dir`."""
    out_dir.mkdir(parents=True, exist_ok=True)
    with atomic_path(out_dir / "tissue.png") as tmp:
        Image.fromarray(result.mask.astype(np.uint8) * 255).save(tmp, format="PNG")
    write_text_atomic(out_dir / "tissue.json", json.dumps({"mm2": result.mm2, "thumb_mpp": result.mpp,
                                                           "shape": list(result.mask.shape)}))
