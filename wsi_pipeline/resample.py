"""The one way images and label maps change pixel size, shared by slide reading, dataset loading
and the scan-degradation augmentation.

Training data must look exactly like what the engine feeds the network: `Slide.read_region_at_mpp`
resamples every tile with `resize_rgb`, dataset readers bring images of another pixel size to the
model's with it, and the scan augmentation goes down and back up through it. Label maps are
resampled nearest-neighbour on the same pixel grid, so instance ids survive and stay aligned.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

__all__ = ["resize_labels", "resize_rgb", "scaled_size"]


def resize_rgb(
    image: np.ndarray,
    size_wh: tuple[int, int],
    box: tuple[float, float, float, float] | None = None,
) -> np.ndarray:
    """uint8 (h, w, 3) from the `box` (x0, y0, x1, y1; default the whole image) of `image`.

    Bicubic when enlarging, bilinear with Pillow's antialiasing support when shrinking: a
    shrunken image keeps no aliasing that a scanner's optics would not have produced.
    """
    h, w = image.shape[:2]
    box = box or (0.0, 0.0, float(w), float(h))
    enlarging = (box[2] - box[0]) < size_wh[0]
    resample = Image.Resampling.BICUBIC if enlarging else Image.Resampling.BILINEAR
    return np.asarray(Image.fromarray(image).resize((size_wh[0], size_wh[1]), resample, box=box))


def resize_labels(labels: np.ndarray, size_wh: tuple[int, int]) -> np.ndarray:
    """Nearest-neighbour resampling of an integer label map onto a `size_wh` grid spanning the
    same extent (pixel centres map as in `resize_rgb`)."""
    out = Image.fromarray(np.ascontiguousarray(labels, dtype=np.int32)).resize(
        (size_wh[0], size_wh[1]), Image.Resampling.NEAREST
    )
    return np.asarray(out, dtype=np.int32)


def scaled_size(shape_hw: tuple[int, int], scale: float) -> tuple[int, int]:
    """(w, h) of an image of `shape_hw` scaled by `scale` (new pixels per old pixel), >= 1."""
    h, w = shape_hw
    return max(1, round(w * scale)), max(1, round(h * scale))
