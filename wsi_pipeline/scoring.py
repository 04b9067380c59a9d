"""Scores of a network on annotated images through the full prediction path (tiled network ->
two-step watershed -> instance metrics), per dataset of a mix.

One function for training validation and the benchmarks (`benchmarks/validate_mix.py`), so
the figures in history.csv and in MODEL_CARD.md are computed the same way.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from wsi_pipeline.data.mix import DATASET_KEY
from wsi_pipeline.data.sample import Sample
from wsi_pipeline.metrics import DatasetEvaluator, Instances
from wsi_pipeline.postproc import PostprocConfig, segment_instances
from wsi_pipeline.tiled import predict_tiled

INSTANCE_KEYS = ("dice", "aji", "pq", "f_d")
AGGREGATE_KEYS = ("dice", "aji", "pq", "f_d", "mpq")


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
) -> dict[str, dict[str, float]]:
    """{dataset name: {dice, aji, pq, f_d[, mpq, pq_<t>, f_c_<t>]}}; type scores only for
    datasets with types. `transform` replaces each image before prediction (e.g. a scan
    degradation), the labels stay."""
    by_dataset: dict[str, list[Sample]] = {}
    for s in samples:
        by_dataset.setdefault(s.meta.get(DATASET_KEY, ""), []).append(s)
    scores: dict[str, dict[str, float]] = {}
    for name, group in by_dataset.items():
        typed = any(s.type_map is not None for s in group)
        evaluator = DatasetEvaluator(type_ids=list(range(1, n_types)) if typed else [], mpp=mpp)
        for s in group:
            image = s.image if transform is None else transform(s)
            maps = predict_tiled(net, image, tile=tile, stride=stride, batch_size=batch_size,
                                 device=device)
            seg = segment_instances(maps["ns"], maps["hv"], maps["nc"], mpp=mpp,
                                    config=postproc)
            ids, first = np.unique(s.inst_map, return_index=True)
            if s.type_map is not None:
                true_types, pred_types = s.type_map.ravel()[first[ids > 0]], seg.types
            else:  # one class on both sides: F_d (detection) without type scores
                true_types = np.ones(int(np.count_nonzero(ids)), np.int64)
                pred_types = np.ones(len(seg.types), np.int64)
            evaluator.add(s.name, Instances(s.inst_map, true_types),
                          Instances(seg.inst_map, pred_types))
        summary = evaluator.summary()
        keys = list(INSTANCE_KEYS)
        if typed:
            keys += ["mpq"] + [k for k in summary if k.startswith(("f_c_", "pq_"))]
        scores[name] = {k: float(summary[k]) for k in keys if k in summary}
    return scores


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
