"""Reader for the derived CoNSeP patch layout (256² patches cut from the 1000² train tiles).

Layout: images/<name>.jpg, inst/<name>.npy (int32, non-contiguous ids), seg_mask/<name>.png
(type map 0..4, merged 4-class scheme), type_mat/<name>.mat (`inst_type` in ascending id order).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import scipy.io as sio
from PIL import Image

from wsi_pipeline.datasets.sample import Sample
from wsi_pipeline.datasets.validate import OnError, instance_types, load_all
from wsi_pipeline.evaluation.matio import (
    CONSEP_IMAGE_DIR,
    CONSEP_INST_DIR,
    CONSEP_SEG_DIR,
    CONSEP_TYPE_DIR,
)
from wsi_pipeline.labels import relabel

CONSEP_CLASSES = ("background", "other", "inflammatory", "epithelial", "spindle")
CONSEP_MPP = 0.25


def group_of(name: str) -> str:
    """`train_10_003` -> `train_10`: the source tile, so splits keep a tile's patches together."""
    stem, sep, tail = name.rpartition("_")
    return stem if sep and tail.isdigit() else name


def _load_patch(root: Path, image_path: Path) -> Sample:
    name = image_path.stem
    image = np.asarray(Image.open(image_path).convert("RGB"))
    inst = relabel(np.load(root / CONSEP_INST_DIR / f"{name}.npy"))
    type_map = np.asarray(Image.open(root / CONSEP_SEG_DIR / f"{name}.png")).astype(np.int32)
    mat_path = root / CONSEP_TYPE_DIR / f"{name}.mat"
    if mat_path.exists() and type_map.shape == inst.shape:
        listed = np.asarray(sio.loadmat(mat_path)["inst_type"]).ravel()
        n = int(inst.max())
        if listed.size != n:
            raise ValueError(f"{mat_path.name} lists {listed.size} types for {n} instances")
        if n and (type_map[inst > 0] > 0).all():
            found = instance_types(inst, type_map)
            bad = np.flatnonzero(found != listed)
            if bad.size:
                raise ValueError(f"seg_mask type disagrees with {mat_path.name} for {bad.size} instance(s)")
    return Sample(
        name=name,
        image=image,
        inst_map=inst,
        type_map=type_map,
        class_names=CONSEP_CLASSES,
        mpp=CONSEP_MPP,
        group=group_of(name),
        meta={"source": str(image_path)},
    )


def read_consep_patches(root: Path, *, on_error: OnError = "fail") -> list[Sample]:
    """All patches under `root` (e.g. consep_patches/train), sorted by name."""
    root = Path(root)
    image_dir = root / CONSEP_IMAGE_DIR
    images = sorted(image_dir.glob("*.jpg")) + sorted(image_dir.glob("*.png"))
    if not images:
        raise FileNotFoundError(f"no images under {image_dir}")
    return load_all(sorted(images, key=lambda p: p.stem), lambda p: _load_patch(root, p), on_error)
