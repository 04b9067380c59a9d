"""Metrics: hand-computed cases, perfect/empty inputs, and agreement with a slow, literal
transcription of the published definitions (HoVer-Net stats_utils / compute_stats)."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from scipy.optimize import linear_sum_assignment

from wsi_pipeline.evaluation import (
    DatasetEvaluator,
    Instances,
    TypeCounts,
    aji,
    aji_plus,
    dice,
    instance_scores,
    pair_centroids,
    panoptic_quality,
    radius_px,
)
from wsi_pipeline.labels import relabel


def _literal_scores(true, pred):
    """Per-instance masks and explicit loops, exactly as the definitions read."""
    t_ids = [i for i in np.unique(true) if i]
    p_ids = [i for i in np.unique(pred) if i]
    inter = np.zeros((len(t_ids), len(p_ids)))
    union = np.zeros_like(inter)
    for a, ti in enumerate(t_ids):
        tm = true == ti
        for b, pi in enumerate(p_ids):
            pm = pred == pi
            inter[a, b] = np.logical_and(tm, pm).sum()
            union[a, b] = np.logical_or(tm, pm).sum()
    t_area = np.array([(true == i).sum() for i in t_ids])
    p_area = np.array([(pred == i).sum() for i in p_ids])
    iou_eps = inter / (union + 1e-6)
    # AJI: best prediction per truth, predictions may repeat
    num = den = 0.0
    used = set()
    for a in range(len(t_ids)):
        if len(p_ids) and iou_eps[a].max() > 0:
            b = int(np.argmax(iou_eps[a]))
            num += inter[a, b]
            den += union[a, b]
            used.add(b)
        else:
            den += t_area[a]
    den += sum(p_area[b] for b in range(len(p_ids)) if b not in used)
    aji_ref = num / den
    # AJI+: Hungarian one-to-one
    r, c = linear_sum_assignment(-iou_eps)
    keep = iou_eps[r, c] > 0
    r, c = r[keep], c[keep]
    den = union[r, c].sum() + t_area[np.setdiff1d(np.arange(len(t_ids)), r)].sum()
    den += p_area[np.setdiff1d(np.arange(len(p_ids)), c)].sum()
    aji_plus_ref = inter[r, c].sum() / den
    # PQ at 0.5
    iou = inter / np.maximum(union, 1)
    pairs = np.argwhere(iou > 0.5)
    tp, fp, fn = len(pairs), len(p_ids) - len(pairs), len(t_ids) - len(pairs)
    dq = tp / (tp + 0.5 * fp + 0.5 * fn)
    sq = iou[iou > 0.5].sum() / (tp + 1e-6)
    d = 2 * np.logical_and(true > 0, pred > 0).sum() / ((true > 0).sum() + (pred > 0).sum())
    return {"dice": d, "aji": aji_ref, "aji_plus": aji_plus_ref, "dq": dq, "sq": sq, "pq": dq * sq}


def _random_instances(rng, shape=(48, 48), n=12):
    """Random overlapping rectangles, painted in order, with non-contiguous ids."""
    out = np.zeros(shape, np.int32)
    for k in range(n):
        r, c = rng.integers(0, shape[0] - 4), rng.integers(0, shape[1] - 4)
        h, w = rng.integers(3, 12, size=2)
        out[r : r + h, c : c + w] = 3 * k + 7
    return out


@pytest.mark.parametrize("seed", range(8))
def test_agrees_with_literal_definitions(seed):
    rng = np.random.default_rng(seed)
    true = _random_instances(rng)
    pred = true.copy()
    pred[rng.random(true.shape) < 0.15] = 0  # erode, shift and re-split a little
    pred = np.roll(pred, rng.integers(-2, 3), axis=1)
    pred[_random_instances(rng, n=4) > 0] = 500
    got, ref = instance_scores(true, pred), _literal_scores(true, pred)
    for key, value in ref.items():
        assert got[key] == pytest.approx(value, abs=1e-6), key


def test_hand_computed_partial_match():
    true = np.zeros((4, 8), np.int32)
    true[0:2, 0:2] = 1
    true[0:2, 4:6] = 2
    pred = np.zeros_like(true)
    pred[0:2, 0:3] = 5  # IoU 4/6 with truth 1, misses truth 2
    res = panoptic_quality(true, pred)
    assert (res.tp, res.fp, res.fn) == (1, 0, 1)
    assert (
        res.dq == pytest.approx(2 / 3)
        and res.sq == pytest.approx(2 / 3)
        and res.pq == pytest.approx(4 / 9)
    )
    assert aji(true, pred) == pytest.approx(4 / 10)
    assert aji_plus(true, pred) == pytest.approx(4 / 10)
    assert dice(true, pred) == pytest.approx(8 / 14)


def test_aji_overpenalises_where_aji_plus_does_not():
    true = np.zeros((2, 4), np.int32)
    true[:, 0:2], true[:, 2:4] = 1, 2
    pred = np.ones_like(true)  # one prediction covering both
    assert aji(true, pred) == pytest.approx(8 / 16)  # the prediction counted for both truths
    assert aji_plus(true, pred) == pytest.approx(4 / 12)  # paired once, the other truth is missed
    assert panoptic_quality(true, pred).pq == 0.0  # IoU exactly 0.5 is not a match


def test_perfect_prediction_scores_one():
    rng = np.random.default_rng(3)
    true = _random_instances(rng)
    pred = relabel(true) * 2  # same partition, different ids
    assert all(v == pytest.approx(1.0) for v in instance_scores(true, pred).values())


def test_empty_sides_without_division_errors():
    true = _random_instances(np.random.default_rng(1))
    empty = np.zeros_like(true)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        one_sided = instance_scores(true, empty)
        other_side = instance_scores(empty, true)
        both = instance_scores(empty, empty)
    assert all(v == 0.0 for v in one_sided.values())
    assert all(v == 0.0 for v in other_side.values())
    assert all(np.isnan(v) for v in both.values())


def test_pairing_and_type_scores_by_hand():
    pairs, un_t, un_p = pair_centroids(
        [[0, 0], [10, 0], [50, 50]], [[1, 0], [10, 1], [90, 90]], radius=3
    )
    assert pairs.tolist() == [[0, 0], [1, 1]] and un_t.tolist() == [2] and un_p.tolist() == [2]
    counts = TypeCounts()
    counts.add([[0, 0], [10, 0], [50, 50]], [1, 1, 2], [[1, 0], [10, 1]], [1, 2], radius=3)
    s = counts.scores([1, 2])
    assert s["f_d"] == pytest.approx(4 / 5)
    assert s["type_acc"] == pytest.approx(0.5)
    # type 1: tp 1, one type-1 truth called 2 (fn_c, weight 2) → 2 / (2 + 2)
    assert s["f_c_1"] == pytest.approx(0.5)
    # type 2: tp 0 → 0, whatever the denominator
    assert s["f_c_2"] == 0.0
    assert radius_px(0.25) == pytest.approx(12) and radius_px(0.5) == pytest.approx(6)


def test_pairing_handles_empty_sets():
    pairs, un_t, un_p = pair_centroids(np.zeros((0, 2)), [[1, 1]], 12)
    assert pairs.shape == (0, 2) and un_t.size == 0 and un_p.tolist() == [0]
    counts = TypeCounts()
    counts.add(np.zeros((0, 2)), [], np.zeros((0, 2)), [], 12)
    assert np.isnan(counts.scores([1])["f_d"])


def test_dataset_pooling_of_per_class_pq():
    true = np.zeros((10, 20), np.int32)
    true[0:4, 0:4], true[0:4, 10:14] = 1, 2
    pred = true.copy()
    ev = DatasetEvaluator(type_ids=[1, 2])
    # image 1: both right, types right; image 2: second nucleus typed wrong
    ev.add("a", Instances(true, np.array([1, 2])), Instances(pred, np.array([1, 2])))
    ev.add("b", Instances(true, np.array([1, 2])), Instances(pred, np.array([1, 1])))
    s = ev.summary()
    assert s["pq"] == pytest.approx(1.0)
    # class 1 pooled: tp 2, fp 1 → DQ 2 / 2.5; class 2: tp 1, fn 1 → DQ 1 / 1.5
    assert s["pq_1"] == pytest.approx(0.8) and s["pq_2"] == pytest.approx(2 / 3)
    assert s["mpq"] == pytest.approx((0.8 + 2 / 3) / 2)
    assert s["f_d"] == pytest.approx(1.0) and s["type_acc"] == pytest.approx(0.75)
    assert len(ev.per_image()) == 2


def test_detection_only_scoring_reports_f_d_without_type_scores() -> None:
    from wsi_pipeline.evaluation import DatasetEvaluator, Instances

    true = np.zeros((40, 40), np.int32)
    true[2:8, 2:8] = 1
    true[20:28, 20:28] = 2
    pred = np.zeros_like(true)
    pred[2:8, 2:8] = 1  # one found, one missed
    ev = DatasetEvaluator(type_ids=[], mpp=0.25)
    ev.add("x", Instances(true, np.ones(2, np.int64)), Instances(pred, np.ones(1, np.int64)))
    s = ev.summary()
    assert s["f_d"] == pytest.approx(2 / 3)
    assert "mpq" not in s and not any(k.startswith(("f_c_", "pq_")) for k in s)
