"""Scores of predicted nuclei against point labels that mark only some of the nuclei.

An unmarked nucleus is unlabelled, so a prediction paired with no point is neither right nor
wrong, and precision cannot be measured. What can be: **recall** of the marked nuclei (a
marked point with a predicted centroid within the pairing radius, 3 µm, paired one-to-one),
and **per-class F1 over the labelled points**: a labelled point of class c paired with a
nucleus typed c is a true positive of c; typed k ≠ c, a false negative of c and a false
positive of k; unpaired, a false negative of c. F1_c = 2 TP / (2 TP + FP + FN), counts pooled over the images.
Points of class 0 (marked, no class) count for recall only. The **mean F1** averages the
classes with at least `MIN_CLASS_SUPPORT` labelled points (every class when none has that many):
a class with a handful of held-out labels swings by a third with one nucleus, and a best epoch
picked on it is picked on noise (a lab's six "other" points in `finetune-types`).

Pairing (`pair_within`): the Hungarian algorithm on distances capped at the radius, so it
finds the most pairs within the radius and, among those, the closest. HoVer-Net's pairing
(`detection.pair_centroids`, kept for the mask sets' F_d and F_c) runs it on raw distances and
drops far pairs afterwards; with a point set that marks some nuclei among many predictions, a
far point then pulls its neighbours' matches away and a marked nucleus with a prediction
0.5 µm away is counted as missed (recall 0.45 instead of 0.79 on a BRCA-M2C image).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy.optimize import linear_sum_assignment
from scipy.spatial.distance import cdist

#: the point scores of a dataset besides its per-class `f1_<t>`
POINT_KEYS = ("recall", "f1_mean")
#: labelled points a class needs to count in `f1_mean`
MIN_CLASS_SUPPORT = 20


def pair_within(true_rc: np.ndarray, pred_rc: np.ndarray, radius: float
                ) -> tuple[np.ndarray, np.ndarray]:
    """(pairs (K, 2) [true index, pred index], unpaired true indices): the most one-to-one
    pairs within `radius`, of least total distance among those. Coordinates must be finite."""
    true_rc = np.asarray(true_rc, np.float64).reshape(-1, 2)
    pred_rc = np.asarray(pred_rc, np.float64).reshape(-1, 2)
    if len(true_rc) == 0 or len(pred_rc) == 0:
        return np.zeros((0, 2), np.int64), np.arange(len(true_rc))
    dist = cdist(true_rc, pred_rc)
    near_t = np.flatnonzero((dist <= radius).any(axis=1))
    near_p = np.flatnonzero((dist <= radius).any(axis=0))
    if len(near_t) == 0:
        return np.zeros((0, 2), np.int64), np.arange(len(true_rc))
    sub = dist[np.ix_(near_t, near_p)]
    # beyond the radius every pair costs the same (more than any pair within it)
    cost = np.where(sub <= radius, sub, radius * (len(near_t) + 1) + 1.0)
    ti, pi = linear_sum_assignment(cost)
    keep = sub[ti, pi] <= radius
    pairs = np.stack([near_t[ti[keep]], near_p[pi[keep]]], axis=1).astype(np.int64)
    return pairs, np.setdiff1d(np.arange(len(true_rc)), pairs[:, 0])


@dataclass
class PointCounts:
    """Marked points found, and the labelled ones counted by the type of the nucleus paired with
    them (the confusion), from which each class's TP / FP / FN follow."""

    marked: int = 0
    found: int = 0
    classes: set[int] = field(default_factory=set)
    #: (labelled class, predicted type) -> count; predicted type 0: no nucleus paired with it
    confusion: dict[tuple[int, int], int] = field(default_factory=dict)

    def add(self, points_rc: np.ndarray, point_types: np.ndarray, pred_rc: np.ndarray,
            pred_types: np.ndarray, radius: float) -> None:
        """One image: points (K, 2) (row, col) with classes (0 = none), predicted centroids
        (N, 2) (row, col) with types, pairing radius in pixels."""
        point_types = np.asarray(point_types, np.int64).reshape(-1)
        pred_types = np.asarray(pred_types, np.int64).reshape(-1)
        pred_rc = np.asarray(pred_rc, np.float64).reshape(-1, 2)
        ok = ~np.isnan(pred_rc).any(axis=1)
        pred_rc, pred_types = pred_rc[ok], pred_types[ok]
        pairs, _ = pair_within(points_rc, pred_rc, radius)
        paired_types = np.zeros(len(point_types), np.int64)
        paired_types[pairs[:, 0]] = pred_types[pairs[:, 1]]
        found = np.zeros(len(point_types), bool)
        found[pairs[:, 0]] = True
        self.add_paired(point_types, paired_types, found)

    def add_paired(self, point_types: np.ndarray, paired_types: np.ndarray, found: np.ndarray
                   ) -> None:
        """One image's points already paired: their classes (K,) (0 = none), the type of the
        nucleus each is paired with (K,) and whether it is paired at all (K,) bool."""
        point_types = np.asarray(point_types, np.int64).reshape(-1)
        self.marked += len(point_types)
        self.found += int(np.count_nonzero(found))
        for t, p, hit in zip(point_types.tolist(), np.asarray(paired_types).tolist(),
                             np.asarray(found).tolist(), strict=True):
            if t == 0:
                continue
            self.classes.add(t)
            key = (t, p if hit else 0)
            self.confusion[key] = self.confusion.get(key, 0) + 1

    def merge(self, other: PointCounts) -> None:
        """Pool `other`'s counts into these."""
        self.marked += other.marked
        self.found += other.found
        self.classes |= other.classes
        for key, v in other.confusion.items():
            self.confusion[key] = self.confusion.get(key, 0) + v

    def confusion_matrix(self, n_types: int) -> np.ndarray:
        """(n_types, n_types) counts: row = labelled class (row 0 unused), column = the type of
        the nucleus paired with it (column 0: none paired, a miss)."""
        out = np.zeros((n_types, n_types), np.int64)
        for (t, p), v in self.confusion.items():
            out[t, p] += v
        return out

    def f1(self, c: int) -> float:
        """2 TP / (2 TP + FP + FN) of class `c`: TP its points typed `c`, FN its other points
        (typed otherwise or missed), FP the labelled points of other classes typed `c`."""
        tp = self.confusion.get((c, c), 0)
        fn = self.support(c) - tp
        fp = sum(v for (t, p), v in self.confusion.items() if p == c and t != c)
        den = 2 * tp + fp + fn
        return 2 * tp / den if den else float("nan")

    def support(self, c: int) -> int:
        """Labelled points of class `c` (found or not)."""
        return sum(v for (t, _), v in self.confusion.items() if t == c)

    def scores(self) -> dict[str, float]:
        """recall, f1_mean (over the classes with at least `MIN_CLASS_SUPPORT` labelled points,
        or all the points hold when none has) and f1_<t> per class the points hold."""
        classes = sorted(self.classes)
        per = {f"f1_{c}": self.f1(c) for c in classes}
        counted = [c for c in classes if self.support(c) >= MIN_CLASS_SUPPORT] or classes
        return {"recall": self.found / self.marked if self.marked else float("nan"),
                "f1_mean": float(np.nanmean([per[f"f1_{c}"] for c in counted])) if per else float("nan"),
                **per}


