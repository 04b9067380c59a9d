"""A plain (non-pyramidal) image read as a one-level slide: PNG, JPEG, BMP, striped TIFF.

Plain images carry no trustworthy pixel size (72 dpi is a screen default, not a scan), so
the user must give it. The image is decoded once into memory: use this for tiles and small
images, not for whole slides.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from wsi_pipeline.io.base import Slide, SlideReadError

#: The image files read as plain images (open_slide's "auto" for these, predict-tiles' inputs,
#: the images the dataset readers pair with annotation files); in the order messages list them
#: and in which a reader looking for `<stem>.*` takes the first that exists.
IMAGE_SUFFIXES: tuple[str, ...] = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")
PLAIN_IMAGE_SUFFIXES = frozenset(IMAGE_SUFFIXES)

Image.MAX_IMAGE_PIXELS = None  # our inputs are trusted microscopy images, often > 89 Mpx


def read_rgb(path: str | Path) -> np.ndarray:
    """Decode any Pillow- or tifffile-readable image to uint8 (H, W, 3) RGB."""
    path = Path(path)
    try:
        with Image.open(path) as img:
            img.load()
            if img.mode in ("RGBA", "LA", "P", "PA"):
                rgba = img.convert("RGBA")
                bg = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
                return np.asarray(Image.alpha_composite(bg, rgba).convert("RGB"))
            if img.mode in ("I;16", "I;16B", "I", "F"):
                raise SlideReadError(path, f"unsupported pixel format {img.mode} (need 8-bit RGB)")
            return np.asarray(img.convert("RGB"))
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as exc:
        if path.suffix.lower() in (".tif", ".tiff"):
            return _read_tiff(path, exc)
        raise SlideReadError(path, f"not a readable image ({exc})") from exc


def _read_tiff(path: Path, first_error: Exception) -> np.ndarray:
    import tifffile

    try:
        arr = tifffile.imread(path)
    except Exception as exc:  # tifffile raises many types for broken files
        raise SlideReadError(path, f"not a readable image ({first_error}; tifffile: {exc})") from exc
    if arr.dtype != np.uint8 or arr.ndim != 3 or arr.shape[2] not in (3, 4):
        raise SlideReadError(path, f"unsupported TIFF layout {arr.shape} {arr.dtype} (need 8-bit RGB)")
    return np.ascontiguousarray(arr[..., :3])


class PlainImageSlide(Slide):
    """One decoded image; regions outside it read as white."""

    def __init__(self, path: str | Path, mpp: float | None = None, *,
                 pixels: np.ndarray | None = None) -> None:
        super().__init__(path, mpp)
        self._pixels = read_rgb(self.path) if pixels is None else np.asarray(pixels, np.uint8)
        h, w = self._pixels.shape[:2]
        self._set_levels(((w, h),), (1.0,))

    def _native_mpp(self) -> float | None:
        return None

    def _read_level(self, level: int, x0: int, y0: int, w: int, h: int) -> np.ndarray:
        out = np.full((h, w, 3), 255, np.uint8)
        H, W = self._pixels.shape[:2]
        sx0, sy0 = max(x0, 0), max(y0, 0)
        sx1, sy1 = min(x0 + w, W), min(y0 + h, H)
        if sx1 > sx0 and sy1 > sy0:
            out[sy0 - y0 : sy1 - y0, sx0 - x0 : sx1 - x0] = self._pixels[sy0:sy1, sx0:sx1]
        return out
