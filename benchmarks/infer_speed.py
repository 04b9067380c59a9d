"""Tiles/s of `infer_slide` on the CMU slide, against the network alone on the same batches.

Usage: python benchmarks/infer_speed.py [--width 32] [--margin 32] [--precision auto] [--chunk 2048]
Uses a randomly initialised compact MultiTaskNet (speed does not depend on the weights).
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from wsi_pipeline.inference.config import DEFAULT_MARGIN, InferConfig
from wsi_pipeline.inference.slide import infer_slide
from wsi_pipeline.io import open_slide
from wsi_pipeline.model import MultiTaskNet, load_checkpoint, save_checkpoint
from wsi_pipeline.model.predict import predict_batch_compact
from wsi_pipeline.model.predictors import load_predictor
from wsi_pipeline.model.runtime import choose_runtime

SLIDE = Path(__file__).resolve().parents[2] / "shared/data/slides/CMU-1-Small-Region.svs"
CLASSES = ("background", "other", "inflammatory", "epithelial", "spindle")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--width", type=int, default=32)
    ap.add_argument("--margin", type=int, default=DEFAULT_MARGIN)
    ap.add_argument("--precision", default="auto")
    ap.add_argument("--chunk", type=int, default=2048)
    ap.add_argument("--batch", type=int, default=16)
    args = ap.parse_args()
    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as tmp:
        ckpt = Path(tmp) / "m.pt"
        save_checkpoint(ckpt, MultiTaskNet(encoder="resnet18", width=args.width),
                        class_names=CLASSES, mpp=0.25)
        model = load_checkpoint(ckpt)
        cfg = InferConfig(margin=args.margin, precision=args.precision, chunk_size=args.chunk,
                          batch_size=args.batch)
        net = load_predictor(model, choose_runtime("cpu", cfg.precision, "torch")).net
        side = cfg.tile_size
        batch = np.random.default_rng(0).integers(0, 255, (args.batch, side, side, 3), dtype=np.uint8)
        predict_batch_compact(net, batch, "cpu", cfg.precision)  # warm-up (oneDNN kernels)
        t0 = time.perf_counter()
        for _ in range(3):
            predict_batch_compact(net, batch, "cpu", cfg.precision)
        model_only = 3 * args.batch / (time.perf_counter() - t0)
        with open_slide(SLIDE) as slide:
            res = infer_slide(slide, Path(tmp) / "out", cfg, model, progress=False)
    print(f"torch threads {torch.get_num_threads()}, load avg {os.getloadavg()[0]:.1f}, "
          f"width {args.width}, margin {args.margin}, precision {args.precision}")
    print(f"model alone: {model_only:.2f} tiles/s")
    print(f"infer_slide: {res.n_tiles} tiles ({res.n_runs} runs) in {res.seconds:.1f} s = "
          f"{res.n_tiles / res.seconds:.2f} tiles/s, {res.n_runs / res.seconds:.2f} runs/s, "
          f"{res.tissue_mm2 / res.seconds * 60:.2f} mm2/min")
    print("busy seconds:", {k: round(v, 2) for k, v in res.timings.items()})


if __name__ == "__main__":
    main()
