"""Model outputs for an in-memory image of any size, by overlapping tiles.

Each output pixel is taken from the central crop of exactly one tile (see `geometry.TileGrid`),
so it sees at least `(tile - stride) // 2` pixels of real context on every side. Image
borders are reflect-padded: a mirror looks more like tissue to the network than a constant.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from wsi_pipeline.inference.config import DEFAULT_STRIDE, DEFAULT_TILE_SIZE
from wsi_pipeline.inference.geometry import TileGrid
from wsi_pipeline.model.predict import Precision, predict_batch


def predict_tiled(
    net: nn.Module,
    image: np.ndarray,
    *,
    tile: int = DEFAULT_TILE_SIZE,
    stride: int = DEFAULT_STRIDE,
    batch_size: int = 8,
    device: torch.device | str = "cpu",
    precision: Precision = "auto",
    tta: bool = False,
) -> dict[str, np.ndarray]:
    """uint8 (H, W, 3) -> {"ns": (H, W), "hv": (2, H, W), "nc": (C, H, W)} float32;
    `tta`: flip test-time augmentation (`model.predict`)."""
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"expected uint8 (H, W, 3) RGB, got {image.dtype} {image.shape}")
    if tile % 32:
        raise ValueError(f"tile must be a multiple of 32, got {tile}")
    h, w = image.shape[:2]
    grid = TileGrid(h, w, tile, stride)
    (top, bottom), (left, right) = grid.padded_extent()
    padded = np.pad(image, ((top, bottom), (left, right), (0, 0)), mode="reflect")
    rows, cols = grid.shape
    ii, jj = np.divmod(np.arange(rows * cols), cols)
    out: dict[str, np.ndarray] = {}
    for start in range(0, ii.size, batch_size):
        bi, bj = ii[start : start + batch_size], jj[start : start + batch_size]
        # padded coordinates of a tile = map origin + top/left padding = index * stride
        batch = np.stack([padded[i * stride : i * stride + tile, j * stride : j * stride + tile]
                          for i, j in zip(bi, bj, strict=True)])
        pred = predict_batch(net, batch, device, precision, tta)
        if not out:
            out = {"ns": np.zeros((h, w), np.float32),
                   "hv": np.zeros((2, h, w), np.float32),
                   "nc": np.zeros((pred["nc"].shape[1], h, w), np.float32)}
        for k, (i, j) in enumerate(zip(bi, bj, strict=True)):
            r0, r1 = (int(v) for v in grid.crop_span(i, 0))
            c0, c1 = (int(v) for v in grid.crop_span(j, 1))
            sr = slice(r0 - int(grid.tile_origin(i)), r1 - int(grid.tile_origin(i)))
            sc = slice(c0 - int(grid.tile_origin(j)), c1 - int(grid.tile_origin(j)))
            out["ns"][r0:r1, c0:c1] = pred["ns"][k, sr, sc]
            out["hv"][:, r0:r1, c0:c1] = pred["hv"][k, :, sr, sc]
            out["nc"][:, r0:r1, c0:c1] = pred["nc"][k, :, sr, sc]
    return out
