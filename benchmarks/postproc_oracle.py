"""Oracle test of the two-step watershed on CoNSeP patches.

Ideal network outputs are built from the ground truth (ns = inst > 0, hv = hv_maps(inst),
type_prob = one-hot of the type map), passed through ``segment_instances`` with
``two_step`` False and True, and scored against the ground truth. With ``--degrade`` the
maps are first made soft and noisy (Gaussian-blurred HV, blurred + noisy NS and types), to
check that the thresholds also hold on network-like outputs.

    python benchmarks/postproc_oracle.py [--data DIR] [--limit N] [--degrade] [--json OUT]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
from scipy import ndimage as ndi

from wsi_pipeline.metrics import DatasetEvaluator, Instances
from wsi_pipeline.metrics.matio import read_consep_patch
from wsi_pipeline.postproc import PostprocConfig, segment_instances
from wsi_pipeline.targets import hv_maps

DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "consep_patches" / "train"
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


def load_patches(
    data: Path, limit: int | None = None, step: int = 1
) -> list[tuple[str, Instances]]:
    stems = sorted(p.stem for p in (data / "inst").glob("*.npy"))[::step]
    if limit:
        stems = stems[:limit]
    return [
        (s, read_consep_patch(data / "inst" / f"{s}.npy", data / "type_mat" / f"{s}.mat"))
        for s in stems
    ]


def run(
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


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA)
    ap.add_argument("--limit", type=int, default=None)
    ap.add_argument("--step", type=int, default=1, help="take every n-th patch")
    ap.add_argument("--degrade", action="store_true")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    patches = load_patches(args.data, args.limit, args.step)
    results = {}
    for two_step in (False, True):
        t0 = time.perf_counter()
        s = run(patches, two_step=two_step, degraded=args.degrade)
        s["seconds"] = time.perf_counter() - t0
        key = "two_step" if two_step else "step1"
        results[key] = s
        print(
            f"{key:9s} n={int(s['n_images'])} PQ={s['pq']:.4f} DQ={s['dq']:.4f} SQ={s['sq']:.4f} "
            f"AJI={s['aji']:.4f} AJI+={s['aji_plus']:.4f} Dice={s['dice']:.4f} mPQ={s['mpq']:.4f} "
            f"F_d={s['f_d']:.4f} ({s['seconds']:.1f} s)"
        )
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
