"""Colour deconvolution: RGB uint8 → optical density → stain concentrations (H, E, residual).

Ruifrok & Johnston (2001, *Anal. Quant. Cytol. Histol.* 23:291-299): light passing a stained
section is absorbed by each stain in proportion to its amount (Beer-Lambert), so in optical
density (OD) space a pixel's OD vector is a linear mix of one unit OD vector per stain:
``od = c_H * h + c_E * e + c_R * r``. With the three vectors as the rows of a matrix ``M``,
the amounts are ``c = od @ inv(M)``. Two stains span only a plane of the 3-D OD space; the
third, *residual*, vector completes the basis (whatever of a pixel's colour H and E do not
explain lands there) and is the normalised cross product ``h × e``.

Conventions are QuPath's (``ColorDeconvolutionHelper``, ``ColorDeconvolutionStains``), so
that the per-nucleus measurements mean what a QuPath user expects of "Nucleus: Hematoxylin OD
mean" and can be compared with QuPath's own cell detection on the same slide:

- OD per channel is ``max(0, -log10(max(v, 1) / background))``: **base-10** logarithm, the
  8-bit value clipped to >= 1 (no infinite OD for a black pixel) and OD clipped to >= 0
  (pixels brighter than the background are clear glass, not negative stain);
- the background (white) intensity is 255 per channel by default (QuPath's default; set it to
  the measured glass colour of a scanner that does not reach 255);
- stain vectors are normalised to unit length; the defaults are QuPath's "H&E default"
  (Hematoxylin 0.65111 0.70119 0.29049, Eosin 0.2159 0.8012 0.5581);
- the concentrations are not clipped: a pixel that H and E do not explain can give a small
  negative amount of one of them, as in QuPath.

scikit-image's `skimage.color.separate_stains` applies the same matrix algebra to
``log(rgb / 255) / log(1e-6)``, i.e. OD in base 10 divided by 6 (its rgb is floored at 1e-6
instead of 1/255), then clips at 0: with the same matrix its concentrations are ours / 6
wherever ours are positive (tests/test_deconvolution.py checks this).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = [
    "QUPATH_BACKGROUND",
    "QUPATH_EOSIN",
    "QUPATH_HEMATOXYLIN",
    "concentrations",
    "deconvolve",
    "od_lut",
    "rgb_to_od",
    "stain_matrix",
]

#: QuPath's "H&E default" stain vectors (RGB optical densities; normalised before use).
QUPATH_HEMATOXYLIN: tuple[float, float, float] = (0.65111, 0.70119, 0.29049)
QUPATH_EOSIN: tuple[float, float, float] = (0.2159, 0.8012, 0.5581)
#: QuPath's default background (white) intensity per channel.
QUPATH_BACKGROUND: tuple[float, float, float] = (255.0, 255.0, 255.0)


def _unit(v: Sequence[float] | np.ndarray, what: str) -> np.ndarray:
    a = np.asarray(v, dtype=np.float64).reshape(-1)
    if a.shape != (3,) or not np.all(np.isfinite(a)):
        raise ValueError(f"{what}: a stain vector is three finite numbers (R, G, B OD), got {v!r}")
    norm = float(np.linalg.norm(a))
    if norm == 0:
        raise ValueError(f"{what}: the stain vector is all zeros")
    return a / norm


def stain_matrix(stain1: Sequence[float] = QUPATH_HEMATOXYLIN, stain2: Sequence[float] = QUPATH_EOSIN,
                 stain3: Sequence[float] | None = None) -> np.ndarray:
    """(3, 3) float64: the unit stain vectors as rows; `stain3` None = the residual, the
    normalised cross product of the first two (QuPath's ``StainVector.cross3``)."""
    s1, s2 = _unit(stain1, "stain 1"), _unit(stain2, "stain 2")
    s3 = _unit(np.cross(s1, s2), "residual (stains 1 and 2 are parallel)") if stain3 is None \
        else _unit(stain3, "stain 3")
    m = np.stack([s1, s2, s3])
    if abs(np.linalg.det(m)) < 1e-6:
        raise ValueError("the three stain vectors are (nearly) linearly dependent: no deconvolution")
    return m


def od_lut(background: Sequence[float] = QUPATH_BACKGROUND) -> np.ndarray:
    """(3, 256) float64: the OD of every 8-bit value in each channel, given its background
    intensity: ``max(0, -log10(max(v, 1) / background))`` (QuPath's ``makeODLUT``)."""
    bg = np.asarray(background, dtype=np.float64).reshape(-1)
    if bg.shape != (3,) or not np.all((bg > 0) & (bg <= 255)):
        raise ValueError(f"background: three intensities in (0, 255], got {background!r}")
    v = np.maximum(np.arange(256, dtype=np.float64), 1.0)
    return np.maximum(0.0, -np.log10(v[None, :] / bg[:, None]))


def rgb_to_od(rgb: np.ndarray, background: Sequence[float] = QUPATH_BACKGROUND) -> np.ndarray:
    """float64 (..., 3) optical densities (base 10) of uint8 RGB pixels (..., 3)."""
    rgb = np.asarray(rgb)
    if rgb.dtype != np.uint8 or rgb.shape[-1:] != (3,):
        raise ValueError(f"need uint8 RGB (..., 3), got {rgb.dtype} {rgb.shape}")
    lut = od_lut(background)
    return np.stack([lut[k][rgb[..., k]] for k in range(3)], axis=-1)


def concentrations(od: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    """Stain amounts (..., 3), in the matrix's row order, of OD vectors (..., 3): ``od @ inv(M)``."""
    return np.asarray(od, dtype=np.float64) @ np.linalg.inv(np.asarray(matrix, dtype=np.float64))


def deconvolve(rgb: np.ndarray, matrix: np.ndarray | None = None,
               background: Sequence[float] = QUPATH_BACKGROUND) -> np.ndarray:
    """float64 (..., 3) amounts of stain 1, 2 and 3 (default: H, E, residual) in uint8 RGB pixels."""
    return concentrations(rgb_to_od(rgb, background), stain_matrix() if matrix is None else matrix)
