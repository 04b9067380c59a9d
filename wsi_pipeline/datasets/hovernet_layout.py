"""Reader for HoVer-Net's original CoNSeP/Kumar layout: Images/<name>.png + Labels/<name>.mat
(`inst_map`, optional `type_map`)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import scipy.io as sio
from PIL import Image

from wsi_pipeline.datasets.consep_patches import CONSEP_CLASSES
from wsi_pipeline.datasets.sample import Sample
from wsi_pipeline.datasets.validate import OnError, load_all
from wsi_pipeline.labels import relabel

CONSEP_7_CLASSES = (
    "background",
    "other",
    "inflammatory",
    "healthy epithelial",
    "dysplastic/malignant epithelial",
    "fibroblast",
    "muscle",
    "endothelial",
)
UNTYPED_CLASSES = ("background", "nucleus")
# HoVer-Net's merged CoNSeP scheme: epithelial 3,4 -> 3; spindle-shaped 5,6,7 -> 4.
CONSEP_MERGE = np.array([0, 1, 2, 3, 3, 4, 4, 4], dtype=np.int32)


def merge_consep_types(type_map: np.ndarray) -> np.ndarray:
    """7 CoNSeP classes -> the 4 merged ones (CONSEP_CLASSES)."""
    if type_map.min(initial=0) < 0 or type_map.max(initial=0) >= CONSEP_MERGE.size:
        raise ValueError(f"CoNSeP type values must be 0..7, got up to {int(type_map.max())}")
    return CONSEP_MERGE[type_map]


def _load(path: Path, labels: Path, merge: bool, class_names: tuple[str, ...], mpp: float | None
          ) -> Sample:
    label_path = labels / f"{path.stem}.mat"
    mat = sio.loadmat(label_path)
    if "inst_map" not in mat:
        raise ValueError(f"{label_path.name}: no 'inst_map' array")
    inst = relabel(np.asarray(mat["inst_map"]))
    typ = np.asarray(mat["type_map"]).astype(np.int32) if "type_map" in mat else None
    if typ is not None and merge:
        typ = merge_consep_types(typ)
    return Sample(
        name=path.stem,
        image=np.asarray(Image.open(path).convert("RGB")),
        inst_map=inst,
        type_map=typ,
        class_names=class_names if typ is not None else UNTYPED_CLASSES,
        mpp=mpp,
        group=path.stem,
        meta={"source": str(path)},
    )


def read_hovernet(
    root: Path,
    *,
    merge_consep: bool = False,
    class_names: tuple[str, ...] | None = None,
    mpp: float | None = 0.25,
    on_error: OnError = "fail",
) -> list[Sample]:
    """All Images/*.png with a Labels/*.mat under `root` (e.g. CoNSeP/Train).

    class_names default to CoNSeP's: 7 classes, or the 4 merged ones with `merge_consep`.
    Samples without a `type_map` (Kumar) are untyped. Each image is its own split group.
    """
    root = Path(root)
    names = class_names or (CONSEP_CLASSES if merge_consep else CONSEP_7_CLASSES)
    images = sorted((root / "Images").glob("*.png"))
    if not images:
        raise FileNotFoundError(f"no images under {root / 'Images'}")
    return load_all(images, lambda p: _load(p, root / "Labels", merge_consep, names, mpp), on_error)