def point_score_names(class_ids: list[int] | set[int]) -> tuple[str, ...]:
    """The keys `PointCounts.scores` gives for points of these classes."""
    return (*POINT_KEYS, *(f"f1_{c}" for c in sorted(class_ids)))


def centroids_rc(inst_map: np.ndarray) -> np.ndarray:
    """(K, 2) (row, col) centroids of ids 1..K (NaN for an absent id)."""
    n = int(inst_map.max(initial=0))
    if n == 0:
        return np.zeros((0, 2))
    lab = inst_map.ravel()
    area = np.bincount(lab, minlength=n + 1)[1:].astype(np.float64)
    rows, cols = np.indices(inst_map.shape)
    r = np.bincount(lab, weights=rows.ravel(), minlength=n + 1)[1:]
    c = np.bincount(lab, weights=cols.ravel(), minlength=n + 1)[1:]
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.stack([r / area, c / area], axis=1)


def labelled_nuclei(points: np.ndarray | None, inst_map: np.ndarray, type_map: np.ndarray | None
                    ) -> tuple[np.ndarray, np.ndarray]:
    """An image's labelled nuclei as (K, 2) (row, col) and their classes (K,): its points
    (columns row, col, class) where it has them, else the centroids and types of its typed mask's
    instances (`type_map` is then required)."""
    if points is not None:
        return np.asarray(points[:, :2], np.float64), np.asarray(points[:, 2], np.int64)
    if type_map is None:
        raise ValueError("an image without points needs a type map to have labelled nuclei")
    ids, first = np.unique(inst_map, return_index=True)
    keep = ids > 0
    return centroids_rc(inst_map)[ids[keep] - 1], type_map.ravel()[first[keep]].astype(np.int64)
