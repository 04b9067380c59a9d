"""Ablation of the cost-sensitive loss and rare-class sampling (issue 10, patent claim).

Every variant starts from the same weights (--init, default the shipped ones), trains the same
number of epochs on the same CoNSeP training tiles with the same seed, and is scored on the
same 80 held-out CoNSeP patches (tiles 2, 9, 13, 19, 27) after its last epoch (not its best, so
no variant gets more chances than another). Variants: λ ∈ --lams × rare-class sampling
strength ∈ --strengths. Prints a markdown table of mPQ, PQ and per-class F_c / PQ.

    python benchmarks/ablation_cost.py --epochs 3 --samples-per-epoch 240 --out runs/ablation
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
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")

    rows = []
    for strength in args.strengths:
        for lam in args.lams:
            cfg = variant_config(args.out, lam, strength, args)
            result = train(cfg, progress=False)  # resumes a variant that was interrupted
            last = result.history[-1]
            rows.append({"lam": lam, "rare_strength": strength, **{k: last[k] for k in last
                         if k.startswith(("val_pq", "val_mpq", "val_f_c_", "val_f_d"))}})
            (args.out / "ablation.json").write_text(json.dumps(rows, indent=1))
    with open(args.out / "ablation.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(dict.fromkeys(k for r in rows for k in r)))
        writer.writeheader()
        writer.writerows(rows)
    head = ["λ", "rare sampling", "PQ", "mPQ", "F_d"] + [f"F_c {n}" for n in TYPES.values()]
    head += [f"PQ {n}" for n in TYPES.values()]
    print("| " + " | ".join(head) + " |")
    print("|" + "---|" * len(head))
    for r in rows:
        cells = [f"{r['lam']:g}", f"{r['rare_strength']:g}", f"{r['val_pq']:.4f}", f"{r['val_mpq']:.4f}",
                 f"{r['val_f_d']:.4f}"]
        cells += [f"{r.get(f'val_f_c_{t}', float('nan')):.4f}" for t in TYPES]
        cells += [f"{r.get(f'val_pq_{t}', float('nan')):.4f}" for t in TYPES]
        print("| " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
