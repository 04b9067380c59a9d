"""Point scores: recall of the marked nuclei and per-class F1 over the labelled points."""

from __future__ import annotations

import numpy as np
import pytest

from wsi_pipeline.evaluation.points import PointCounts, centroids_rc, pair_within


def test_pairing_finds_every_pair_within_the_radius():
    """HoVer-Net's pairing (Hungarian on raw distances) can trade a close pair for a far one;
    here the close pairs are kept: 2 marked points, 2 predictions, both pairs within 3 px."""
    true = np.array([[0.0, 0.0], [0.0, 4.0]])
    pred = np.array([[0.0, 2.5], [0.0, 100.0]])
    pairs, unpaired = pair_within(true, pred, radius=3.0)
    assert len(pairs) == 1 and unpaired.tolist() in ([0], [1])
    pred = np.array([[0.0, 1.0], [0.0, 5.0], [0.0, 50.0]])
    pairs, unpaired = pair_within(np.array([[0.0, 0.0], [0.0, 3.9], [0.0, 90.0]]), pred, 3.0)
    assert sorted(map(tuple, pairs.tolist())) == [(0, 0), (1, 1)] and unpaired.tolist() == [2]


def test_f1_counts_misses_as_false_negatives_and_ignores_unmarked_predictions():
    counts = PointCounts()
    points = np.array([[10, 10], [10, 40], [40, 10], [40, 40], [70, 70]], float)
    classes = np.array([1, 1, 2, 2, 0])  # the last point is marked but has no class
    pred = np.array([[11, 10], [10, 41], [40, 11], [70, 70], [90, 90]], float)
    pred_types = np.array([1, 2, 2, 1, 1])  # [90, 90]: an unmarked nucleus, neither right nor wrong
    counts.add(points, classes, pred, pred_types, radius=3.0)
    scores = counts.scores()
    assert scores["recall"] == pytest.approx(4 / 5)  # [40, 40] has no prediction near it
    # class 1: TP 1, FN 1 (typed 2); class 2: TP 1, FP 1, FN 1 (missed)
    assert scores["f1_1"] == pytest.approx(2 / 3)
    assert scores["f1_2"] == pytest.approx(2 / 4)
    assert scores["f1_mean"] == pytest.approx((2 / 3 + 1 / 2) / 2)
    pooled = PointCounts()
    pooled.merge(counts)
    pooled.merge(counts)
    assert pooled.scores() == pytest.approx(scores)
    # rows: labelled class; columns: the paired nucleus' type, 0 = missed; class-0 points not in it
    assert counts.confusion_matrix(3).tolist() == [[0, 0, 0], [0, 1, 1], [1, 0, 1]]
    assert (pooled.confusion_matrix(3) == 2 * counts.confusion_matrix(3)).all()


def test_centroids_of_labels():
    inst = np.zeros((10, 10), np.int32)
    inst[2:4, 2:4] = 1
    inst[6, 5:8] = 3
    c = centroids_rc(inst)
    assert c[0].tolist() == [2.5, 2.5] and np.isnan(c[1]).all() and c[2].tolist() == [6, 6]


def test_labelled_nuclei_of_points_or_of_a_typed_mask():
    from wsi_pipeline.evaluation.points import labelled_nuclei

    inst = np.zeros((10, 10), np.int32)
    inst[2:4, 2:4] = 2
    inst[6:9, 6:9] = 5
    typ = np.where(inst == 2, 3, np.where(inst == 5, 1, 0))
    rc, cls = labelled_nuclei(None, inst, typ)
    assert rc.tolist() == [[2.5, 2.5], [7.0, 7.0]] and cls.tolist() == [3, 1]
    points = np.array([[1.0, 2.0, 4], [5.0, 6.0, 0]])
    rc, cls = labelled_nuclei(points, inst, None)  # points win; class 0 stays (marked, no class)
    assert rc.tolist() == [[1.0, 2.0], [5.0, 6.0]] and cls.tolist() == [4, 0]
    with pytest.raises(ValueError, match="type map"):
        labelled_nuclei(None, inst, None)


def test_mean_f1_leaves_out_classes_with_too_few_labels():
    """A class with a handful of labels swings the mean by a third per nucleus: it is reported
    but not averaged while another class has MIN_CLASS_SUPPORT labels."""
    from wsi_pipeline.evaluation.points import MIN_CLASS_SUPPORT

    counts = PointCounts()
    n = MIN_CLASS_SUPPORT
    rc = np.array([[10.0 * i, 0.0] for i in range(n + 2)])
    classes = np.array([1] * n + [2, 2])
    pred_types = np.array([1] * n + [1, 1])  # class 1 all right; both class-2 points called 1
    counts.add(rc, classes, rc, pred_types, radius=3.0)
    scores = counts.scores()
    assert counts.support(1) == n and counts.support(2) == 2
    assert scores["f1_2"] == 0.0 and scores["f1_1"] == pytest.approx(2 * n / (2 * n + 2))
    assert scores["f1_mean"] == scores["f1_1"]  # class 2 left out of the mean
    few = PointCounts()  # no class has MIN_CLASS_SUPPORT labels: every class counts
    few.add(rc[:2], np.array([1, 2]), rc[:2], np.array([1, 1]), radius=3.0)
    assert few.scores()["f1_mean"] == pytest.approx((2 / 3 + 0.0) / 2)
