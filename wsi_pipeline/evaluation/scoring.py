"""Scores of a network on annotated images through the full prediction path (tiled network ->
two-step watershed -> instance metrics), per dataset of a mix.

One path for training validation and the benchmarks (`benchmarks/validate_mix.py`,
`benchmarks/postproc_tune_mix.py`), so the figures in history.csv and in MODEL_CARD.md are
computed the same way. Prediction and scoring are separate steps, so post-processing settings
can be scored on maps computed once.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from wsi_pipeline.datasets.mix import DATASET_KEY
from wsi_pipeline.datasets.sample import Sample
from wsi_pipeline.evaluation import DatasetEvaluator, Instances
from wsi_pipeline.evaluation.detection import radius_px
from wsi_pipeline.evaluation.points import PointCounts, centroids_rc, point_score_names
from wsi_pipeline.inference.config import DEFAULT_MARGIN
from wsi_pipeline.inference.image import predict_tiled
from wsi_pipeline.postproc import PostprocConfig, segment_instances

#: per-dataset scores; PQ = DQ × SQ, so DQ (detection at IoU 0.5) and SQ (mean IoU of the
#: matches) say whether a PQ gap is nuclei found or outlines drawn
INSTANCE_KEYS = ("dice", "aji", "dq", "sq", "pq", "f_d")
#: what a mix row averages over its datasets: the instance scores and mPQ (typed sets only)
AGGREGATE_KEYS = (*INSTANCE_KEYS, "mpq")
#: the pseudo-dataset of the point scores pooled over every typed set (mask sets' true
#: centroids as labelled points), so a rare class is scored on all its examples at once
POOLED = "all"

Maps = dict[str, np.ndarray]


def score_names(typed: bool, n_types: int, point_classes: set[int] | None = None) -> tuple[str, ...]:
    """The scores `score_maps` gives one dataset: the instance scores, plus mPQ and PQ and F_c of
    each type 1..n_types-1 where the dataset has types; for a point-labelled dataset (its
    `point_classes`) recall, f1_mean and f1_<t> (`evaluation.points`)."""
    if point_classes is not None:
        return point_score_names(point_classes)
    if not typed:
        return INSTANCE_KEYS
    types = range(1, n_types)
    return (*INSTANCE_KEYS, "mpq", *(f"pq_{t}" for t in types), *(f"f_c_{t}" for t in types))


def validation_tiling(patch_size: int) -> tuple[int, int]:
    """(tile, stride) of validation scoring: every output pixel comes from a `patch_size` crop
    with inference's margin (`inference.config.DEFAULT_MARGIN`) of real (or reflected) context
    around it, as in tiled inference; a `patch_size` image is one tile."""
    return patch_size + 2 * DEFAULT_MARGIN, patch_size


def predict_maps(
    net: torch.nn.Module,
    samples: list[Sample],
    *,
    tile: int,
    stride: int,
    batch_size: int,
    device: torch.device | str,
    transform: Callable[[Sample], np.ndarray] | None = None,
    tta: bool = False,
) -> list[Maps]:
    """Network maps of every sample's image (or of `transform(sample)`, e.g. a scan
    degradation; the labels stay); `tta`: flip test-time augmentation."""
    return [
        predict_tiled(net, s.image if transform is None else transform(s), tile=tile,
                      stride=stride, batch_size=batch_size, device=device, tta=tta)
        for s in samples
    ]


def score_maps(
    samples: list[Sample],
    maps: list[Maps],
    *,
    n_types: int,
    mpp: float,
    postproc: PostprocConfig | None = None,
) -> dict[str, dict[str, float]]:
    """{dataset name: {dice, aji, dq, sq, pq, f_d[, mpq, pq_<t>, f_c_<t>]}}; type scores only for
    datasets with types, F_d for all (untyped: one class on both sides)."""
    groups: dict[str, list[int]] = {}
    for i, s in enumerate(samples):
        groups.setdefault(s.meta.get(DATASET_KEY, ""), []).append(i)
    scores: dict[str, dict[str, float]] = {}
    with_points = any(s.points is not None for s in samples)  # the pooled scores only then
    pooled = PointCounts()
    radius = radius_px(mpp)
    for name, idx in groups.items():
        if any(samples[i].points is not None for i in idx):
            counts = PointCounts()
            for i in idx:
                s = samples[i]
                assert s.points is not None, f"{s.name}: a point-labelled dataset's image without points"
                seg = segment_instances(maps[i]["ns"], maps[i]["hv"], maps[i]["nc"], mpp=mpp,
                                        config=postproc)
                counts.add(s.points[:, :2], s.points[:, 2], centroids_rc(seg.inst_map), seg.types,
                           radius)
            scores[name] = counts.scores()
            pooled.merge(counts)
            continue
        typed = any(samples[i].type_map is not None for i in idx)
        evaluator = DatasetEvaluator(type_ids=list(range(1, n_types)) if typed else [], mpp=mpp)
        for i in idx:
            s, m = samples[i], maps[i]
            seg = segment_instances(m["ns"], m["hv"], m["nc"], mpp=mpp, config=postproc)
            ids, first = np.unique(s.inst_map, return_index=True)
            if s.type_map is not None:
                true_types, pred_types = s.type_map.ravel()[first[ids > 0]], seg.types
            else:
                true_types = np.ones(int(np.count_nonzero(ids)), np.int64)
                pred_types = np.ones(len(seg.types), np.int64)
            evaluator.add(s.name, Instances(s.inst_map, true_types),
                          Instances(seg.inst_map, pred_types))
            if with_points and s.type_map is not None:
                pooled_img = PointCounts()
                pooled_img.add(centroids_rc(s.inst_map)[ids[ids > 0] - 1], true_types,
                               centroids_rc(seg.inst_map), seg.types, radius)
                pooled.merge(pooled_img)
        summary = evaluator.summary()
        scores[name] = {k: float(summary[k]) for k in score_names(typed, n_types) if k in summary}
    if with_points:
        scores[POOLED] = {k: v for k, v in pooled.scores().items() if k.startswith("f1_")}
    return scores


def score_by_dataset(
    net: torch.nn.Module,
    samples: list[Sample],
    *,
    n_types: int,
    mpp: float,
    tile: int,
    stride: int,
    batch_size: int,
    device: torch.device | str,
    postproc: PostprocConfig | None = None,
    transform: Callable[[Sample], np.ndarray] | None = None,
    tta: bool = False,
) -> dict[str, dict[str, float]]:
    """`predict_maps` then `score_maps`."""
    maps = predict_maps(net, samples, tile=tile, stride=stride, batch_size=batch_size,
                        device=device, transform=transform, tta=tta)
    return score_maps(samples, maps, n_types=n_types, mpp=mpp, postproc=postproc)


def flatten_scores(scores: dict[str, dict[str, float]], prefix: str = "val_") -> dict[str, float]:
    """One dataset: plain `val_pq` ... keys (as before mixes existed). Several: `val_<name>_pq`
    per dataset plus `val_pq` ... as means over the datasets, each counting once whatever its
    size (mPQ over the typed ones)."""
    if len(scores) == 1:
        return {f"{prefix}{k}": v for k, v in next(iter(scores.values())).items()}
    row = {f"{prefix}{name}_{k}": v for name, values in scores.items() for k, v in values.items()}
    for key in AGGREGATE_KEYS:
        vals = [v[key] for v in scores.values() if key in v]
        if vals:
            row[f"{prefix}{key}"] = float(np.nanmean(vals))
    return row
