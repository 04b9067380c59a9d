"""Reader for CRCHistoPhenotypes (Sirinukunwattana et al., IEEE TMI 2016): colorectal
adenocarcinoma, 20×, 500×500 BMP, nuclei marked by points.

Layout (sfcn-opi's split): <root>/<split>/imgN/imgN.bmp, imgN_detection.mat (every marked
nucleus) and imgN_{epithelial,fibroblast,inflammatory,others}.mat (the class-labelled ones, a
subset); each .mat holds one array `detection`, (K, 2) (x, y), MATLAB 1-based, float or uint8/16
(uint8 (0, 2) when empty). Not every nucleus is marked: an unmarked one is unlabelled.

The files state no pixel size; the paper gives ≈0.55 µm/px at 20× (the default `mpp`).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import scipy.io
from PIL import Image

from wsi_pipeline.datasets.points import check_points
from wsi_pipeline.datasets.sample import Sample
from wsi_pipeline.datasets.validate import OnError, load_all

#: the dataset's classes in its file names (index = class id in the points)
CRC_CLASSES = ("background", "epithelial", "fibroblast", "inflammatory", "others")
#: Sirinukunwattana et al. 2016: 20× images at ≈0.55 µm/px
CRC_MPP = 0.55
#: a class point this close (px) to a detection point is the same nucleus
_SAME_POINT_PX = 2.0


def read_point_mat(path: Path) -> np.ndarray:
    """(K, 2) float64 (row, col), 0-based, from one `detection` .mat (x, y, 1-based)."""
    try:
        mat = scipy.io.loadmat(path)
    except (ValueError, TypeError, OSError, scipy.io.matlab.MatReadError) as exc:
        raise ValueError(f"{path}: not a readable MATLAB file ({exc})") from exc
    if "detection" not in mat:
        keys = sorted(k for k in mat if not k.startswith("__"))
        raise ValueError(f"{path}: no 'detection' array (keys: {keys})")
    xy = np.asarray(mat["detection"]).astype(np.float64)
    if xy.size == 0:
        return np.zeros((0, 2))
    if xy.ndim != 2 or xy.shape[1] != 2:
        raise ValueError(f"{path}: 'detection' must be (K, 2) x, y; got shape {xy.shape}")
    return xy[:, ::-1] - 1.0


def _load(folder: Path, split: str, mpp: float) -> Sample:
    name = folder.name
    image_path = folder / f"{name}.bmp"
    image = np.asarray(Image.open(image_path).convert("RGB"))
    det_path = folder / f"{name}_detection.mat"
    detection = read_point_mat(det_path)
    if len(detection) == 0:
        raise ValueError(f"{det_path}: no marked nuclei")
    detection = check_points(np.column_stack([detection, np.zeros(len(detection))]),
                             image.shape[:2], len(CRC_CLASSES), det_path)[:, :2]
    rows = []
    for k, cls in enumerate(CRC_CLASSES[1:], start=1):
        path = folder / f"{name}_{cls}.mat"
        if not path.is_file():
            raise ValueError(f"{path}: missing (every image has one file per class)")
        rc = read_point_mat(path)
        rows.append(check_points(np.column_stack([rc, np.full(len(rc), k, np.float64)]),
                                 image.shape[:2], len(CRC_CLASSES), path))
    typed = np.concatenate(rows)
    # detection points without a class point on them: marked nuclei of no class
    if len(typed):
        d = np.hypot(*(detection[:, None, :] - typed[None, :, :2]).transpose(2, 0, 1))
        untyped = detection[d.min(axis=1) > _SAME_POINT_PX]
    else:
        untyped = detection
    points = np.concatenate([typed, np.column_stack([untyped, np.zeros(len(untyped))])])
    return Sample(
        name=name,
        image=image,
        inst_map=np.zeros(image.shape[:2], np.int32),
        type_map=None,
        class_names=CRC_CLASSES,
        mpp=mpp,
        group=name,
        meta={"source": str(image_path), "split": split},
        points=points,
    )


def read_crchistophenotypes(
    root: Path,
    *,
    splits: tuple[str, ...] = ("train", "validation", "test"),
    mpp: float = CRC_MPP,
    on_error: OnError = "fail",
) -> list[Sample]:
    """Every imageN folder of the given splits under `root` (splits that are absent are
    skipped), points in `Sample.points` with the classes of `CRC_CLASSES`."""
    root = Path(root)
    folders = [(f, s) for s in splits if (root / s).is_dir()
               for f in sorted((root / s).iterdir()) if f.is_dir()]
    if not folders:
        raise FileNotFoundError(f"no image folders under {root}/{{{','.join(splits)}}}")
    return load_all(folders, lambda it: _load(it[0], it[1], mpp), on_error,
                    name=lambda it: str(it[0]))
