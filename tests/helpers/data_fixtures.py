"""Small synthetic nucleus images for data tests (written by tests, never stored in the repo)."""

from __future__ import annotations

import numpy as np


def disc_labels(
    size: int = 64, centres=((16, 20), (40, 44), (20, 48)), radius: int = 6, ids=(3, 7, 12), types=(1, 2, 3)
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(image uint8 RGB, inst_map int32 with the given ids, type_map int32): dark discs on pink."""
    rows, cols = np.indices((size, size))
    inst = np.zeros((size, size), np.int32)
    typ = np.zeros((size, size), np.int32)
    for (r, c), i, t in zip(centres, ids, types, strict=True):
        disc = (rows - r) ** 2 + (cols - c) ** 2 <= radius**2
        inst[disc] = i
        typ[disc] = t
    image = np.empty((size, size, 3), np.uint8)
    image[...] = (230, 180, 210)
    image[inst > 0] = (90, 40, 140)
    return image, inst, typ
