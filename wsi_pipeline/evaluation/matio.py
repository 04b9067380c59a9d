"""HoVer-Net's per-image ``.mat`` instance files, and the CoNSeP patch layout.

A HoVer-Net ``.mat`` holds ``inst_map`` (H, W), ``inst_type`` (N, 1), ``inst_centroid``
(N, 2) as (x, y), and for predictions also ``inst_uid`` (N, 1) and ``inst_type_prob``
(N, C). Row ``k`` of every per-instance array describes the ``k``-th instance id in
ascending order (ids 1..N when the map is contiguous).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import scipy.io as sio

from wsi_pipeline.atomic import atomic_path
from wsi_pipeline.evaluation.dataset import Instances, centroids_xy

#: The CoNSeP patch layout (consep_patches/<split>/): one place for the folder names, used by the
#: evaluation CLI, the post-processing oracle and the training reader (data/consep_patches.py).
CONSEP_IMAGE_DIR = "images"  # <stem>.jpg or .png
CONSEP_INST_DIR = "inst"  # <stem>.npy, int32 ids (not contiguous)
CONSEP_SEG_DIR = "seg_mask"  # <stem>.png, type map
CONSEP_TYPE_DIR = "type_mat"  # <stem>.mat with `inst_type` in ascending id order


def is_consep_layout(root: str | os.PathLike) -> bool:
    """Whether `root` is a CoNSeP patch folder (it has `inst/`)."""
    return (Path(root) / CONSEP_INST_DIR).is_dir()


def consep_patch_files(root: str | os.PathLike) -> dict[str, tuple[Path, Path]]:
    """stem → (``inst/<stem>.npy``, ``type_mat/<stem>.mat``) of a CoNSeP patch folder, in the
    order of the sorted instance files; the ``.mat`` may not exist (read_consep_patch allows it)."""
    root = Path(root)
    return {
        p.stem: (p, root / CONSEP_TYPE_DIR / f"{p.stem}.mat")
        for p in sorted((root / CONSEP_INST_DIR).glob("*.npy"))
    }


class MatFileError(ValueError):
    """An instance file that cannot be read or does not describe its own map; names the file."""


def _loadmat(path: str | os.PathLike) -> dict:
    try:
        return sio.loadmat(str(path))
    except FileNotFoundError:
        raise
    except Exception as exc:  # scipy raises ValueError, TypeError, MatReadError... for bad files
        raise MatFileError(f"{path}: not a readable .mat file ({exc})") from exc


def _types(mat: dict, n: int, path: str | os.PathLike) -> np.ndarray | None:
    """``inst_type`` as (N,), or None when absent (or empty for a non-empty map)."""
    value = mat.get("inst_type")
    if value is None or (np.asarray(value).size == 0 and n > 0):
        return None
    try:
        arr = np.asarray(value, dtype=np.int64).reshape(-1)
    except (TypeError, ValueError) as exc:
        raise MatFileError(f"{path}: inst_type is not an integer array ({exc})") from exc
    if arr.size != n:
        raise MatFileError(f"{path}: inst_type has {arr.size} entries for {n} instances")
    return arr


def _centroids(mat: dict, n: int, path: str | os.PathLike) -> np.ndarray | None:
    """``inst_centroid`` as (N, 2), or None when absent or empty (then derived from the map)."""
    value = mat.get("inst_centroid")
    if value is None or np.asarray(value).size == 0:
        return None
    try:
        arr = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise MatFileError(f"{path}: inst_centroid is not a numeric array ({exc})") from exc
    if arr.size != 2 * n:
        raise MatFileError(f"{path}: inst_centroid has shape {arr.shape} for {n} instances")
    return arr.reshape(n, 2)


def read_instance_mat(path: str | os.PathLike) -> Instances:
    """Read a HoVer-Net ``.mat``. ``inst_type``/``inst_centroid`` are optional but, when present,
    must have one row per instance: a MatFileError naming the file otherwise."""
    mat = _loadmat(path)
    if "inst_map" not in mat:
        raise MatFileError(f"{path}: no 'inst_map' in .mat file")
    inst_map = np.asarray(mat["inst_map"])
    if inst_map.ndim != 2 or not np.issubdtype(inst_map.dtype, np.number):
        raise MatFileError(
            f"{path}: inst_map must be a 2-D numeric array, got {inst_map.shape} {inst_map.dtype}")
    inst_map = inst_map.astype(np.int32)
    n = int(np.count_nonzero(np.unique(inst_map)))
    return Instances(inst_map=inst_map, types=_types(mat, n, path), centroids=_centroids(mat, n, path))


def read_consep_patch(
    inst_path: str | os.PathLike, type_mat_path: str | os.PathLike | None
) -> Instances:
    """CoNSeP patch layout: ``inst/<stem>.npy`` (ids not contiguous) + ``type_mat/<stem>.mat``."""
    try:
        inst_map = np.load(inst_path)
    except FileNotFoundError:
        raise
    except (OSError, ValueError) as exc:
        raise MatFileError(f"{inst_path}: not a readable .npy file ({exc})") from exc
    if inst_map.ndim != 2:
        raise MatFileError(f"{inst_path}: instance map must be 2-D, got shape {inst_map.shape}")
    inst_map = inst_map.astype(np.int32)
    types = centroids = None
    if type_mat_path is not None and Path(type_mat_path).exists():
        mat = _loadmat(type_mat_path)
        n = int(np.count_nonzero(np.unique(inst_map)))
        types = _types(mat, n, type_mat_path)
        centroids = _centroids(mat, n, type_mat_path)
    return Instances(inst_map=inst_map, types=types, centroids=centroids)


def write_instance_mat(
    path: str | os.PathLike,
    inst_map: np.ndarray,
    inst_type: np.ndarray | None = None,
    *,
    inst_centroid: np.ndarray | None = None,
    inst_type_prob: np.ndarray | None = None,
    inst_uid: np.ndarray | None = None,
    type_map: np.ndarray | None = None,
    extra: dict | None = None,
) -> Path:
    """Write a HoVer-Net compatible ``.mat`` atomically (temp file in the same folder, then rename).

    Missing per-instance arrays are derived from ``inst_map``: centroids by centre of mass,
    uids as the ids themselves, ``type_map`` by painting each instance with its type.
    ``extra`` entries (e.g. provenance strings) are stored as additional variables.
    """
    path = Path(path)
    inst_map = np.asarray(inst_map).astype(np.int32)
    ids = np.unique(inst_map)
    ids = ids[ids != 0]
    n = ids.size
    types = (
        np.zeros(n, np.int32)
        if inst_type is None
        else np.asarray(inst_type).reshape(-1).astype(np.int32)
    )
    if types.size != n:
        raise ValueError(f"inst_type has {types.size} entries for {n} instances")
    if inst_centroid is None:
        inst_centroid = centroids_xy(inst_map)
    if type_map is None:
        lut = np.zeros(int(inst_map.max(initial=0)) + 1, np.int32)
        lut[ids] = types
        type_map = lut[inst_map]
    out = {
        "inst_map": inst_map,
        "type_map": np.asarray(type_map).astype(np.int32),
        "inst_type": types.reshape(n, 1),
        "inst_centroid": np.asarray(inst_centroid, dtype=np.float64).reshape(n, 2),
        "inst_uid": (ids if inst_uid is None else np.asarray(inst_uid))
        .reshape(n, 1)
        .astype(np.int64),
    }
    if inst_type_prob is not None:
        probs = np.asarray(inst_type_prob, dtype=np.float32)
        # (N, C) as given; reshape(n, -1) cannot infer C when there are no nuclei.
        out["inst_type_prob"] = probs if probs.ndim == 2 else probs.reshape(n, -1)
    if extra:
        out.update(extra)
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        # A file object: savemat would append .mat to a name. scipy documents file-like objects
        # here; scipy-stubs 1.17 types only paths.
        sio.savemat(fh, out, do_compression=True)  # type: ignore[arg-type]
    return path
