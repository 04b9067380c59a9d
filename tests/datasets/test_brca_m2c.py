"""BRCA-M2C reader: the real files, patient groups, and clear errors for broken label files."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from wsi_pipeline.datasets import SampleError, read_brca_m2c
from wsi_pipeline.datasets.brca_m2c import patient_of


def test_real_files_points_and_patient_groups(shared_data):
    samples = read_brca_m2c(shared_data / "brca_m2c")
    assert len(samples) == 89  # the split lists name files that are not here: skipped
    pts = np.concatenate([s.points for s in samples])
    # SOURCES.md: lymphocyte 3,541 + 1,358, tumour 9,658 + 733, stromal 5,125 + 1,042
    assert np.bincount(pts[:, 2].astype(int), minlength=4)[1:].tolist() == [4899, 10391, 6167]
    assert all(s.mpp == 0.5 and s.group.startswith("TCGA-") and len(s.group) == 12 for s in samples)
    val = {s.group for s in samples if s.meta["split"] == "val"}
    train = {s.group for s in samples if s.meta["split"] == "train"}
    assert val & train == {"TCGA-A7-A0DB", "TCGA-A7-A13G"}  # why the config splits by patient
    for s in samples[:5]:
        h, w = s.image.shape[:2]
        assert (s.points[:, 0] <= h - 1).all() and (s.points[:, 1] <= w - 1).all()


def _one(shared_data, tmp_path):
    src = shared_data / "brca_m2c"
    name = (src / "brca_ds_val.txt").read_text().split()[0]
    (tmp_path / "images").mkdir()
    (tmp_path / "labels").mkdir()
    shutil.copy(src / "images" / name, tmp_path / "images" / name)
    label = tmp_path / "labels" / f"{name[:-4]}_gt_class_coords.txt"
    shutil.copy(src / "labels" / label.name, label)
    (tmp_path / "brca_ds_val.txt").write_text("\ufeff" + name + "\r\n")  # spreadsheet-saved list
    return label


@pytest.mark.parametrize(("text", "message"), [
    ("", "empty label file"),
    ("10 20\n", r"line 1: expected 'Y X class' integers"),
    ("10 20 1\n10 x 2\n", r"line 2: expected 'Y X class' integers, got '10 x 2'"),
    ("10 20 4\n", "unknown class 4"),
    ("10 20 0\n", "class 0 is not a BRCA-M2C class"),
    ("10 5000 1\n", r"1 point\(s\) outside the"),
])
def test_broken_label_files_are_named(shared_data, tmp_path, text, message):
    label = _one(shared_data, tmp_path)
    assert len(read_brca_m2c(tmp_path)) == 1
    label.write_text(text)
    with pytest.raises(SampleError, match=f"{label.name}.*{message}"):
        read_brca_m2c(tmp_path)


def test_patient_of():
    assert patient_of("TCGA-A7-A0DB-01Z-00-DX1_168501_13501_1000_1000_0.986") == "TCGA-A7-A0DB"
    assert patient_of("other") == "other"
