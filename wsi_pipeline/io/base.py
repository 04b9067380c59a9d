"""The reader interface every slide backend implements.

Backends only know how to read a rectangle of one pyramid level; picking the level and
resampling to the pixel size the model wants is shared here, so every backend resamples
the same way. Resampling happens per requested region (a tile, a thumbnail block): the
whole slide is never resampled in memory.
"""

from __future__ import annotations

import logging
import math
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Self

import numpy as np
from PIL import Image

log = logging.getLogger(__name__)

# Level downsamples are stored rounded (2.0005 for a nominal 2): treat "almost <=" as <=.
_DOWNSAMPLE_TOLERANCE = 1e-2
# Largest region (level pixels per side) one thumbnail block reads, to keep memory flat.
_THUMB_BLOCK_LEVEL_PX = 2048


class SlideReadError(RuntimeError):
    """A slide could not be opened or read; names the file and says why."""

    def __init__(self, path: str | Path, reason: str) -> None:
        self.path = Path(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")


class MissingMppError(SlideReadError):
    """The slide carries no pixel size and none was given."""

    def __init__(self, path: str | Path) -> None:
        super().__init__(
            path,
            "no pixel size (mpp) in the slide's metadata; pass it explicitly (--mpp MICRONS_PER_PIXEL)",
        )


def white_composite(rgba: np.ndarray) -> np.ndarray:
    """RGBA -> RGB over white: areas outside the scanned region read as glass, not black."""
    rgb = rgba[..., :3]
    alpha = rgba[..., 3]
    if alpha.min() == 255:
        return np.ascontiguousarray(rgb)
    a = alpha[..., None].astype(np.uint16)
    out = (rgb.astype(np.uint16) * a + 255 * (255 - a) + 127) // 255
    return out.astype(np.uint8)


class Slide(ABC):
    """A multi-resolution RGB image with a known (or user-given) level-0 pixel size."""

    def __init__(self, path: str | Path, mpp: float | None = None) -> None:
        self.path = Path(path)
        if mpp is not None and not (mpp > 0 and math.isfinite(mpp)):
            raise ValueError(f"mpp must be a positive number, got {mpp!r}")
        self._mpp_override = mpp
        self._levels: tuple[tuple[int, int], ...] = ()
        self._downsamples: tuple[float, ...] = ()

    def _set_levels(self, dimensions, downsamples) -> None:
        """Backends call this once they have opened the file."""
        self._levels = tuple((int(w), int(h)) for w, h in dimensions)
        self._downsamples = tuple(float(d) for d in downsamples)

    @property
    def level_dimensions(self) -> tuple[tuple[int, int], ...]:
        """(W, H) of every pyramid level, level 0 first."""
        return self._levels

    @property
    def level_downsamples(self) -> tuple[float, ...]:
        """Downsample of every level relative to level 0."""
        return self._downsamples

    # -- what a backend provides -------------------------------------------------------------

    @abstractmethod
    def _native_mpp(self) -> float | None:
        """Level-0 microns per pixel from the file's metadata, or None if it has none."""

    @abstractmethod
    def _read_level(self, level: int, x0: int, y0: int, w: int, h: int) -> np.ndarray:
        """uint8 (h, w, 3) of `level` starting at level-0 pixel (x0, y0); white outside."""

    def close(self) -> None:
        """Release file handles."""

    # -- shared behaviour --------------------------------------------------------------------
    @property
    def dimensions(self) -> tuple[int, int]:
        return self.level_dimensions[0]

    @property
    def mpp(self) -> float:
        """Level-0 microns per pixel; the user's value wins over the file's."""
        if self._mpp_override is not None:
            return float(self._mpp_override)
        native = self._native_mpp()
        if native is None:
            raise MissingMppError(self.path)
        return native

    def best_level_for_downsample(self, downsample: float) -> int:
        """The level with the largest downsample not above `downsample` (never upsample a level)."""
        best = 0
        for i, ds in enumerate(self.level_downsamples):
            if ds <= downsample * (1 + _DOWNSAMPLE_TOLERANCE) and ds >= self.level_downsamples[best]:
                best = i
        return best

    def read_region_at_mpp(
        self, x0: float, y0: float, size_wh: tuple[int, int], target_mpp: float
    ) -> np.ndarray:
        """uint8 (h, w, 3) at `target_mpp` whose top-left corner is level-0 point (x0, y0).

        Output pixel (r, c) covers level-0 [x0 + c*s, x0 + (c+1)*s) with s = target_mpp / mpp.
        Read from the best level and resampled (antialiased when shrinking) to the target grid.
        """
        w, h = int(size_wh[0]), int(size_wh[1])
        need = target_mpp / self.mpp
        level = self.best_level_for_downsample(need)
        ds = self.level_downsamples[level]
        f = need / ds  # output pixel size in level pixels
        xl, yl = x0 / ds, y0 / ds
        if abs(f - 1) < 1e-9 and float(xl).is_integer() and float(yl).is_integer() and level == 0:
            return self._read_level(0, int(x0), int(y0), w, h)
        pad = math.ceil(max(f, 1.0)) + 1  # filter support beyond the box
        ix0, iy0 = math.floor(xl) - pad, math.floor(yl) - pad
        ix1, iy1 = math.ceil(xl + w * f) + pad, math.ceil(yl + h * f) + pad
        gx0, gy0 = round(ix0 * ds), round(iy0 * ds)  # level-0 origin the backend is asked for
        raw = self._read_level(level, gx0, gy0, ix1 - ix0, iy1 - iy0)
        bx, by = xl - gx0 / ds, yl - gy0 / ds
        img = Image.fromarray(raw).resize(
            (w, h), Image.Resampling.BICUBIC if f < 1 else Image.Resampling.BILINEAR,
            box=(bx, by, bx + w * f, by + h * f),
        )
        return np.asarray(img)

    def size_at_mpp(self, mpp: float) -> tuple[int, int]:
        """(W, H) of the whole slide on a grid of `mpp` pixels (partial last pixels included)."""
        s = mpp / self.mpp
        w0, h0 = self.dimensions
        return max(1, math.ceil(w0 / s - 1e-6)), max(1, math.ceil(h0 / s - 1e-6))

    def thumbnail_at_mpp(self, mpp: float) -> np.ndarray:
        """uint8 RGB of the whole slide at `mpp`, assembled block by block to bound memory."""
        tw, th = self.size_at_mpp(mpp)
        need = mpp / self.mpp
        level_ds = self.level_downsamples[self.best_level_for_downsample(need)]
        block = max(16, int(_THUMB_BLOCK_LEVEL_PX / max(need / level_ds, 1.0)))
        out = np.empty((th, tw, 3), np.uint8)
        s = need  # level-0 pixels per thumbnail pixel
        for r in range(0, th, block):
            for c in range(0, tw, block):
                bw, bh = min(block, tw - c), min(block, th - r)
                out[r : r + bh, c : c + bw] = self.read_region_at_mpp(c * s, r * s, (bw, bh), mpp)
        return out

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        mpp = self._mpp_override if self._mpp_override is not None else self._native_mpp()
        return f"{type(self).__name__}({str(self.path)!r}, dimensions={self.dimensions}, mpp={mpp})"
