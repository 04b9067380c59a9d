"""Oracle slide maps for post-processing tests: real CoNSeP labels tiled into a mosaic.

`ns` = nucleus mask, `hv` = HoVer-Net HV targets of the mosaic instance map, `nc` = one-hot
type map — what a perfect network would write into maps.zarr.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import zarr
from PIL import Image

from wsi_pipeline.contract import MapsAttrs
from wsi_pipeline.datasets.targets import hv_maps

CLASSES = ("background", "other", "inflammatory", "epithelial", "spindle")
COLORS = ("#000000", "#ffa500", "#ff0000", "#00a000", "#0000ff")
MPP = 0.25


def consep_mosaic(consep_train: Path, n_side: int, start: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(inst, types) of n_side × n_side CoNSeP patches laid edge to edge, ids made unique."""
    names = sorted(p.stem for p in (consep_train / "inst").glob("*.npy"))[start:]
    size = 256 * n_side
    inst = np.zeros((size, size), dtype=np.int32)
    types = np.zeros((size, size), dtype=np.uint8)
    next_id = 0
    for k in range(n_side * n_side):
        name = names[k]
        r, c = divmod(k, n_side)
        win = np.s_[r * 256 : (r + 1) * 256, c * 256 : (c + 1) * 256]
        patch = np.load(consep_train / "inst" / f"{name}.npy")
        ids, local = np.unique(patch, return_inverse=True)
        local = local.reshape(patch.shape).astype(np.int32)
        if ids[0] != 0:
            local += 1
        inst[win] = np.where(local > 0, local + next_id, 0)
        next_id += int(local.max())
        types[win] = np.asarray(Image.open(consep_train / "seg_mask" / f"{name}.png"))
    return inst, types


def oracle_maps(
    inst: np.ndarray, types: np.ndarray, inferred: np.ndarray | None = None
) -> dict[str, np.ndarray]:
    """The arrays of maps.zarr that a perfect network would produce for `inst` / `types`."""
    h, w = inst.shape
    if inferred is None:
        inferred = np.ones((h, w), dtype=bool)
    nc = np.zeros((len(CLASSES), h, w), dtype=np.uint8)
    for k in range(len(CLASSES)):
        nc[k] = np.where(types == k, 255, 0)
    return {
        "ns": np.where(inferred, inst > 0, 0).astype(np.float16),
        "hv": hv_maps(inst).astype(np.float16),
        "nc": nc,
        "inferred": inferred,
    }


def write_maps_zarr(
    path: Path,
    maps: dict[str, np.ndarray],
    chunk: int,
    *,
    scale: float = 0.5,
    slide: dict | None = None,
) -> Path:
    """Write a maps.zarr group in the layout of the stage contract (`contract.MapsAttrs`)."""
    h, w = maps["ns"].shape
    group = zarr.open_group(str(path), mode="w", zarr_format=3)
    group.create_array("ns", data=maps["ns"], chunks=(chunk, chunk))
    group.create_array("hv", data=maps["hv"], chunks=(2, chunk, chunk))
    group.create_array("nc", data=maps["nc"], chunks=(len(CLASSES), chunk, chunk))
    group.create_array("inferred", data=maps["inferred"], chunks=(chunk, chunk))
    group.attrs.update(MapsAttrs(
        mpp=MPP,
        slide_mpp=MPP / scale,
        scale=scale,
        level0_size=(round(w * scale), round(h * scale)),
        map_size=(w, h),
        class_names=CLASSES,
        class_colors=COLORS,
        model_sha256="0" * 64,
        config={"oracle": True},
        wsi_pipeline_version="test",
        slide=slide or {"path": "/nonexistent/slide.svs", "size": 0, "mtime": 0.0},
        tissue_mm2=float(maps["inferred"].sum()) * MPP**2 / 1e6,
    ).to_attrs())
    return path


def disc_instances(shape: tuple[int, int], centres_rc, radius: float) -> np.ndarray:
    """Instance map of non-overlapping discs (ids 1..K in the order given)."""
    rows, cols = np.indices(shape)
    inst = np.zeros(shape, dtype=np.int32)
    for k, (r, c) in enumerate(centres_rc, start=1):
        inst[(rows - r) ** 2 + (cols - c) ** 2 <= radius**2] = k
    return inst
