"""HV targets (HoVer-Net definition) on hand-built and real instance maps."""

from __future__ import annotations

import numpy as np

from wsi_pipeline.datasets.targets import hv_maps


def test_hand_built_bar():
    inst = np.zeros((5, 7), np.int32)
    inst[2, 1:6] = 7  # a 1×5 bar: x offsets -2..2 from its centre, y offset 0
    hv = hv_maps(inst)
    assert hv.dtype == np.float32 and hv.shape == (2, 5, 7)
    np.testing.assert_allclose(hv[0, 2, 1:6], [-1, -0.5, 0, 0.5, 1])
    assert np.all(hv[1] == 0)
    assert np.all(hv[:, inst == 0] == 0)


def test_each_side_scaled_separately():
    inst = np.zeros((3, 6), np.int32)
    inst[1, 0:4] = 1  # centre at x = 1.5: offsets -1.5, -0.5, 0.5, 1.5
    inst[1, 5] = 2  # a single pixel: all zeros
    hv = hv_maps(inst)
    np.testing.assert_allclose(hv[0, 1, 0:4], [-1, -1 / 3, 1 / 3, 1])
    assert hv[0, 1, 5] == 0


def test_real_patch_range_and_background(shared_data):
    inst = np.load(shared_data / "consep_patches/train/inst/train_10_003.npy")
    hv = hv_maps(inst)
    assert hv.min() == -1.0 and hv.max() == 1.0
    assert np.all(hv[:, inst == 0] == 0)
    # Every nucleus spans the full range on both axes (unless it is one pixel wide).
    for i in np.unique(inst)[1:5]:
        assert hv[0][inst == i].min() == -1 and hv[0][inst == i].max() == 1


def test_empty_map():
    assert not hv_maps(np.zeros((4, 4), np.int32)).any()
