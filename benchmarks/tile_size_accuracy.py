"""Accuracy and map agreement of tiled inference at several inference tile sizes.

The network is trained on 256² patches but is fully convolutional, and its criss-cross attention
sees whole rows and columns of the deepest features: a larger inference tile gives each output
pixel more context than training ever did. Larger tiles with the same margin waste fewer pixels
(a 256² tile with a 32 px margin runs 1.78 input pixels per output pixel, 576² 1.27×, 1088²
1.13×), so the default tile size is chosen from these figures, per validation dataset:

- PQ, mPQ (typed sets), F_d and AJI of the two-step watershed on each tile size's maps;
- agreement of each tile size's maps with the first one's (the reference): mean |Δ| of the
  nucleus probability and of the HV maps, and the share of pixels whose arg-max type changes
  among pixels either map calls nucleus.

Held-out images of the training mix (`configs/train_mix.yaml`); post-processing defaults. Images
smaller than a tile are reflect-padded as in `inference.image.predict_tiled`, so on PanNuke's 256² patches
a large tile sees mirrored rather than real context: read the large-image sets (MoNuSeg, CPM-15,
CoNSeP) for what a slide gets.

    python benchmarks/tile_size_accuracy.py --tiles 256 576 1088
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from wsi_pipeline.config import load_config
from wsi_pipeline.datasets.mix import read_mix
from wsi_pipeline.evaluation.scoring import predict_maps, score_maps
from wsi_pipeline.inference.config import DEFAULT_MARGIN
from wsi_pipeline.model import load_checkpoint
from wsi_pipeline.model.checkpoint import default_checkpoint_path
from wsi_pipeline.model.predict import cpu_flags
from wsi_pipeline.model.predictors import load_predictor
from wsi_pipeline.model.runtime import choose_runtime
from wsi_pipeline.training.config import TrainConfig

ROOT = Path(__file__).resolve().parents[1]
FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_bf16")


def agreement(ref: dict[str, np.ndarray], other: dict[str, np.ndarray], ns_threshold: float = 0.5
              ) -> dict[str, float]:
    """Mean |Δ| of ns and hv over the image; type flips among pixels either map calls nucleus."""
    nuclear = (ref["ns"] >= ns_threshold) | (other["ns"] >= ns_threshold)
    flips = ref["nc"].argmax(0) != other["nc"].argmax(0)
    return {
        "ns_mad": float(np.abs(ref["ns"] - other["ns"]).mean()),
        "hv_mad": float(np.abs(ref["hv"] - other["hv"]).mean()),
        "type_flip": float(flips[nuclear].mean()) if nuclear.any() else 0.0,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--checkpoint", type=Path, default=None, help="default: the shipped weights")
    ap.add_argument("--config", type=Path, default=ROOT / "configs" / "train_mix.yaml")
    ap.add_argument("--tiles", type=int, nargs="+", default=[256, 576, 1088],
                    help="inference tile sides; the first is the reference of the agreement columns")
    ap.add_argument("--margin", type=int, default=DEFAULT_MARGIN)
    ap.add_argument("--batch-size", type=int, default=2)
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()

    cfg = load_config(args.config, TrainConfig)
    _, val = read_mix(cfg.data.datasets, cfg.mpp, "fail")
    ckpt = args.checkpoint or default_checkpoint_path()
    model = load_checkpoint(ckpt)
    net = load_predictor(model, choose_runtime("cpu", "auto", "torch")).net
    flags = " ".join(f for f in FLAGS if f in cpu_flags())
    sizes = sorted({tuple(s.image.shape[:2]) for s in val})
    print(f"checkpoint {ckpt} (sha256 {model.sha256[:12]}), {len(val)} validation images "
          f"(sizes {sizes[0]}..{sizes[-1]}), margin {args.margin}, {torch.get_num_threads()} threads, "
          f"CPU flags: {flags}")
    results: dict = {"checkpoint": str(ckpt), "sha256": model.sha256, "margin": args.margin,
                     "cpu_flags": flags, "tiles": {}}
    reference: list[dict[str, np.ndarray]] | None = None
    names = [s.meta["dataset"] for s in val]
    for tile in args.tiles:
        t0 = time.process_time()
        maps = predict_maps(net, val, tile=tile, stride=tile - 2 * args.margin,
                            batch_size=args.batch_size, device="cpu")
        seconds = time.process_time() - t0
        scores = score_maps(val, maps, n_types=cfg.model.n_types, mpp=cfg.mpp)
        if reference is None:
            reference = maps
        agree: dict[str, dict[str, float]] = {}
        for name in dict.fromkeys(names):
            rows = [agreement(reference[i], maps[i]) for i, n in enumerate(names) if n == name]
            agree[name] = {k: float(np.mean([r[k] for r in rows])) for k in rows[0]}
        results["tiles"][tile] = {"scores": scores, "agreement": agree, "cpu_seconds": seconds}
        print(f"\n## tile {tile} (stride {tile - 2 * args.margin}), model CPU time {seconds:.0f} s")
        print("| dataset | PQ | AJI | F_d | mPQ | ns mean abs diff | hv mean abs diff | type flips |")
        print("|---|---|---|---|---|---|---|---|")
        for name, sc in scores.items():
            a = agree[name]
            mpq = f"{sc['mpq']:.4f}" if "mpq" in sc else "–"
            print(f"| {name} | {sc['pq']:.4f} | {sc['aji']:.4f} | {sc['f_d']:.4f} | {mpq} "
                  f"| {a['ns_mad']:.4f} | {a['hv_mad']:.4f} | {a['type_flip']:.4f} |", flush=True)
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
