"""Whole-slide images through OpenSlide (SVS, NDPI, MRXS, generic tiled TIFF, ...).

OpenSlide's C library is thread-safe and ctypes releases the GIL during its calls, so
one handle can serve several reader threads.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path

import numpy as np
import openslide

from wsi_pipeline.io.base import Slide, SlideReadError, white_composite

log = logging.getLogger(__name__)

_CM_PER_UNIT = {"centimeter": 1.0, "inch": 2.54}


def mpp_from_properties(props: dict[str, str], path: Path) -> float | None:
    """Level-0 microns per pixel from OpenSlide properties (see `mpp_and_source_from_properties`)."""
    found = mpp_and_source_from_properties(props, path)
    return None if found is None else found[0]


def objective_power_from_properties(props: dict[str, str]) -> float | None:
    """The scanner objective recorded in the file (openslide.objective-power), if any."""
    try:
        power = float(props[openslide.PROPERTY_NAME_OBJECTIVE_POWER])
    except (KeyError, ValueError):
        return None
    return power if power > 0 and math.isfinite(power) else None


def mpp_and_source_from_properties(props: dict[str, str], path: Path) -> tuple[float, str] | None:
    """(µm/px, source) from OpenSlide properties, most trustworthy source first.

    1. openslide.mpp-x / -y (vendor metadata, or TIFF resolution for generic TIFF): "metadata";
    2. tiff.XResolution with a centimetre or inch unit: "metadata";
    3. objective power (10 / power; 20x -> 0.5): "objective_power", with a warning, since
       scanners differ (a 40× objective gives 0.23-0.26 µm/px depending on the camera).
    """
    try:
        mx, my = float(props["openslide.mpp-x"]), float(props["openslide.mpp-y"])
        if mx > 0 and my > 0:
            if abs(mx - my) > 0.01 * max(mx, my):
                log.warning("%s: non-square pixels (%g x %g um); using their mean", path, mx, my)
            return (mx + my) / 2, "metadata"
    except (KeyError, ValueError):
        pass
    try:
        unit = props["tiff.ResolutionUnit"].lower()
        res = float(props["tiff.XResolution"])
        if unit in _CM_PER_UNIT and res > 0:
            return _CM_PER_UNIT[unit] * 1e4 / res, "metadata"
    except (KeyError, ValueError):
        pass
    power = objective_power_from_properties(props)
    if power is not None:
        mpp = 10.0 / power
        log.warning("%s: no pixel size in metadata; assuming %g um/px from objective power %gx",
                    path, mpp, power)
        return mpp, "objective_power"
    return None


class OpenSlideSlide(Slide):
    """A slide file opened with OpenSlide."""

    def __init__(self, path: str | Path, mpp: float | None = None) -> None:
        super().__init__(path, mpp)
        try:
            self._osr = openslide.OpenSlide(str(self.path))
        except (openslide.OpenSlideError, OSError) as exc:
            raise SlideReadError(self.path, f"OpenSlide cannot open it ({exc})") from exc
        self._set_levels(self._osr.level_dimensions, self._osr.level_downsamples)
        self._props = dict(self._osr.properties)

    @property
    def properties(self) -> dict[str, str]:
        return self._props

    def _native_mpp(self) -> float | None:
        found = self.native_mpp()
        return None if found is None else found[0]

    def _native_mpp_with_source(self) -> tuple[float, str] | None:
        return mpp_and_source_from_properties(self._props, self.path)

    @property
    def objective_power(self) -> float | None:
        return objective_power_from_properties(self._props)

    def _read_level(self, level: int, x0: int, y0: int, w: int, h: int) -> np.ndarray:
        try:
            region = self._osr.read_region((int(x0), int(y0)), level, (int(w), int(h)))
        except openslide.OpenSlideError as exc:
            raise SlideReadError(self.path, f"read failed at level {level} ({x0}, {y0}): {exc}") from exc
        return white_composite(np.asarray(region))

    def close(self) -> None:
        self._osr.close()
