"""Per-nucleus haematoxylin and eosin optical densities, from the slide's own pixels.

A post-processing chunk task (`chunks.process_chunk`) has its window of the maps and the
nuclei it owns, labelled 1..K in window pixels; with `postproc.optical_density` on it also
reads the slide's RGB over the same window, at the maps' pixel size through the same path
inference reads its tiles (`Slide.read_region_at_mpp`, hence `resample.resize_rgb`), so that
pixel (r, c) of the window is the very pixel the network saw at map pixel (win_r0 + r,
win_c0 + c). Map pixel c covers level-0 [c*s, (c+1)*s) with s = `scale` level-0 pixels per
map pixel (`infer._read_tile` reads tile origin t at level-0 t*s; `infer._Geometry.origin`
is the centre of map pixel 0 in these terms), so the window's corner is level-0
(win_c0*s, win_r0*s).

Each nucleus pixel is deconvolved (`wsi_pipeline.deconvolution`) and the nucleus gets the
mean, sample standard deviation (n - 1, NaN for a one-pixel nucleus, as QuPath's
RunningStatistics), min and max of its haematoxylin and eosin amounts: the columns
`contract.OD_COLUMNS`. The pixels are the raw slide's, never stain-normalised: the numbers
describe the slide, as QuPath would measure it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy import ndimage

from wsi_pipeline.contract import OD_STAINS, OD_STATS
from wsi_pipeline.deconvolution import deconvolve, stain_matrix
from wsi_pipeline.postproc.config import OpticalDensityConfig

__all__ = ["SlidePixels", "nucleus_od_stats", "slide_pixels", "window_rgb"]


@dataclass(frozen=True)
class SlidePixels:
    """Where a chunk task reads the slide and how it deconvolves it (small, picklable)."""

    path: str
    slide_mpp: float  # level-0 µm/px as inference used it (maps.zarr's slide_mpp)
    reader: str  # io.ReaderName
    matrix: tuple[tuple[float, float, float], ...]  # unit stain vectors as rows (H, E, residual)
    background: tuple[float, float, float]


def slide_pixels(cfg: OpticalDensityConfig, path: str | Path, slide_mpp: float,
                 reader: str = "auto") -> SlidePixels:
    """The chunk tasks' reading and deconvolution settings for one slide."""
    m = stain_matrix(cfg.hematoxylin, cfg.eosin, cfg.residual)
    b0, b1, b2 = cfg.background
    return SlidePixels(str(path), float(slide_mpp), reader,
                       tuple((float(row[0]), float(row[1]), float(row[2])) for row in m),
                       (float(b0), float(b1), float(b2)))


def window_rgb(px: SlidePixels, r0: int, c0: int, hw: tuple[int, int], mpp: float, scale: float
               ) -> np.ndarray:
    """uint8 (h, w, 3): the slide over map pixels [r0, r0+h) x [c0, c0+w), at the maps' `mpp`."""
    from wsi_pipeline.io import open_slide

    with open_slide(px.path, mpp=px.slide_mpp, reader=px.reader) as slide:  # type: ignore[arg-type]
        return slide.read_region_at_mpp(c0 * scale, r0 * scale, (hw[1], hw[0]), mpp)


def nucleus_od_stats(labels: np.ndarray, rgb: np.ndarray, n: int, px: SlidePixels
                     ) -> dict[str, np.ndarray]:
    """float32 (n,) columns OD_COLUMNS of nuclei 1..n in `labels` (0 = none) over `rgb`."""
    labels = np.asarray(labels)
    if rgb.shape[:2] != labels.shape:
        raise ValueError(f"pixels {rgb.shape[:2]} and labels {labels.shape} differ")
    mask = labels > 0
    lab = labels[mask]
    amounts = deconvolve(rgb[mask], np.asarray(px.matrix), px.background)
    index = np.arange(1, n + 1)
    count = np.bincount(lab, minlength=n + 1)[1:].astype(np.float64)
    out: dict[str, np.ndarray] = {}
    for k, stain in enumerate(OD_STAINS):
        v = amounts[:, k]
        mean = np.bincount(lab, v, minlength=n + 1)[1:] / np.maximum(count, 1)
        dev = v - mean[lab - 1]
        with np.errstate(invalid="ignore", divide="ignore"):
            std = np.sqrt(np.bincount(lab, dev * dev, minlength=n + 1)[1:] / (count - 1))
        std[count < 2] = np.nan
        stats = {"mean": mean, "std": std,
                 "min": np.asarray(ndimage.minimum(v, lab, index), dtype=np.float64),
                 "max": np.asarray(ndimage.maximum(v, lab, index), dtype=np.float64)}
        for stat in OD_STATS:
            out[f"{stain}_od_{stat}"] = stats[stat].astype(np.float32)
    return out
