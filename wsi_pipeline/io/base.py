"""The interface every slide reader implements.

Readers only know how to read a rectangle of one pyramid level; picking the level and
resampling to the pixel size the model wants is shared here, so every reader resamples
the same way. Resampling happens per requested region (a tile, a thumbnail block): the
whole slide is never resampled in memory.
"""

from __future__ import annotations

import logging
import math
from abc import ABC, abstractmethod
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Self

import numpy as np

from wsi_pipeline.resample import resize_rgb

log = logging.getLogger(__name__)

# Level downsamples are stored rounded (2.0005 for a nominal 2): treat "almost <=" as <=.
_DOWNSAMPLE_TOLERANCE = 1e-2
# Largest region (level pixels per side) one thumbnail block reads, to keep memory flat.
_THUMB_BLOCK_LEVEL_PX = 2048
# Largest level region one read may ask a reader for (≈0.8 GB of RGB); beyond it the pixel size
# is wrong, and a clear error beats a MemoryError.
_MAX_READ_PX = 1 << 28


class SlideReadError(RuntimeError):
    """A slide could not be opened or read; names the file and says why."""

    def __init__(self, path: str | Path, reason: str) -> None:
        self.path = Path(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")


#: Typical level-0 pixel sizes, quoted wherever a user has to supply one.
TYPICAL_MPP_HINT = "typical values: ≈0.25 µm/px for 40× scans, ≈0.5 µm/px for 20×"

#: Where a slide's pixel size came from: its file ("metadata", or "objective_power" = 10/power,
#: a guess), a run's settings ("fallback" for files without one, "override", a slide list's
#: "csv" column), or a library caller's explicit value ("given").
MPP_SOURCES = ("metadata", "objective_power", "fallback", "override", "csv", "given")


class MissingMppError(SlideReadError):
    """The slide carries no pixel size and none was given.

    The message says what to do and what values are typical, and quotes the objective power
    where the file has one: a user who must type a number should not have to look it up.
    """

    def __init__(self, path: str | Path, objective_power: float | None = None) -> None:
        power = f" (the file gives objective power {objective_power:g}×)" if objective_power else ""
        super().__init__(
            path,
            f"no pixel size (mpp) in the slide's metadata{power}; pass it explicitly "
            f"(--mpp MICRONS_PER_PIXEL); {TYPICAL_MPP_HINT}",
        )
        self.objective_power = objective_power


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
        self._mpp_source = "given" if mpp is not None else None
        self._native: tuple[float, str] | None | bool = False  # False: not looked up yet
        self._levels: tuple[tuple[int, int], ...] = ()
        self._downsamples: tuple[float, ...] = ()

    def _set_levels(self, dimensions: Iterable[Sequence[float]], downsamples: Iterable[float]) -> None:
        """Readers call this once they have opened the file."""
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

    # -- what a reader provides --------------------------------------------------------------

    @abstractmethod
    def _native_mpp(self) -> float | None:
        """Level-0 microns per pixel from the file's metadata, or None if it has none."""

    def _native_mpp_with_source(self) -> tuple[float, str] | None:
        """The file's pixel size and which of MPP_SOURCES it is; readers that can guess it
        from the objective power say so, since a guess deserves a note in the slide's log."""
        mpp = self._native_mpp()
        return None if mpp is None else (float(mpp), "metadata")

    @property
    def objective_power(self) -> float | None:
        """The scanner objective (20, 40, ...) where the file records one; None otherwise."""
        return None

    @abstractmethod
    def _read_level(self, level: int, x0: int, y0: int, w: int, h: int) -> np.ndarray:
        """uint8 (h, w, 3) of `level` starting at level-0 pixel (x0, y0); white outside."""

    def close(self) -> None:  # noqa: B027 (a no-op default: readers without handles keep it)
        """Release file handles."""

    # -- shared behaviour --------------------------------------------------------------------
    @property
    def dimensions(self) -> tuple[int, int]:
        return self.level_dimensions[0]

    def native_mpp(self) -> tuple[float, str] | None:
        """(µm/px, source) from the file itself, looked up once (the lookup may log a warning)."""
        if self._native is False:
            self._native = self._native_mpp_with_source()
        return self._native  # type: ignore[return-value]

    def use_mpp(self, mpp: float, source: str) -> None:
        """Read the slide at `mpp` from now on, recording where that value came from."""
        if not (mpp > 0 and math.isfinite(mpp)):
            raise ValueError(f"mpp must be a positive number, got {mpp!r}")
        if source not in MPP_SOURCES:
            raise ValueError(f"unknown mpp source {source!r}; one of {', '.join(MPP_SOURCES)}")
        self._mpp_override, self._mpp_source = float(mpp), source

    @property
    def mpp(self) -> float:
        """Level-0 microns per pixel; a value given to the reader wins over the file's."""
        if self._mpp_override is not None:
            return float(self._mpp_override)
        native = self.native_mpp()
        if native is None:
            raise MissingMppError(self.path, self.objective_power)
        return native[0]

    @property
    def mpp_source(self) -> str:
        """Which of MPP_SOURCES `mpp` comes from (raises MissingMppError like `mpp`)."""
        if self._mpp_source is not None:
            return self._mpp_source
        native = self.native_mpp()
        if native is None:
            raise MissingMppError(self.path, self.objective_power)
        return native[1]

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
        gx0, gy0 = round(ix0 * ds), round(iy0 * ds)  # level-0 origin the reader is asked for
        if (ix1 - ix0) * (iy1 - iy0) > _MAX_READ_PX:  # e.g. a pixel size 1e6 times too small
            raise SlideReadError(
                self.path, f"reading {w}x{h} px at {target_mpp:g} µm/px would need a "
                f"{ix1 - ix0}x{iy1 - iy0} px region of level {level}: is the pixel size "
                f"{self.mpp:g} µm/px right?")
        raw = self._read_level(level, gx0, gy0, ix1 - ix0, iy1 - iy0)
        bx, by = xl - gx0 / ds, yl - gy0 / ds
        return resize_rgb(raw, (w, h), box=(bx, by, bx + w * f, by + h * f))

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
        native = self.native_mpp()
        mpp = self._mpp_override if self._mpp_override is not None else (native[0] if native else None)
        return f"{type(self).__name__}({str(self.path)!r}, dimensions={self.dimensions}, mpp={mpp})"
