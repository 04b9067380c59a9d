"""Slide readers: one interface (`Slide`) over OpenSlide, plain images and (optionally) TIAToolbox."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from wsi_pipeline.io.base import MissingMppError, Slide, SlideReadError
from wsi_pipeline.io.plain_image import PLAIN_IMAGE_SUFFIXES

#: The slide reader to open a file with (`discovery.reader` in a run config); the network's
#: back end is another choice (`model.runtime.NetworkBackend`).
ReaderName = Literal["auto", "openslide", "image", "tiatoolbox"]

__all__ = ["MissingMppError", "ReaderName", "Slide", "SlideReadError", "open_slide"]

# Formats that are never whole-slide pyramids: decode them directly.
_ALWAYS_PLAIN = frozenset({".png", ".jpg", ".jpeg", ".bmp"})


def open_slide(path: str | Path, mpp: float | None = None, *, reader: ReaderName = "auto") -> Slide:
    """Open a slide or image with `reader`. `mpp` (level-0 µm/px) overrides the file's own value.

    "auto": PNG/JPEG/BMP as plain images; everything else through OpenSlide, falling back to
    a plain image for TIFFs OpenSlide refuses (striped, non-pyramidal).
    """
    path = Path(path)
    if not path.is_file():
        raise SlideReadError(path, "no such file")
    if reader == "tiatoolbox":
        from wsi_pipeline.io.tiatoolbox_reader import TiatoolboxSlide

        return TiatoolboxSlide(path, mpp)
    suffix = path.suffix.lower()
    if reader == "image" or (reader == "auto" and suffix in _ALWAYS_PLAIN):
        from wsi_pipeline.io.plain_image import PlainImageSlide

        return PlainImageSlide(path, mpp)
    from wsi_pipeline.io.openslide_reader import OpenSlideSlide

    try:
        return OpenSlideSlide(path, mpp)
    except SlideReadError:
        if reader == "auto" and suffix in PLAIN_IMAGE_SUFFIXES:
            from wsi_pipeline.io.plain_image import PlainImageSlide

            return PlainImageSlide(path, mpp)
        raise
