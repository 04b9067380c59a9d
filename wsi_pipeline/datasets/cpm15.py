"""Reader for the CPM-15 training layout: imageNN.png (RGBA) + imageNN_mask.txt (instance only).

The mask text holds `width height`, then one label per pixel with x varying fastest.
Resolution comes from the challenge README's magnification table (20x -> 0.5, 40x -> 0.25 µm/px).
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
from PIL import Image

from wsi_pipeline.datasets.sample import Sample
from wsi_pipeline.datasets.validate import OnError, load_all
from wsi_pipeline.labels import relabel

CPM15_CLASSES = ("background", "nucleus")
_MAG = re.compile(r"^\s*(image\d+)\.png\s+(\d+)x", re.IGNORECASE | re.MULTILINE)


def read_mask_txt(path: Path) -> np.ndarray:
    values = np.array(Path(path).read_text().split(), dtype=np.int64)
    if values.size < 2:
        raise ValueError(f"{path.name}: empty mask file")
    w, h = int(values[0]), int(values[1])
    if values.size - 2 != w * h:
        raise ValueError(f"{path.name}: header says {w}x{h} but holds {values.size - 2} labels")
    return values[2:].reshape(h, w)


def magnifications(readme: Path) -> dict[str, int]:
    """Image stem -> objective power, from README_training.txt (empty if absent)."""
    if not readme.exists():
        return {}
    return {m.group(1).lower(): int(m.group(2)) for m in _MAG.finditer(readme.read_text(errors="replace"))}


def _load(path: Path, mags: dict[str, int]) -> Sample:
    mask_path = path.with_name(f"{path.stem}_mask.txt")
    mag = mags.get(path.stem.lower())
    return Sample(
        name=path.stem,
        image=np.asarray(Image.open(path).convert("RGB")),
        inst_map=relabel(read_mask_txt(mask_path)),
        type_map=None,
        class_names=CPM15_CLASSES,
        mpp=10.0 / mag if mag else None,
        group=path.stem,
        meta={"source": str(path), "magnification": mag},
    )


def read_cpm15(root: Path, *, on_error: OnError = "fail") -> list[Sample]:
    """All imageNN.png with an imageNN_mask.txt under root/train (or root itself)."""
    root = Path(root)
    folder = root / "train" if (root / "train").is_dir() else root
    images = sorted(p for p in folder.glob("*.png") if p.with_name(f"{p.stem}_mask.txt").exists())
    if not images:
        raise FileNotFoundError(f"no image/mask pairs under {folder}")
    mags = magnifications(root / "README_training.txt")
    return load_all(images, lambda p: _load(p, mags), on_error)
