"""Ablation of the cost-sensitive loss and rare-class sampling (issue 10, patent claim).

Every variant starts from the same weights (--init, default the shipped ones), trains the same
number of epochs on the same CoNSeP training tiles with the same seed, and is scored on the
same 80 held-out CoNSeP patches (tiles 2, 9, 13, 19, 27) after its last epoch (not its best, so
no variant gets more chances than another). Variants: λ ∈ --lams × rare-class sampling
strength ∈ --strengths. Prints a markdown table of mPQ, PQ and per-class F_c / PQ.

    python benchmarks/ablation_cost.py --epochs 3 --samples-per-epoch 240 --out runs/ablation

With --config TRAIN.yaml the variants are that training config instead (its data mix, point
sets included, its init_from, train_parts, schedule and seed), changed only in λ, the rare-class
strength, the epochs and crops per epoch, validated once after the last epoch; point-labelled
sets reuse the config's cached instances (its out_dir/point_instances). The table then also has
the point sets' mean F1 and "other" F1 pooled over every set that has it (`all`).

    python benchmarks/ablation_cost.py --config configs/train_types_stage11.yaml --epochs 2 \
        --samples-per-epoch 400 --strengths 2 --out runs/ablation_types
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
from pathlib import Path

from wsi_pipeline.training.config import TrainConfig
from wsi_pipeline.training.loop import train

ROOT = Path(__file__).resolve().parents[1]
TYPES = {1: "other", 2: "inflammatory", 3: "epithelial", 4: "spindle"}


def variant_config(out: Path, lam: float, strength: float, args: argparse.Namespace) -> TrainConfig:
    return TrainConfig.model_validate({
        "out_dir": str(out / f"lam{lam:g}_rare{strength:g}"),
        "init_from": str(args.init),
        "epochs": args.epochs,
        "batch_size": 8,
        "seed": args.seed,
        "num_workers": 1,
        "model": {"n_types": 5, "encoder": "resnet34", "width": 32, "cross_task": True},
        "loss": {"lam": lam},
        "sampling": {"samples_per_epoch": args.samples_per_epoch, "rare_class_strength": strength},
        "optim": {"lr": args.lr, "schedule": "cosine", "min_lr": 1e-5},
        "data": {"format": "consep_patches", "root": str(args.data), "val_fraction": 0.2,
                 "split_seed": 0},
    })


def config_variant(out: Path, lam: float, strength: float, args: argparse.Namespace) -> TrainConfig:
    """The training config of --config, changed only where an ablation variant differs."""
    from wsi_pipeline.config import load_config

    base = load_config(args.config, TrainConfig)
    data = base.model_dump(mode="json")
    data.update({
        "out_dir": str(out / f"lam{lam:g}_rare{strength:g}"), "epochs": args.epochs,
        "val_every": args.epochs, "validate_start": False,
        "loss": {**data["loss"], "lam": lam},
        "sampling": {"samples_per_epoch": args.samples_per_epoch, "rare_class_strength": strength},
        "points": {**data["points"], "cache_dir": str(base.points.cache_dir
                                                       or Path(base.out_dir) / "point_instances")},
    })
    return TrainConfig.model_validate(data)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--init", type=Path, default=ROOT / "wsi_pipeline" / "weights" / "default.pt")
    ap.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data" / "consep_patches" / "train")
    ap.add_argument("--out", type=Path, default=ROOT / "runs" / "ablation")
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--samples-per-epoch", type=int, default=240)
    ap.add_argument("--lr", type=float, default=2e-4)
    ap.add_argument("--seed", type=int, default=3)
    ap.add_argument("--lams", type=float, nargs="+", default=[0.0, 0.2, 1.0])
    ap.add_argument("--strengths", type=float, nargs="+", default=[0.0, 2.0])
    ap.add_argument("--config", type=Path, default=None,
                    help="variants of this training config (mix, point sets) instead of CoNSeP alone")
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")

    rows = []
    for strength in args.strengths:
        for lam in args.lams:
            make = config_variant if args.config else variant_config
            cfg = make(args.out, lam, strength, args)
            result = train(cfg, progress=False)  # resumes a variant that was interrupted
            last = result.history[-1]
            prefixes = ("val_pq", "val_mpq", "val_f_c_", "val_f_d", "val_consep_", "val_crc_",
                        "val_brca_", "val_all_")
            rows.append({"lam": lam, "rare_strength": strength,
                         **{k: last[k] for k in last if k.startswith(prefixes)}})
            (args.out / "ablation.json").write_text(json.dumps(rows, indent=1))
    with open(args.out / "ablation.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(dict.fromkeys(k for r in rows for k in r)))
        writer.writeheader()
        writer.writerows(rows)
    if args.config:  # a mix: CoNSeP's scores under its name, the point sets' F1
        for r in rows:
            for k in list(r):
                if k.startswith("val_consep_"):
                    r["val_" + k.removeprefix("val_consep_")] = r[k]
    head = ["λ", "rare sampling", "PQ", "mPQ", "F_d"] + [f"F_c {n}" for n in TYPES.values()]
    head += [f"PQ {n}" for n in TYPES.values()]
    points = [k for k in ("val_crc_f1_mean", "val_brca_f1_mean", "val_crc_f1_1", "val_all_f1_1")
              if any(k in r for r in rows)]
    head += [k.removeprefix("val_") for k in points]
    print("| " + " | ".join(head) + " |")
    print("|" + "---|" * len(head))
    for r in rows:
        cells = [f"{r['lam']:g}", f"{r['rare_strength']:g}", f"{r['val_pq']:.4f}", f"{r['val_mpq']:.4f}",
                 f"{r['val_f_d']:.4f}"]
        cells += [f"{r.get(f'val_f_c_{t}', float('nan')):.4f}" for t in TYPES]
        cells += [f"{r.get(f'val_pq_{t}', float('nan')):.4f}" for t in TYPES]
        cells += [f"{r.get(k, float('nan')):.4f}" for k in points]
        print("| " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
