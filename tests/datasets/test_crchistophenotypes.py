"""CRCHistoPhenotypes reader: the real files, and clear errors for broken ones."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import scipy.io

from wsi_pipeline.datasets import SampleError, read_crchistophenotypes
from wsi_pipeline.datasets.crchistophenotypes import CRC_CLASSES, read_point_mat


def test_real_files_points_classes_and_splits(shared_data):
    samples = read_crchistophenotypes(shared_data / "crchistophenotypes")
    assert len(samples) == 83
    assert {s.meta["split"] for s in samples} == {"train", "validation", "test"}
    img1 = next(s for s in samples if s.name == "img1")
    assert img1.image.shape == (500, 500, 3) and img1.mpp == 0.55 and img1.type_map is None
    pts = np.concatenate([s.points for s in samples])
    counts = np.bincount(pts[:, 2].astype(int), minlength=5)
    # SOURCES.md: epithelial 6,380, fibroblast 4,643, inflammatory 5,297, others 1,849
    assert counts[1:].tolist() == [6380, 4643, 5297, 1849]
    assert (pts[:, :2] >= 0).all() and (pts[:, :2] <= 499).all()
    # every marked nucleus is a point: the classified ones plus the rest as class 0
    det = read_point_mat(shared_data / "crchistophenotypes/train/img1/img1_detection.mat")
    assert len(img1.points) >= len(det)


def _copy(shared_data, tmp_path):
    dst = tmp_path / "train" / "img1"
    shutil.copytree(shared_data / "crchistophenotypes/train/img1", dst)
    return dst


def test_broken_files_are_named(shared_data, tmp_path):
    folder = _copy(shared_data, tmp_path)
    scipy.io.savemat(folder / "img1_others.mat", {"detection": np.array([[900.0, 5.0]])})
    with pytest.raises(SampleError, match=r"img1_others.mat: 1 point\(s\) outside the 500×500"):
        read_crchistophenotypes(tmp_path)
    scipy.io.savemat(folder / "img1_others.mat", {"points": np.zeros((1, 2))})
    with pytest.raises(SampleError, match="img1_others.mat: no 'detection' array"):
        read_crchistophenotypes(tmp_path)
    (folder / "img1_others.mat").write_bytes(b"not a mat file")
    with pytest.raises(SampleError, match="img1_others.mat: not a readable MATLAB file"):
        read_crchistophenotypes(tmp_path)
    (folder / "img1_others.mat").unlink()
    with pytest.raises(SampleError, match="img1_others.mat: missing"):
        read_crchistophenotypes(tmp_path)
    assert read_crchistophenotypes(tmp_path, on_error="skip") == []


def test_empty_class_file_is_no_points_of_that_class(shared_data, tmp_path):
    folder = _copy(shared_data, tmp_path)
    scipy.io.savemat(folder / "img1_others.mat", {"detection": np.zeros((0, 2), np.uint8)})
    (s,) = read_crchistophenotypes(tmp_path)
    assert CRC_CLASSES.index("others") not in s.points[:, 2]
