"""Scoring a whole dataset: per-image instance scores averaged, type scores pooled.

This mirrors how HoVer-Net's ``compute_stats`` reports results: Dice, AJI, AJI+, DQ, SQ
and PQ are computed per image and averaged (images where a score is undefined, both sides
empty, are skipped); detection/classification (F_d, F_c) and per-class PQ are pooled over
the dataset — counts of TP, FP, FN and the IoU sum per class are added up before the ratio
is taken (the "mPQ+" of the CoNIC challenge), so rare classes in single images do not
dominate. mPQ is the mean of the per-class PQs.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from scipy import ndimage as ndi

from wsi_pipeline.evaluation.detection import TypeCounts, radius_px
from wsi_pipeline.evaluation.instance import (
    Overlap,
    aji,
    aji_plus,
    dice,
    overlap,
    pq_from_overlap,
)

INSTANCE_SCORES = ("dice", "aji", "aji_plus", "dq", "sq", "pq")


def centroids_xy(inst_map: np.ndarray) -> np.ndarray:
    """(N, 2) centres of mass as (x, y), ids in ascending order."""
    ids = np.unique(inst_map)
    ids = ids[ids != 0]
    if ids.size == 0:
        return np.zeros((0, 2))
    rc = np.asarray(ndi.center_of_mass(np.ones(inst_map.shape), inst_map, ids)).reshape(-1, 2)
    return rc[:, ::-1].copy()


@dataclass(frozen=True)
class Instances:
    """One image's instances: label map plus per-instance types/centroids in ascending-id order."""

    inst_map: np.ndarray
    types: np.ndarray | None = None
    centroids: np.ndarray | None = None  # (N, 2) as (x, y)

    def ids(self) -> np.ndarray:
        ids = np.unique(self.inst_map)
        return ids[ids != 0]

    def xy(self) -> np.ndarray:
        if self.centroids is not None:
            return np.asarray(self.centroids, dtype=np.float64).reshape(-1, 2)
        return centroids_xy(self.inst_map)

    def type_array(self) -> np.ndarray:
        n = self.ids().size
        if self.types is None:
            return np.zeros(n, np.int64)
        types = np.asarray(self.types, dtype=np.int64).reshape(-1)
        if types.size != n:
            raise ValueError(f"{types.size} types for {n} instances")
        return types


@dataclass
class _ClassCounts:
    tp: int = 0
    fp: int = 0
    fn: int = 0
    iou_sum: float = 0.0

    def pq(self) -> dict[str, float]:
        den = self.tp + 0.5 * self.fp + 0.5 * self.fn
        if den == 0:
            return {"dq": float("nan"), "sq": float("nan"), "pq": float("nan")}
        dq = self.tp / den
        sq = self.iou_sum / self.tp if self.tp else 0.0
        return {"dq": dq, "sq": sq, "pq": dq * sq}


def instance_scores(
    true: np.ndarray, pred: np.ndarray, ov: Overlap | None = None
) -> dict[str, float]:
    """Dice, AJI, AJI+, DQ, SQ, PQ of one image."""
    ov = ov or overlap(true, pred)
    res = pq_from_overlap(ov)
    return {
        "dice": dice(true, pred),
        "aji": aji(true, pred, ov),
        "aji_plus": aji_plus(true, pred, ov),
        "dq": res.dq,
        "sq": res.sq,
        "pq": res.pq,
    }


@dataclass
class DatasetEvaluator:
    """Accumulates images one at a time, so a large dataset never sits in memory."""

    type_ids: list[int] | None = None
    mpp: float = 0.25
    match_iou: float = 0.5
    rows: list[dict] = field(default_factory=list)
    _types: TypeCounts = field(default_factory=TypeCounts)
    _classes: dict[int, _ClassCounts] = field(default_factory=dict)
    _n_typed: int = 0  # images added with types on both sides (F_d needs centroids paired)

    def add(self, name: str, true: Instances, pred: Instances) -> dict[str, Any]:
        ov = overlap(true.inst_map, pred.inst_map)
        row: dict[str, Any] = {"name": name, "n_true": int(ov.true_area.size),
                               "n_pred": int(ov.pred_area.size)}
        row.update(instance_scores(true.inst_map, pred.inst_map, ov))
        self.rows.append(row)
        if true.types is not None and pred.types is not None:
            t_types, p_types = true.type_array(), pred.type_array()
            self._types.add(true.xy(), t_types, pred.xy(), p_types, radius_px(self.mpp))
            self._n_typed += 1
            for c in self._class_ids(t_types, p_types):
                sub = Overlap(
                    inter=ov.inter[np.ix_(t_types == c, p_types == c)],
                    true_area=ov.true_area[t_types == c],
                    pred_area=ov.pred_area[p_types == c],
                )
                res = pq_from_overlap(sub, self.match_iou)
                acc = self._classes.setdefault(c, _ClassCounts())
                acc.tp += res.tp
                acc.fp += res.fp
                acc.fn += res.fn
                acc.iou_sum += res.iou_sum
        return row

    def _class_ids(self, t_types: np.ndarray, p_types: np.ndarray) -> list[int]:
        if self.type_ids is not None:
            return list(self.type_ids)
        return sorted(set(np.concatenate([t_types, p_types]).tolist()) - {0})

    def per_image(self) -> pd.DataFrame:
        return pd.DataFrame(self.rows, columns=["name", "n_true", "n_pred", *INSTANCE_SCORES])

    def summary(self) -> dict[str, float]:
        """Averaged instance scores, pooled per-class PQ, mPQ, F_d and F_c per type."""
        df = self.per_image()
        out: dict[str, float] = {"n_images": float(len(df))}
        for key in INSTANCE_SCORES:
            vals = df[key].to_numpy(dtype=np.float64)
            out[key] = float(np.nanmean(vals)) if np.isfinite(vals).any() else float("nan")
        if self._n_typed:
            ids = sorted(self._classes) if self.type_ids is None else list(self.type_ids)
            pqs = []
            for c in ids:
                scores = self._classes.get(c, _ClassCounts()).pq()
                out[f"pq_{c}"] = scores["pq"]
                pqs.append(scores["pq"])
            finite = [p for p in pqs if np.isfinite(p)]
            if ids:  # detection-only scoring (type_ids=[]) has F_d but no mPQ
                out["mpq"] = float(np.mean(finite)) if finite else float("nan")
            out.update(self._types.scores(self.type_ids))
        return out
