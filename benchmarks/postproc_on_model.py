"""Post-processing on real network output: step 1 vs two-step, and threshold tuning.

Runs a checkpoint once over CoNSeP patches of one side of the training split (the split the
training run used: by source tile, seed 0, 20 % validation), keeps the maps, then scores
`segment_instances` variants against the ground truth. Tune on `--side train` (so validation
figures stay honest), report on `--side val`.

    python benchmarks/postproc_on_model.py --checkpoint wsi_pipeline/weights/default.pt --side val
    python benchmarks/postproc_on_model.py --checkpoint ... --side train --limit 96 --tune
"""

from __future__ import annotations

import argparse
import itertools
import time
from pathlib import Path

import numpy as np

from wsi_pipeline.datasets import read_consep_patches, split_by_group
from wsi_pipeline.evaluation import DatasetEvaluator, Instances
from wsi_pipeline.model import load_checkpoint
from wsi_pipeline.model.predict import predict_batch
from wsi_pipeline.model.predictors import load_predictor
from wsi_pipeline.model.runtime import choose_runtime
from wsi_pipeline.postproc import PostprocConfig, segment_instances

DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "consep_patches" / "train"


def true_types(sample) -> np.ndarray:
    ids, first = np.unique(sample.inst_map, return_index=True)
    return sample.type_map.ravel()[first[ids > 0]]


def score(samples, maps, mpp, n_types, *, two_step: bool, config: PostprocConfig) -> dict:
    ev = DatasetEvaluator(type_ids=list(range(1, n_types)), mpp=mpp)
    for s, (ns, hv, nc) in zip(samples, maps, strict=True):
        seg = segment_instances(ns, hv, nc, mpp=mpp, two_step=two_step, config=config)
        ev.add(s.name, Instances(s.inst_map, true_types(s)), Instances(seg.inst_map, seg.types))
    return ev.summary()


def fmt(s: dict, n_types: int) -> str:
    fc = " ".join(f"F_c{t}={s.get(f'f_c_{t}', float('nan')):.3f}" for t in range(1, n_types))
    return (f"PQ={s['pq']:.4f} DQ={s['dq']:.4f} SQ={s['sq']:.4f} AJI={s['aji']:.4f} Dice={s['dice']:.4f} "
            f"mPQ={s['mpq']:.4f} F_d={s['f_d']:.4f} {fc}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--checkpoint", type=Path, required=True)
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA)
    ap.add_argument("--side", choices=["train", "val"], default="val")
    ap.add_argument("--limit", type=int, default=None)
    ap.add_argument("--tune", action="store_true",
                    help="grid over ns_threshold x edge_threshold x min_marker_area_um2")
    args = ap.parse_args()

    model = load_checkpoint(args.checkpoint)
    net = load_predictor(model, choose_runtime(model.net.mean.device, "auto", "torch")).net
    train, val = split_by_group(read_consep_patches(args.data), 0.2, 0)
    samples = (train if args.side == "train" else val)[: args.limit]
    n_types = len(model.class_names)
    t0 = time.perf_counter()
    maps = []
    for i in range(0, len(samples), 8):
        out = predict_batch(net, np.stack([s.image for s in samples[i : i + 8]]))
        maps += [(out["ns"][j], out["hv"][j], out["nc"][j]) for j in range(len(out["ns"]))]
    print(f"# {args.checkpoint.name} sha256 {model.sha256[:12]}, {len(samples)} {args.side} patches, "
          f"model {time.perf_counter() - t0:.1f} s")
    base = PostprocConfig()
    if args.tune:
        grid = itertools.product((0.4, 0.5), (0.02, 0.03, 0.045, 0.06, 0.1), (0.5, 2.0, 3.0, 5.0))
        for ns_t, edge_t, marker in grid:
            update = {"ns_threshold": ns_t, "edge_threshold": edge_t, "min_marker_area_um2": marker}
            s = score(samples, maps, model.mpp, n_types, two_step=True, config=base.model_copy(update=update))
            print(" ".join(f"{k}={v}" for k, v in update.items()), f": {fmt(s, n_types)}", flush=True)
        return
    for two_step in (False, True):
        t0 = time.perf_counter()
        s = score(samples, maps, model.mpp, n_types, two_step=two_step, config=base)
        print(f"{'two-step' if two_step else 'step 1  '}: {fmt(s, n_types)} "
              f"({time.perf_counter() - t0:.1f} s)", flush=True)


if __name__ == "__main__":
    main()
