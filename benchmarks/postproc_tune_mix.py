"""Post-processing settings tuned on the network's output on TRAINING images of the mix.

Runs a checkpoint once over the training side of every dataset of a mix config (at most
--limit images per dataset, the first by name: never the held-out validation tiles), keeps the
maps, then scores a grid of `PostprocConfig` settings (NS threshold × HV edge threshold ×
minimum marker area, × any other scalar setting given with --set) with
`wsi_pipeline.evaluation.scoring.score_maps`. The objective is the mean over the
datasets of PQ (each dataset counts once, so CoNSeP's 352 patches do not outvote the other
sets), with mPQ of the typed set reported beside it. Report the chosen setting once on
validation with benchmarks/validate_mix.py; never tune there.

    python benchmarks/postproc_tune_mix.py --checkpoint wsi_pipeline/weights/default.pt
    python benchmarks/postproc_tune_mix.py --checkpoint wsi_pipeline/weights/default.pt \
        --ns 0.4 --edge 0.02 --marker 3 --set hv_smooth_sigma_um=0,0.25 --set split_peak_height_um=0.5,1,2
"""

from __future__ import annotations

import argparse
import itertools
import time
from pathlib import Path

from wsi_pipeline.config import load_config
from wsi_pipeline.datasets.mix import DATASET_KEY, read_mix
from wsi_pipeline.evaluation.scoring import (
    flatten_scores,
    predict_maps,
    score_maps,
    validation_tiling,
)
from wsi_pipeline.model import load_checkpoint
from wsi_pipeline.model.predictors import load_predictor
from wsi_pipeline.model.runtime import choose_runtime
from wsi_pipeline.postproc import PostprocConfig
from wsi_pipeline.training.config import TrainConfig

ROOT = Path(__file__).resolve().parents[1]


def grid_axis(text: str) -> tuple[str, list[float]]:
    """FIELD=V1,V2,... -> (FIELD, [V1, V2, ...]) for a scalar setting of `PostprocConfig`."""
    name, _, values = text.partition("=")
    if name not in PostprocConfig.model_fields or name == "optical_density" or not values:
        raise argparse.ArgumentTypeError(f"expected FIELD=V1,V2,... with a scalar PostprocConfig "
                                         f"setting, got {text!r}")
    return name, [float(v) for v in values.split(",")]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--checkpoint", type=Path, required=True)
    ap.add_argument("--config", type=Path, default=ROOT / "configs" / "train_mix.yaml")
    ap.add_argument("--limit", type=int, default=48, help="training images per dataset")
    ap.add_argument("--ns", type=float, nargs="+", default=[0.4, 0.5])
    ap.add_argument("--edge", type=float, nargs="+", default=[0.02, 0.04, 0.07, 0.1])
    ap.add_argument("--marker", type=float, nargs="+", default=[1.0, 3.0, 6.0, 10.0])
    ap.add_argument("--set", dest="extra", action="append", default=[], type=grid_axis,
                    metavar="FIELD=V1,V2,...", help="one more PostprocConfig setting to vary")
    args = ap.parse_args()

    cfg = load_config(args.config, TrainConfig)
    train, _ = read_mix(cfg.data.datasets, cfg.mpp, "fail")
    picked: dict[str, list] = {}
    for s in sorted(train, key=lambda s: s.name):
        picked.setdefault(s.meta[DATASET_KEY], [])
        if len(picked[s.meta[DATASET_KEY]]) < args.limit:
            picked[s.meta[DATASET_KEY]].append(s)
    samples = [s for group in picked.values() for s in group]
    model = load_checkpoint(args.checkpoint)
    net = load_predictor(model, choose_runtime(model.net.mean.device, "auto", "torch")).net
    t0 = time.time()
    tile, stride = validation_tiling(cfg.patch_size)
    maps = predict_maps(net, samples, tile=tile, stride=stride, batch_size=8, device="cpu")
    print(f"# {args.checkpoint} sha256 {model.sha256[:12]}: "
          f"{ {k: len(v) for k, v in picked.items()} } training images, model {time.time() - t0:.0f} s")
    base = PostprocConfig()
    results = []
    axes = {"ns_threshold": args.ns, "edge_threshold": args.edge, "min_marker_area_um2": args.marker,
            **dict(args.extra)}
    for values in itertools.product(*axes.values()):
        update = dict(zip(axes, values, strict=True))
        row = flatten_scores(score_maps(samples, maps, n_types=len(model.class_names), mpp=model.mpp,
                                        postproc=base.model_copy(update=update)))
        per = " ".join(f"{k[4:-3]}={v:.3f}" for k, v in row.items() if k.endswith("_pq") and k != "val_pq")
        shown = " ".join(f"{k}={v}" for k, v in update.items())
        print(f"{shown}: mean PQ {row['val_pq']:.4f} "
              f"mPQ {row.get('val_mpq', float('nan')):.4f} | {per}", flush=True)
        results.append((row["val_pq"], update))
    best = max(results, key=lambda r: r[0])
    print(f"best on training images: {best[1]} (mean PQ {best[0]:.4f}); defaults now "
          f"{ {k: getattr(base, k) for k in axes} }")


if __name__ == "__main__":
    main()
