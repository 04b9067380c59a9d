"""Per-class offsets of the type head's logits, fitted on training images (post-hoc logit
adjustment).

The type branch learns the classes in the proportions it sees, so a rare class loses every
close call: on held-out images the shipped weights give "other" to 1 in 10 of the nuclei
labelled "other", while a third of the nuclei they do call "other" are right
(`benchmarks/type_confusion.py`). Adding a constant ``b_c`` to the logit of class ``c`` moves
the decision boundaries between classes without touching what the network sees (Menon et al.,
"Long-tail learning via logit adjustment", ICLR 2021, where the offsets come from the class
priors; here they are fitted, because rare-class sampling and the cost matrix already moved
the network's priors by an unknown amount).

The offsets are fitted on the **training** images of a training mix (never on its held-out
images, which judge the result) by coordinate ascent of the scores a training run's
`selection` uses, measured with the pairing of the point sets on every typed image: the mean
over the typed datasets of the per-class F1 of their labelled nuclei, and the pooled F1 of one
rare class over every dataset that labels it. The instances are those the unadjusted network
draws (the offsets change only the types, except where step 2's same-type merge follows a type).
The class with the most labelled nuclei keeps offset 0 (a common shift of every class changes
only the background share, not a type).

`add_offsets` writes them into ``decoders.nc.head``'s bias, so every path that runs the network
(slides, tiles, validation, OpenVINO, int8) applies them, and the checkpoint's sha256 changes.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from wsi_pipeline.datasets.mix import DATASET_KEY
from wsi_pipeline.datasets.sample import Sample
from wsi_pipeline.evaluation.detection import radius_px
from wsi_pipeline.evaluation.points import PointCounts, centroids_rc, labelled_nuclei, pair_within
from wsi_pipeline.inference.image import predict_tiled
from wsi_pipeline.model.network import MultiTaskNet
from wsi_pipeline.postproc import PostprocConfig, segment_instances
from wsi_pipeline.postproc.vote import vote_types

log = logging.getLogger(__name__)

#: the layer whose bias holds the type logits' offsets
TYPE_HEAD_BIAS = "decoders.nc.head.bias"


@dataclass
class TypeEvidence:
    """What re-typing needs of a set of images, every image's instances numbered globally.

    ``labels`` (P,) global instance id (1..N) of every nucleus pixel, ``probs`` (C, P) the type
    softmax on those pixels; per labelled nucleus: its dataset index, class and the global id
    of the predicted nucleus paired with it (0: none within the pairing radius).
    """

    n_types: int
    datasets: list[str] = field(default_factory=list)
    labels: list[np.ndarray] = field(default_factory=list)
    probs: list[np.ndarray] = field(default_factory=list)
    n_inst: int = 0
    point_set: list[np.ndarray] = field(default_factory=list)
    point_class: list[np.ndarray] = field(default_factory=list)
    point_inst: list[np.ndarray] = field(default_factory=list)
    _joined: tuple[np.ndarray, ...] | None = field(default=None, repr=False)

    def add(self, dataset: str, inst_map: np.ndarray, type_prob: np.ndarray,
            true_rc: np.ndarray, true_types: np.ndarray, radius: float) -> None:
        """One image: its predicted instances (ids 1..N), type softmax (C, H, W) and labelled
        nuclei (K, 2) (row, col) with classes (K,)."""
        if dataset not in self.datasets:
            self.datasets.append(dataset)
        fg = inst_map > 0
        n = int(inst_map.max(initial=0))
        self.labels.append((inst_map[fg] + self.n_inst).astype(np.int64))
        self.probs.append(type_prob[:, fg].astype(np.float32))
        pairs, _ = pair_within(true_rc, centroids_rc(inst_map), radius)
        paired = np.zeros(len(true_types), np.int64)
        paired[pairs[:, 0]] = pairs[:, 1] + 1 + self.n_inst
        self.point_set.append(np.full(len(true_types), self.datasets.index(dataset)))
        self.point_class.append(np.asarray(true_types, np.int64))
        self.point_inst.append(paired)
        self.n_inst += n
        self._joined = None

    def _arrays(self) -> tuple[np.ndarray, ...]:
        if self._joined is None:
            self._joined = (np.concatenate(self.labels), np.concatenate(self.probs, axis=1),
                            np.concatenate(self.point_set), np.concatenate(self.point_class),
                            np.concatenate(self.point_inst))
        return self._joined

    def labelled_per_class(self) -> np.ndarray:
        """(C,) labelled nuclei of each class over every image."""
        return np.bincount(self._arrays()[3], minlength=self.n_types)

    def counts(self, offsets: np.ndarray) -> dict[str, PointCounts]:
        """Per dataset, the labelled nuclei's counts with the types voted on ``softmax(logit +
        offsets)`` (offsets (C,), background first)."""
        labels, probs, point_set, point_class, point_inst = self._arrays()
        weighted = probs * np.exp(np.asarray(offsets, np.float32))[:, None]
        weighted /= np.maximum(weighted.sum(axis=0, keepdims=True), 1e-12)
        types, _ = vote_types(labels[None, :], self.n_inst, weighted[:, None, :])
        types = np.concatenate([[0], types])  # global id 0: unpaired
        out: dict[str, PointCounts] = {}
        for k, name in enumerate(self.datasets):
            sel = point_set == k
            counts = PointCounts()
            counts.add_paired(point_class[sel], types[point_inst[sel]], point_inst[sel] > 0)
            out[name] = counts
        return out


def collect_evidence(net: torch.nn.Module, samples: Sequence[Sample], *, n_types: int, mpp: float,
                     tile: int, stride: int, postproc: PostprocConfig | None = None,
                     batch_size: int = 8, device: torch.device | str = "cpu") -> TypeEvidence:
    """Run every typed sample (points, or a type map) through the network and post-processing
    and keep what `TypeEvidence.counts` needs; samples without types are skipped."""
    evidence = TypeEvidence(n_types=n_types)
    radius = radius_px(mpp)
    typed = [s for s in samples if s.points is not None or s.type_map is not None]
    t0 = time.time()
    for i, s in enumerate(typed, start=1):
        with torch.inference_mode():
            maps = predict_tiled(net, s.image, tile=tile, stride=stride, batch_size=batch_size,
                                 device=device)
        seg = segment_instances(maps["ns"], maps["hv"], maps["nc"], mpp=mpp, config=postproc)
        true_rc, true_types = labelled_nuclei(s.points, s.inst_map, s.type_map)
        evidence.add(s.meta.get(DATASET_KEY, ""), seg.inst_map, maps["nc"], true_rc, true_types,
                     radius)
        if i % 25 == 0 or i == len(typed):
            rate = (time.time() - t0) / i
            log.info("type evidence %d/%d images, ETA %.0f s", i, len(typed), rate * (len(typed) - i))
    return evidence


def offset_objective(counts: dict[str, PointCounts], rare_class: int) -> float:
    """Mean of every dataset's mean F1 over its labelled classes and the pooled F1 of
    `rare_class` over the datasets that label it (as `selection: [<set>_f1_mean ...,
    all_f1_<rare>]` would weigh them)."""
    pooled = PointCounts()
    parts = []
    for c in counts.values():
        f1_mean = c.scores()["f1_mean"]
        if np.isfinite(f1_mean):
            parts.append(f1_mean)
        pooled.merge(c)
    rare = pooled.f1(rare_class)
    if np.isfinite(rare):
        parts.append(rare)
    return float(np.mean(parts)) if parts else float("nan")


def fit_offsets(evidence: TypeEvidence, rare_class: int, *, steps: Sequence[float] = (1.0, 0.5, 0.25),
                limit: float = 3.0, min_gain: float = 1e-4) -> tuple[np.ndarray, list[dict]]:
    """Coordinate ascent of `offset_objective` over the foreground classes' offsets, the most
    labelled class held at 0, each step size until no move gains `min_gain`; returns the
    offsets (C,) (background 0) and the trail of accepted moves."""
    offsets = np.zeros(evidence.n_types)
    labelled = evidence.labelled_per_class()
    anchor = int(np.argmax(labelled[1:])) + 1
    free = [c for c in range(1, evidence.n_types) if c != anchor and labelled[c] > 0]
    best = offset_objective(evidence.counts(offsets), rare_class)
    trail = [{"offsets": offsets.tolist(), "objective": best}]
    log.info("type offsets: start objective %.4f (anchor class %d, %d labelled nuclei)", best,
             anchor, int(labelled.sum()))
    for step in steps:
        moved = True
        while moved:
            moved = False
            for c in free:
                for sign in (1.0, -1.0):
                    trial = offsets.copy()
                    trial[c] = np.clip(trial[c] + sign * step, -limit, limit)
                    if trial[c] == offsets[c]:
                        continue
                    score = offset_objective(evidence.counts(trial), rare_class)
                    if score > best + min_gain:
                        offsets, best, moved = trial, score, True
                        trail.append({"offsets": offsets.tolist(), "objective": best})
                        log.info("type offsets %s: objective %.4f", np.round(offsets, 2).tolist(), best)
                        break
    return offsets, trail


def add_offsets(net: MultiTaskNet, offsets: np.ndarray) -> None:
    """Add `offsets` (C,) to the type head's logits (its bias), in place."""
    bias = net.get_parameter(TYPE_HEAD_BIAS)
    if bias.shape != (len(offsets),):
        raise ValueError(f"{len(offsets)} offsets for a type head of {tuple(bias.shape)} outputs")
    with torch.no_grad():
        bias.add_(torch.as_tensor(np.asarray(offsets), dtype=bias.dtype, device=bias.device))
