"""Optional reader: TIAToolbox's WSIReader (OME-TIFF, DICOM, JP2, NGFF, ...).

TIAToolbox pins an older torch and pulls large dependencies, so it is the optional extra
`wsi-pipeline[tiatoolbox]`, imported only when this reader is asked for.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from wsi_pipeline.io.base import Slide, SlideReadError

INSTALL_HINT = (
    "the TIAToolbox reader needs the optional extra: pip install 'wsi-pipeline[tiatoolbox]' "
    "(note: tiatoolbox pins torch<2.13; install it in a separate environment if needed)"
)


def _wsireader_class() -> Any:  # tiatoolbox is optional: no stubs to type it with
    try:
        from tiatoolbox.wsicore.wsireader import WSIReader
    except ImportError as exc:
        raise ImportError(INSTALL_HINT) from exc
    return WSIReader


class TiatoolboxSlide(Slide):
    """A slide opened with `tiatoolbox.wsicore.wsireader.WSIReader.open`."""

    def __init__(self, path: str | Path, mpp: float | None = None) -> None:
        super().__init__(path, mpp)
        reader_cls = _wsireader_class()
        try:
            self._reader = reader_cls.open(str(self.path))
        except Exception as exc:  # TIAToolbox raises many types for unreadable input
            raise SlideReadError(self.path, f"TIAToolbox cannot open it ({exc})") from exc
        info = self._reader.info
        self._set_levels(info.level_dimensions, info.level_downsamples)
        self._info_mpp = None if info.mpp is None else float(np.mean(np.asarray(info.mpp, float)))
        power = getattr(info, "objective_power", None)
        self._objective_power = float(power) if power else None

    def _native_mpp(self) -> float | None:
        return self._info_mpp

    @property
    def objective_power(self) -> float | None:
        return self._objective_power

    def _read_level(self, level: int, x0: int, y0: int, w: int, h: int) -> np.ndarray:
        try:
            region = self._reader.read_rect(
                (int(x0), int(y0)), (int(w), int(h)), resolution=level, units="level",
                pad_mode="constant", pad_constant_values=255,
            )
        except Exception as exc:
            raise SlideReadError(self.path, f"TIAToolbox read failed at level {level}: {exc}") from exc
        return np.ascontiguousarray(np.asarray(region, np.uint8)[..., :3])
