"""Tissue detection on a low-resolution thumbnail.

Stained tissue is coloured; glass, scanner background and most dust are grey. So the
mask thresholds HSV saturation at a fraction of its Otsu threshold (Otsu alone splits dense
from pale tissue, not tissue from glass), floored by absolute minimums on saturation and
optical density so that an empty slide (whose Otsu threshold splits noise) yields no tissue.
Clean-up sizes are in µm / µm² and converted with the thumbnail's pixel size.

Holes inside the section are filled only up to `max_hole_um2`: small pale spots (capillary
lumens, a missed pale nucleus) are tissue, but clefts, tears and large lumens are not, and
counting them would inflate mm² and lower every density. The rule and what it filled and kept
are recorded in tissue.json (and from there in summary.json). tissue.png shows both masks: 255
where tissue is measured (mm²), 128 for the margin added by `dilate_um`, which is inferred so
that edge nuclei are whole but never counted as area.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image
from scipy import ndimage as ndi
from skimage.filters import threshold_otsu
from skimage.morphology import disk, remove_small_objects

from wsi_pipeline.atomic import atomic_path, write_text_atomic
from wsi_pipeline.contract import TISSUE_JSON, TISSUE_PNG
from wsi_pipeline.inference.config import TissueConfig

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TissueResult:
    """mask: bool (H, W) at `mpp` (dilated: what gets inferred); mm2: area before dilation.

    measured: the mask before dilation (what mm2 counts; None: same as `mask`); holes: the hole
    rule and what it did (see `hole_record`)."""

    mask: np.ndarray
    mpp: float
    mm2: float
    measured: np.ndarray | None = None
    holes: dict | None = None

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
    before_fill = mask.sum()
    mask, big_holes = _fill_small_holes(mask, int(cfg.max_hole_um2 / px_area))
    measured = mask
    mm2 = float(mask.sum()) * px_area / 1e6
    radius = round(cfg.dilate_um / mpp)
    if radius > 0 and mask.any():
        mask = ndi.binary_dilation(mask, structure=disk(radius))
    holes = hole_record(cfg, filled_px=int(measured.sum()) - int(before_fill),
                        kept=big_holes, px_area=px_area)
    log.debug("tissue: saturation threshold %.3f, %.3f mm2, %d holes kept", threshold, mm2,
              holes["kept_holes"])
    return TissueResult(mask=mask, mpp=mpp, mm2=mm2, measured=measured, holes=holes)


def hole_record(cfg: TissueConfig, *, filled_px: int, kept: np.ndarray, px_area: float) -> dict:
    """Which hole rule made the mask and what it did, in words and numbers, for tissue.json and
    summary.json: a density is only comparable between slides measured by the same rule."""
    n_kept = int(ndi.label(kept)[1]) if kept.any() else 0
    return {
        "rule": f"enclosed holes up to {cfg.max_hole_um2:g} µm² filled; larger holes stay holes "
                f"and are not tissue; mm² measured before the {cfg.dilate_um:g} µm margin",
        "max_hole_um2": float(cfg.max_hole_um2),
        "dilate_um": float(cfg.dilate_um),
        "filled_um2": filled_px * px_area,
        "kept_holes": n_kept,
        "kept_um2": float(kept.sum()) * px_area,
    }


def _fill_small_holes(mask: np.ndarray, max_size: int) -> tuple[np.ndarray, np.ndarray]:
    """Fill enclosed background regions of at most `max_size` px (not background at the image border,
    which skimage's remove_small_holes would fill on a small, empty thumbnail); returns the filled
    mask and the holes left open."""
    holes = ndi.binary_fill_holes(mask) & ~mask
    big_holes = remove_small_objects(holes, max_size=max_size)
    return mask | (holes & ~big_holes), big_holes


#: tissue.png values: measured tissue (counted in mm²), the inferred margin around it, glass.
PNG_TISSUE, PNG_MARGIN = 255, 128


def save_tissue(result: TissueResult, out_dir: Path) -> None:
    """Write tissue.png and tissue.json ({mm2, thumb_mpp, shape, holes}) atomically into `out_dir`.

    tissue.png > 0 is the inferred mask; == PNG_TISSUE the measured one (holes left open show
    as holes, unless narrower than the margin)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    png = result.mask.astype(np.uint8) * PNG_MARGIN
    png[result.mask if result.measured is None else result.measured] = PNG_TISSUE
    with atomic_path(out_dir / TISSUE_PNG) as tmp:
        Image.fromarray(png).save(tmp, format="PNG")
    write_text_atomic(out_dir / TISSUE_JSON, json.dumps({"mm2": result.mm2, "thumb_mpp": result.mpp,
                                                           "shape": list(result.mask.shape),
                                                           "holes": result.holes}))
