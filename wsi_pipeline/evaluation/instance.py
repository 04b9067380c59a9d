"""Instance-level segmentation scores: Dice, AJI, AJI+, DQ/SQ/PQ.

The definitions follow the reference implementation published with HoVer-Net
(Graham et al., 2019, ``metrics/stats_utils.py``), so numbers are comparable with the
literature. The reference loops over instances; here every pairwise intersection comes
from one joint histogram of (true id, pred id) label pairs, which is what makes the scores
cheap enough to run on whole datasets.

Undefined scores (both maps empty, so 0/0) are returned as NaN instead of raising;
dataset averages skip them (see :mod:`wsi_pipeline.evaluation.dataset`). When only one side
is empty the scores are 0, as in the reference.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.optimize import linear_sum_assignment

from wsi_pipeline.labels import relabel

# The reference adds this to the union before dividing in AJI/AJI+; keeping it makes the
# argmax / Hungarian tie-breaking identical.
_AJI_EPS = 1.0e-6


@dataclass(frozen=True)
class Overlap:
    """Pairwise pixel counts between the instances of two contiguous label maps."""

    inter: np.ndarray  # (n_true, n_pred) intersection areas
    true_area: np.ndarray  # (n_true,)
    pred_area: np.ndarray  # (n_pred,)

    @property
    def union(self) -> np.ndarray:
        return self.true_area[:, None] + self.pred_area[None, :] - self.inter


def overlap(true: np.ndarray, pred: np.ndarray) -> Overlap:
    """Joint histogram of contiguous label maps; ids need not be contiguous (they are remapped)."""
    true = relabel(true)
    pred = relabel(pred)
    if true.shape != pred.shape:
        raise ValueError(f"shape mismatch: true {true.shape} vs pred {pred.shape}")
    n_true, n_pred = int(true.max(initial=0)), int(pred.max(initial=0))
    joint = (
        np.bincount(
            true.ravel().astype(np.int64) * (n_pred + 1) + pred.ravel(),
            minlength=(n_true + 1) * (n_pred + 1),
        )
        .reshape(n_true + 1, n_pred + 1)
        .astype(np.float64)
    )
    return Overlap(
        inter=joint[1:, 1:], true_area=joint[1:, :].sum(axis=1), pred_area=joint[:, 1:].sum(axis=0)
    )


def _ratio(num: float | np.number, den: float | np.number) -> float:
    return float(num / den) if den > 0 else float("nan")


def dice(true: np.ndarray, pred: np.ndarray) -> float:
    """Binary (foreground) Dice, the reference's ``get_dice_1``."""
    t, p = np.asarray(true) > 0, np.asarray(pred) > 0
    return _ratio(2.0 * np.count_nonzero(t & p), np.count_nonzero(t) + np.count_nonzero(p))


def _unpaired_union(ov: Overlap, paired_true: np.ndarray, paired_pred: np.ndarray) -> float:
    t_free = np.ones(ov.true_area.size, bool)
    t_free[paired_true] = False
    p_free = np.ones(ov.pred_area.size, bool)
    p_free[paired_pred] = False
    return float(ov.true_area[t_free].sum() + ov.pred_area[p_free].sum())


def aji(true: np.ndarray, pred: np.ndarray, ov: Overlap | None = None) -> float:
    """Aggregated Jaccard Index (MoNuSeg): each truth paired with its best-IoU prediction.

    A prediction may serve several truths, which is the over-penalisation AJI+ removes.
    """
    ov = ov or overlap(true, pred)
    if ov.inter.size == 0:
        return _ratio(0.0, ov.true_area.sum() + ov.pred_area.sum())
    union = ov.union
    iou = ov.inter / (union + _AJI_EPS)
    best = np.argmax(iou, axis=1)
    t_idx = np.nonzero(iou[np.arange(iou.shape[0]), best] > 0.0)[0]
    p_idx = best[t_idx]
    inter = ov.inter[t_idx, p_idx].sum()
    total = union[t_idx, p_idx].sum() + _unpaired_union(ov, t_idx, p_idx)
    return _ratio(inter, total)


def aji_plus(true: np.ndarray, pred: np.ndarray, ov: Overlap | None = None) -> float:
    """AJI+ (HoVer-Net): one-to-one pairing by maximum total IoU (Hungarian)."""
    ov = ov or overlap(true, pred)
    if ov.inter.size == 0:
        return _ratio(0.0, ov.true_area.sum() + ov.pred_area.sum())
    union = ov.union
    iou = ov.inter / (union + _AJI_EPS)
    t_idx, p_idx = linear_sum_assignment(-iou)
    keep = iou[t_idx, p_idx] > 0.0
    t_idx, p_idx = t_idx[keep], p_idx[keep]
    inter = ov.inter[t_idx, p_idx].sum()
    total = union[t_idx, p_idx].sum() + _unpaired_union(ov, t_idx, p_idx)
    return _ratio(inter, total)


@dataclass(frozen=True)
class PQResult:
    """Panoptic quality of one image, with the pairing so callers can pool counts."""

    tp: int
    fp: int
    fn: int
    iou_sum: float
    paired_true: np.ndarray  # 0-based indices into the ascending true ids
    paired_pred: np.ndarray

    @property
    def dq(self) -> float:
        return _ratio(self.tp, self.tp + 0.5 * self.fp + 0.5 * self.fn)

    @property
    def sq(self) -> float:
        if self.tp + self.fp + self.fn == 0:
            return float("nan")
        return self.iou_sum / self.tp if self.tp else 0.0

    @property
    def pq(self) -> float:
        return self.dq * self.sq


def pq_from_overlap(ov: Overlap, match_iou: float = 0.5) -> PQResult:
    """Pair instances with IoU > ``match_iou``; unique by construction when it is >= 0.5,
    otherwise by Hungarian assignment on IoU (as the reference does)."""
    n_true, n_pred = ov.inter.shape
    if ov.inter.size:
        iou = np.where(ov.inter > 0, ov.inter / np.maximum(ov.union, 1.0), 0.0)
    else:
        iou = np.zeros((n_true, n_pred))
    if match_iou >= 0.5:
        t_idx, p_idx = np.nonzero(iou > match_iou)
    else:
        t_idx, p_idx = linear_sum_assignment(-iou)
        keep = iou[t_idx, p_idx] > match_iou
        t_idx, p_idx = t_idx[keep], p_idx[keep]
    tp = int(t_idx.size)
    return PQResult(
        tp=tp,
        fp=n_pred - tp,
        fn=n_true - tp,
        iou_sum=float(iou[t_idx, p_idx].sum()),
        paired_true=t_idx,
        paired_pred=p_idx,
    )


def panoptic_quality(true: np.ndarray, pred: np.ndarray, match_iou: float = 0.5) -> PQResult:
    """DQ, SQ and PQ of one image (the reference's ``get_fast_pq``)."""
    return pq_from_overlap(overlap(true, pred), match_iou)
