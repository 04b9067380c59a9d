"""Point labels: checks, class maps, resampling, and the targets they give the type branch."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from wsi_pipeline.datasets.dataset import NucleusDataset
from wsi_pipeline.datasets.points import (
    POINTS_ONLY,
    apply_point_targets,
    check_points,
    point_targets,
    remap_point_classes,
    scale_points,
)
from wsi_pipeline.datasets.rescale import to_mpp
from wsi_pipeline.datasets.sample import Sample
from wsi_pipeline.model.losses import IGNORE, multitask_loss
from wsi_pipeline.training.config import LossConfig

SRC = ("background", "tumor", "lymph")
MODEL = ("background", "other", "inflammatory", "epithelial", "spindle")


def _point_sample(points, shape=(64, 64)) -> Sample:
    return Sample("p", np.full((*shape, 3), 200, np.uint8), np.zeros(shape, np.int32), None, SRC,
                  0.25, points=np.asarray(points, np.float64))


def test_check_points_names_the_file_and_the_problem(tmp_path):
    src = tmp_path / "labels.txt"
    with pytest.raises(ValueError, match=r"labels.txt: 1 point\(s\) outside the 10×8 image"):
        check_points([[2, 3, 1], [20, 3, 1]], (8, 10), 3, src)
    with pytest.raises(ValueError, match="labels.txt: unknown class 7"):
        check_points([[2, 3, 7]], (8, 10), 3, src)
    with pytest.raises(ValueError, match=r"labels.txt: points must be \(K, 3\)"):
        check_points([[2, 3]], (8, 10), 3, src)
    with pytest.raises(ValueError, match="labels.txt: non-finite"):
        check_points([[np.nan, 3, 1]], (8, 10), 3, src)
    # a click just outside the border (annotators do that) is moved onto it
    assert check_points([[-1.2, 9.9, 1]], (8, 10), 3, src)[0, :2].tolist() == [0, 9]


def test_class_map_renames_and_refuses_unknown_or_missing_names():
    s = _point_sample([[5, 5, 1], [9, 9, 2]])
    out = remap_point_classes(s, {"tumor": "epithelial", "lymph": None}, MODEL)
    assert out.points[:, 2].tolist() == [3, 0] and out.class_names == MODEL
    with pytest.raises(ValueError, match="no entry for the dataset's class 'lymph'"):
        remap_point_classes(s, {"tumor": "epithelial"}, MODEL)
    with pytest.raises(ValueError, match="'tumor' -> 'tumour'"):
        remap_point_classes(s, {"tumor": "tumour", "lymph": None}, MODEL)
    with pytest.raises(ValueError, match=r"does not have: \['mitosis'\]"):
        remap_point_classes(s, {"tumor": "epithelial", "lymph": None, "mitosis": None}, MODEL)


def test_resampling_moves_points_with_the_pixels():
    s = _point_sample([[0, 0, 1], [31.5, 15, 2]], shape=(32, 16))
    s.mpp = 0.5
    out = to_mpp(s, 0.25)
    assert out.image.shape[:2] == (64, 32)
    assert out.points[:, :2].tolist() == [[0.5, 0.5], [63.5, 30.5]]
    assert scale_points(out.points, (0.5, 0.5))[:, :2] == pytest.approx(s.points[:, :2])


def _pred() -> np.ndarray:
    pred = np.zeros((64, 64), np.int32)
    pred[5:15, 5:15] = 1     # point inside -> this instance
    pred[30:40, 30:40] = 2   # two points of different classes -> disks instead
    pred[50:60, 5:12] = 3    # a point 1 px away -> snapped onto it
    return pred


def test_point_targets_label_the_instance_under_the_point_and_ignore_the_rest():
    points = np.array([[10, 10, 3], [32, 32, 2], [38, 38, 4], [55, 13, 1], [20, 50, 2], [45, 45, 0]])
    inst, typ = point_targets(points, _pred(), mpp=0.25, disk_um=1.0, snap_um=0.5)
    assert (typ[5:15, 5:15] == 3).all() and len(np.unique(inst[5:15, 5:15])) == 1
    assert (typ[50:60, 5:12] == 1).all()
    # the disputed instance is not given wholesale to either class: two small disks
    assert typ[32, 32] == 2 and typ[38, 38] == 4 and typ[35, 35] == IGNORE
    # the point with no instance gets a disk of 1 µm = 4 px; the unclassified point nothing
    assert typ[20, 50] == 2 and typ[20, 55] == IGNORE and typ[45, 45] == IGNORE
    assert ((inst > 0) == (typ != IGNORE)).all()
    labelled = inst > 0
    assert (typ[~labelled] == IGNORE).all() and len(np.unique(inst[labelled])) == 5


def test_unlabelled_pixels_teach_nothing_to_any_branch():
    """The loss's gradient is zero at every pixel no point labels (NC), and everywhere for NS
    and HV: an unmarked nucleus is neither background nor any class."""
    s = remap_point_classes(_point_sample([[10, 10, 1]]), {"tumor": "epithelial", "lymph": None},
                            MODEL)
    s = apply_point_targets(s, _pred(), 0.25)
    assert s.meta[POINTS_ONLY]
    item = NucleusDataset([s])[0]
    assert (item["ns"] == IGNORE).all()
    assert set(item["nc"].unique().tolist()) == {IGNORE, 3}
    batch = {k: v[None] for k, v in item.items()}
    out = {"ns": torch.randn(1, 2, 64, 64, requires_grad=True),
           "hv": torch.randn(1, 2, 64, 64, requires_grad=True),
           "nc": torch.randn(1, 5, 64, 64, requires_grad=True)}
    total, terms = multitask_loss(out, batch, torch.ones(5, 5) - torch.eye(5), LossConfig())
    total.backward()
    assert out["ns"].grad.abs().sum() == 0 and out["hv"].grad.abs().sum() == 0
    unlabelled = (item["nc"] == IGNORE)
    assert out["nc"].grad[0][:, unlabelled].abs().sum() == 0
    assert out["nc"].grad[0][:, ~unlabelled].abs().sum() > 0
    assert terms["ns_ce"] == 0 and terms["hv_mse"] == 0


def test_padding_a_small_point_image_pads_the_types_with_ignore():
    s = apply_point_targets(_point_sample([[10, 10, 1]], shape=(40, 40)), _pred()[:40, :40], 0.25)
    item = NucleusDataset([s], patch_size=64, crop="center")[0]
    assert (item["nc"][:12] == IGNORE).all()
