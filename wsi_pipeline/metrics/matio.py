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
from scipy import ndimage as ndi

from wsi_pipeline.atomic import atomic_path
from wsi_pipeline.metrics.dataset import Instances


def _column(value: np.ndarray | None, n: int, dtype: type) -> np.ndarray | None:
    if value is None:
        return None
    arr = np.asarray(value, dtype=dtype)
    if arr.size == 0:
        return np.zeros(0, dtype=dtype) if n == 0 else None
    return arr.reshape(-1)


def read_instance_mat(path: str | os.PathLike) -> Instances:
    """Read a HoVer-Net ``.mat``; ``inst_type``/``inst_centroid`` are optional."""
    mat = sio.loadmat(str(path))
    if "inst_map" not in mat:
        raise KeyError(f"{path}: no 'inst_map' in .mat file")
    inst_map = np.asarray(mat["inst_map"]).astype(np.int32)
    n = int(np.count_nonzero(np.unique(inst_map)))
    types = _column(mat.get("inst_type"), n, np.int64)
    centroids = mat.get("inst_centroid")
    if centroids is not None:
        centroids = np.asarray(centroids, dtype=np.float64).reshape(-1, 2)
        if len(centroids) != n:
            centroids = None  # stale or absent: recompute from the map
    return Instances(inst_map=inst_map, types=types, centroids=centroids)


def read_consep_patch(
    inst_path: str | os.PathLike, type_mat_path: str | os.PathLike | None
) -> Instances:
    """CoNSeP patch layout: ``inst/<stem>.npy`` (ids not contiguous) + ``type_mat/<stem>.mat``."""
    inst_map = np.load(inst_path).astype(np.int32)
    types = centroids = None
    if type_mat_path is not None and Path(type_mat_path).exists():
        mat = sio.loadmat(str(type_mat_path))
        n = int(np.count_nonzero(np.unique(inst_map)))
        types = _column(mat.get("inst_type"), n, np.int64)
        if "inst_centroid" in mat and np.asarray(mat["inst_centroid"]).size == 2 * n:
            centroids = np.asarray(mat["inst_centroid"], dtype=np.float64).reshape(-1, 2)
    return Instances(inst_map=inst_map, types=types, centroids=centroids)


def centroids_xy(inst_map: np.ndarray) -> np.ndarray:
    """(N, 2) centres of mass as (x, y), ids in ascending order."""
    ids = np.unique(inst_map)
    ids = ids[ids != 0]
    if ids.size == 0:
        return np.zeros((0, 2))
    rc = np.asarray(ndi.center_of_mass(np.ones(inst_map.shape), inst_map, ids)).reshape(-1, 2)
    return rc[:, ::-1].copy()


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
        out["inst_type_prob"] = np.asarray(inst_type_prob, dtype=np.float32).reshape(n, -1)
    if extra:
        out.update(extra)
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        sio.savemat(fh, out, do_compression=True)  # a file object: savemat would append .mat
    return path
