"""A slide folder as the infer and postproc stages leave it, for QC-sheet and report tests."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image

from tests.helpers.maps_synth import CLASSES, disc_instances, oracle_maps, write_maps_zarr
from wsi_pipeline.postproc import PostprocConfig
from wsi_pipeline.postproc.slide import postprocess_slide

SIDE = 512  # map px at 0.25 µm/px; level-0 (0.5 µm/px) is 256 px
RADIUS = 9  # map px


def centres() -> list[tuple[int, int]]:
    """Crowded top-left quadrant (every 24 px), sparse elsewhere (every 48 px)."""
    dense = [(r, c) for r in range(14, 250, 24) for c in range(14, 250, 24)]
    sparse = [(r, c) for r in range(24, SIDE - 12, 48) for c in range(24, SIDE - 12, 48)
              if not (r < 256 and c < 256)]
    return dense + sparse


def qc_slide_dir(root: Path, name: str = "slideQ", slide: dict | None = None,
                 empty: bool = False) -> Path:
    """A slide folder as infer and postproc leave it; nuclei in the bottom-right quadrant get
    type probabilities of ≈0.59 instead of 1."""
    d = root / name
    d.mkdir(parents=True)
    points = [] if empty else centres()
    inst = disc_instances((SIDE, SIDE), points, radius=RADIUS)
    types = np.zeros(inst.shape, np.uint8)
    for k in range(1, len(points) + 1):
        types[inst == k] = 1 + k % 4
    maps = oracle_maps(inst, types)
    doubt = np.zeros(inst.shape, bool)
    doubt[256:, 256:] = inst[256:, 256:] > 0
    for t in range(1, len(CLASSES)):
        own = doubt & (types == t)
        maps["nc"][t][own] = 150
        maps["nc"][1 + t % 4][own] = 105  # another type takes the rest
    if empty:
        maps["inferred"][:] = False
    write_maps_zarr(d / "maps.zarr", maps, 256, slide=slide)
    tissue = np.full((SIDE // 16, SIDE // 16), 0 if empty else 255, np.uint8)  # 8 µm/px
    Image.fromarray(tissue).save(d / "tissue.png")
    (d / "tissue.json").write_text(json.dumps({"mm2": 0.0164, "thumb_mpp": 8.0}))
    postprocess_slide(d / "maps.zarr", d / "nuclei.parquet", PostprocConfig(), progress=False)
    return d
