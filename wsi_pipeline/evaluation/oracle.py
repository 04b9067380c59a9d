"""Ideal network outputs built from ground truth, to test post-processing without a model.

A perfect network would output ns = inst > 0, hv = hv_maps(inst) and one-hot types; scoring
`segment_instances` on these maps (and on blurred, noisy versions that look like real network
output) isolates what the watershed itself loses.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from scipy import ndimage as ndi

from wsi_pipeline.datasets.targets import hv_maps
from wsi_pipeline.evaluation import DatasetEvaluator, Instances
from wsi_pipeline.evaluation.matio import consep_patch_files, read_consep_patch
from wsi_pipeline.postproc.config import PostprocConfig
from wsi_pipeline.postproc.watershed import segment_instances

N_TYPES = 5  # background + 4 merged CoNSeP classes


def oracle_maps(
    truth: Instances, n_types: int = N_TYPES
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(ns, hv, type_prob) exactly as a perfect network would output them."""
    inst = truth.inst_map
    ids = truth.ids()
    lut = np.zeros(int(inst.max(initial=0)) + 1, np.int64)
    lut[ids] = truth.type_array()
    type_map = lut[inst]
    type_prob = (np.arange(n_types)[:, None, None] == type_map[None]).astype(np.float32)
    return (inst > 0).astype(np.float32), hv_maps(inst), type_prob


def degrade(
    ns: np.ndarray,
    hv: np.ndarray,
    tp: np.ndarray,
    rng: np.random.Generator,
    sigma: float = 1.5,
    noise: float = 0.1,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Soft, blurry, noisy maps in the shape of real network outputs."""
    ns = np.clip(ndi.gaussian_filter(ns, sigma) + rng.normal(0, noise, ns.shape), 0, 1).astype(
        np.float32
    )
    hv = np.clip(
        np.stack([ndi.gaussian_filter(c, sigma) for c in hv]) + rng.normal(0, noise, hv.shape),
        -1,
        1,
    ).astype(np.float32)
    tp = np.stack([ndi.gaussian_filter(c, sigma) for c in tp]) + rng.uniform(0, noise, tp.shape)
    tp = (tp / tp.sum(axis=0, keepdims=True)).astype(np.float32)
    return ns, hv, tp


def load_consep_truth(
    data: Path, limit: int | None = None, step: int = 1
) -> list[tuple[str, Instances]]:
    files = consep_patch_files(data)
    stems = sorted(files)[::step]
    if limit:
        stems = stems[:limit]
    return [(s, read_consep_patch(*files[s])) for s in stems]


def score_oracle(
    patches: list[tuple[str, Instances]],
    *,
    two_step: bool,
    degraded: bool = False,
    config: PostprocConfig | None = None,
    mpp: float = 0.25,
    seed: int = 0,
) -> dict[str, float]:
    ev = DatasetEvaluator(type_ids=[1, 2, 3, 4], mpp=mpp)
    rng = np.random.default_rng(seed)
    for name, truth in patches:
        ns, hv, tp = oracle_maps(truth)
        if degraded:
            ns, hv, tp = degrade(ns, hv, tp, rng)
        seg = segment_instances(ns, hv, tp, mpp=mpp, two_step=two_step, config=config)
        ev.add(name, truth, Instances(seg.inst_map, seg.types))
    return ev.summary()
