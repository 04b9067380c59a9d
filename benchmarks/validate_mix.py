"""Validation per dataset of a checkpoint, on original and on 20×-scan-degraded images.

Reads the held-out images of every dataset of a training mix config (default
configs/train_mix.yaml: CoNSeP tiles 2/9/13/19/27, 3 MoNuSeg tiles, 2 CPM-15 images, 5 PanNuke
patches — never trained on), scores the checkpoint through the full prediction path
(`wsi_pipeline.evaluation.scoring`, as training validation does) and, with --degrade, again after each image
went through the scan degradation of training (`augment.scan_degrade`: 0.25 -> 0.5 µm/px, JPEG,
back to 0.25 µm/px as `Slide.read_region_at_mpp` resamples). The JPEG quality of each image is
drawn from --quality with --seed, so the degraded set is the same for every checkpoint.
Post-processing: the training config's `postproc:` section (defaults without one), or with
--postproc-config the `postproc:` section of a `wsi-pipeline run` config.

    python benchmarks/validate_mix.py --checkpoint wsi_pipeline/weights/default.pt --degrade
    python benchmarks/validate_mix.py --checkpoint wsi_pipeline/weights/default.pt \
        --backend openvino --precision int8   # its int8 network (wsi-pipeline quantize-model)
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import numpy as np

from wsi_pipeline.cohort.config import load_run_config
from wsi_pipeline.config import load_config
from wsi_pipeline.datasets.augment import scan_degrade
from wsi_pipeline.datasets.mix import read_mix
from wsi_pipeline.evaluation.scoring import score_by_dataset, validation_tiling
from wsi_pipeline.model import load_checkpoint
from wsi_pipeline.model.predict import cpu_flags
from wsi_pipeline.model.predictors import load_predictor
from wsi_pipeline.model.runtime import choose_runtime
from wsi_pipeline.training.config import TrainConfig

ROOT = Path(__file__).resolve().parents[1]


def cpu_flag_summary() -> str:
    """The flags that decide precision here (bf16 autocast needs avx512_bf16 or amx_bf16)."""
    keep = [f for f in cpu_flags() if f.startswith(("avx512_bf16", "amx_bf16", "avx2", "avx512f"))]
    return " ".join(sorted(keep)) or platform.processor()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--checkpoint", type=Path, required=True)
    ap.add_argument("--config", type=Path, default=ROOT / "configs" / "train_mix.yaml")
    ap.add_argument("--degrade", action="store_true", help="also score scan-degraded images")
    ap.add_argument("--quality", type=int, nargs=2, default=(30, 90))
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--tta", action="store_true", help="flip test-time augmentation")
    ap.add_argument("--backend", choices=("torch", "openvino"), default="torch",
                    help="what runs the network (infer.backend; the engine's default on CPUs is openvino)")
    ap.add_argument("--precision", choices=("auto", "int8"), default="auto",
                    help="int8: the checkpoint's quantised network (model.quantize; openvino back end)")
    ap.add_argument("--json", type=Path, default=None, help="write the figures here")
    ap.add_argument("--postproc-config", type=Path, default=None,
                    help="a run config (YAML) whose postproc: section replaces the training config's")
    args = ap.parse_args()

    cfg = load_config(args.config, TrainConfig)
    postproc = load_run_config(args.postproc_config).postproc if args.postproc_config else cfg.postproc
    _, val = read_mix(cfg.data.datasets, cfg.mpp, "fail",
                      None if cfg.classes is None else ("background", *cfg.classes))
    model = load_checkpoint(args.checkpoint)
    net = load_predictor(model, choose_runtime(model.net.mean.device, args.precision, args.backend)).net
    tile, stride = validation_tiling(cfg.patch_size)
    kw = {"n_types": cfg.model.n_types, "mpp": cfg.mpp, "tile": tile, "stride": stride,
          "batch_size": 8, "device": "cpu", "tta": args.tta, "postproc": postproc}
    print(f"checkpoint {args.checkpoint} (sha256 {model.sha256[:12]}), {len(val)} validation images, "
          f"CPU flags: {cpu_flag_summary()}")
    results = {"checkpoint": str(args.checkpoint), "sha256": model.sha256,
               "postproc": postproc.model_dump(mode="json")}
    t0 = time.time()
    results["original"] = score_by_dataset(net, val, **kw)
    if args.degrade:
        rng = np.random.default_rng(args.seed)
        quality = {s.name: int(rng.integers(args.quality[0], args.quality[1] + 1)) for s in val}
        results["degraded"] = score_by_dataset(
            net, val, transform=lambda s: scan_degrade(s.image, 2.0, quality[s.name]), **kw)
    print(f"{time.time() - t0:.0f} s")
    keys = ("pq", "dq", "sq", "aji", "dice", "f_d", "mpq", "recall", "f1_mean", "f1_1", "f1_2", "f1_3",
            "f1_4")  # point-labelled sets (and "all": pooled over every typed set) have the f1_*
    print("| dataset | images | " + " | ".join(keys) + (" | PQ degraded | gap |" if args.degrade else " |"))
    counts = {}
    for s in val:
        counts[s.meta["dataset"]] = counts.get(s.meta["dataset"], 0) + 1
    for name, sc in results["original"].items():
        cells = [f"{sc[k]:.4f}" if k in sc else "–" for k in keys]
        line = f"| {name} | {counts.get(name, len(val))} | " + " | ".join(cells)
        if args.degrade and "pq" in sc:
            d = results["degraded"][name]["pq"]
            line += f" | {d:.4f} | {sc['pq'] - d:+.4f}"
        elif args.degrade:
            line += " | – | –"
        print(line + " |")
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
