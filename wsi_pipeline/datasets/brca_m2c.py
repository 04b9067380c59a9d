"""Reader for BRCA-M2C (Abousamra et al., ICCV 2021): TCGA breast cancer patches at 0.5 µm/px,
nuclei marked by points of three classes.

Layout: <root>/images/<stem>.png, <root>/labels/<stem>_gt_class_coords.txt (one nucleus per
line, `Y X class`, 0-based row and column; 1 lymphocyte, 2 tumour/epithelial, 3 stromal), and
the split lists brca_ds_{train,val,test}.txt (image file names; names of files that are not
present are skipped). The group of an image is its TCGA patient (`TCGA-XX-XXXX`), so a split
by group never puts one patient on both sides.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
from PIL import Image

from wsi_pipeline.datasets.points import check_points
from wsi_pipeline.datasets.sample import Sample
from wsi_pipeline.datasets.validate import OnError, load_all

BRCA_CLASSES = ("background", "lymphocyte", "tumor", "stromal")
#: every patch is resampled to 0.5 µm/px by the dataset's authors (file name's s: see SOURCES)
BRCA_MPP = 0.5
_PATIENT = re.compile(r"^(TCGA-[A-Z0-9]{2}-[A-Z0-9]{4})")


def read_class_coords(path: Path) -> np.ndarray:
    """(K, 3) float64 (row, col, class) from one `_gt_class_coords.txt`; ValueError naming the
    file for an empty file or a line that is not three integers."""
    text = Path(path).read_text()
    lines = [ln for ln in text.splitlines() if ln.strip()]
    if not lines:
        raise ValueError(f"{path}: empty label file")
    rows = []
    for i, line in enumerate(lines, start=1):
        parts = line.split()
        try:
            if len(parts) != 3:
                raise ValueError
            rows.append([int(p) for p in parts])
        except ValueError:
            raise ValueError(f"{path}, line {i}: expected 'Y X class' integers, got {line!r}") from None
    return np.asarray(rows, dtype=np.float64)


def patient_of(stem: str) -> str:
    """The TCGA patient id a BRCA-M2C image name starts with (the whole stem if none)."""
    m = _PATIENT.match(stem)
    return m.group(1) if m else stem


def _load(image_path: Path, label_dir: Path, split: str, mpp: float) -> Sample:
    image = np.asarray(Image.open(image_path).convert("RGB"))
    label_path = label_dir / f"{image_path.stem}_gt_class_coords.txt"
    points = check_points(read_class_coords(label_path), image.shape[:2], len(BRCA_CLASSES),
                          label_path)
    if (points[:, 2] == 0).any():
        raise ValueError(f"{label_path}: class 0 is not a BRCA-M2C class (1..3)")
    return Sample(
        name=image_path.stem,
        image=image,
        inst_map=np.zeros(image.shape[:2], np.int32),
        type_map=None,
        class_names=BRCA_CLASSES,
        mpp=mpp,
        group=patient_of(image_path.stem),
        meta={"source": str(image_path), "split": split},
        points=points,
    )


def read_brca_m2c(
    root: Path,
    *,
    splits: tuple[str, ...] = ("train", "val", "test"),
    mpp: float = BRCA_MPP,
    on_error: OnError = "fail",
) -> list[Sample]:
    """The present images of the given split lists (brca_ds_<split>.txt) under `root`."""
    root = Path(root)
    items: list[tuple[Path, str]] = []
    for split in splits:
        listing = root / f"brca_ds_{split}.txt"
        if not listing.is_file():
            continue
        for line in listing.read_text(encoding="utf-8-sig").splitlines():
            name = line.strip()
            if name and (root / "images" / name).is_file():
                items.append((root / "images" / name, split))
    if not items:
        raise FileNotFoundError(f"no images of brca_ds_{{{','.join(splits)}}}.txt under {root}/images")
    return load_all(items, lambda it: _load(it[0], root / "labels", it[1], mpp), on_error,
                    name=lambda it: str(it[0]))
