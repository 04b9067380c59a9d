"""Reader for PanNuke folds: images.npy (N,256,256,3) + masks.npy (N,256,256,6).

Mask channels 0..4 are per-class instance maps (neoplastic, inflammatory, connective, dead,
epithelial); channel 5 is background and is ignored. Arrays are memory-mapped, so a fold of
several GB is read one patch at a time.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from wsi_pipeline.datasets.sample import Sample
from wsi_pipeline.datasets.validate import OnError, load_all
from wsi_pipeline.labels import relabel

PANNUKE_CLASSES = ("background", "neoplastic", "inflammatory", "connective", "dead", "epithelial")


def pannuke_labels(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(H,W,6) mask -> contiguous inst_map and type_map; ids may repeat across channels, so each
    (channel, id) pair becomes its own instance."""
    per_class = np.asarray(mask[..., :5]).astype(np.int64)
    present = per_class > 0
    overlap = int(np.count_nonzero(present.sum(axis=-1) > 1))
    if overlap:
        raise ValueError(f"{overlap} px belong to instances of more than one class channel")
    channel = np.argmax(present, axis=-1)
    ids = np.take_along_axis(per_class, channel[..., None], axis=-1)[..., 0]
    fg = ids > 0
    key = np.where(fg, channel * (int(per_class.max()) + 1) + ids, 0)
    return relabel(key), np.where(fg, channel + 1, 0).astype(np.int32)


def read_pannuke(fold_dir: Path, *, mpp: float | None = 0.25, on_error: OnError = "fail") -> list[Sample]:
    """All patches of one fold directory (holding images.npy and masks.npy; types.npy optional,
    the tissue type, goes to meta). Names are `<fold>_<index>`; PanNuke does not say which
    patches share a slide, so each patch is its own group."""
    fold_dir = Path(fold_dir)
    images = np.load(fold_dir / "images.npy", mmap_mode="r")
    masks = np.load(fold_dir / "masks.npy", mmap_mode="r")
    types_path = fold_dir / "types.npy"
    tissue = np.load(types_path, allow_pickle=False) if types_path.exists() else None
    if len(images) != len(masks):
        raise ValueError(f"{fold_dir}: {len(images)} images but {len(masks)} masks")
    fold = fold_dir.name

    def load(i: int) -> Sample:
        if masks.shape[1:3] != images.shape[1:3] or masks.shape[-1] != 6:
            raise ValueError(f"masks {masks.shape[1:]} do not fit images {images.shape[1:]}")
        inst, typ = pannuke_labels(masks[i])
        image = np.asarray(images[i])
        if image.dtype != np.uint8:  # the official folds store float64 0..255
            image = np.clip(np.rint(image), 0, 255).astype(np.uint8)
        meta = {"source": f"{fold_dir / 'images.npy'}[{i}]"}
        if tissue is not None:
            meta["tissue"] = str(tissue[i])
        name = f"{fold}_{i:05d}"
        return Sample(name, image, inst, typ, PANNUKE_CLASSES, mpp, group=name, meta=meta)

    return load_all(range(len(images)), load, on_error, name=lambda i: f"images.npy/masks.npy[{i}]")
