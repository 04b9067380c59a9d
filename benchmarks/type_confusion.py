"""Where the nucleus types go wrong: a confusion matrix per validation dataset of a training mix.

For every held-out image of a training config's datasets (its `val_fraction` / `val_groups`,
never trained on) the checkpoint's maps go through the full post-processing, and each labelled
nucleus — a point of a point set, or the centroid of a typed mask set's nucleus — is paired
with a predicted nucleus within 3 µm (`evaluation.points.pair_within`). The table counts
labelled class (rows) against the paired nucleus' type (columns; "missed": none paired), so a
class with a low F1 shows whether it is missed, taken for another class, or predicted where the
labels say another (the column's share that is right, over the labelled nuclei only: unmarked
nuclei of a point set are unlabelled, never wrong).

    python benchmarks/type_confusion.py --checkpoint wsi_pipeline/weights/default.pt \
        --config configs/train_types_stage13.yaml
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from wsi_pipeline.config import load_config
from wsi_pipeline.datasets.consep_patches import CONSEP_CLASSES
from wsi_pipeline.datasets.mix import read_mix
from wsi_pipeline.evaluation.detection import radius_px
from wsi_pipeline.evaluation.points import PointCounts, centroids_rc, labelled_nuclei
from wsi_pipeline.evaluation.scoring import predict_maps, validation_tiling
from wsi_pipeline.model import load_checkpoint
from wsi_pipeline.model.predict import cpu_flags
from wsi_pipeline.model.predictors import load_predictor
from wsi_pipeline.model.runtime import choose_runtime
from wsi_pipeline.postproc.watershed import segment_instances
from wsi_pipeline.training.config import TrainConfig

ROOT = Path(__file__).resolve().parents[1]


def confusion_table(name: str, counts: PointCounts, class_names: list[str]) -> str:
    """A Markdown table of one dataset's confusion, with recall, the column's labelled share
    that is right, and F1 per class."""
    n = len(class_names)
    m = counts.confusion_matrix(n)
    present = [c for c in range(1, n) if m[c].sum() > 0]
    head = " | ".join([*(class_names[c] for c in range(1, n)), "missed"])
    lines = [f"**{name}** ({int(m.sum())} labelled nuclei)", "",
             f"| labelled \\ predicted | {head} | recall | right when predicted | F1 |",
             "|" + "---|" * (n + 4)]
    for c in present:
        row = m[c]
        cells = " | ".join(str(int(row[k])) for k in (*range(1, n), 0))
        recall = row[c] / row.sum()
        col = m[present, c].sum()
        right = m[c, c] / col if col else float("nan")
        lines.append(f"| {class_names[c]} | {cells} | {recall:.3f} | {right:.3f} | {counts.f1(c):.3f} |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--checkpoint", type=Path, required=True)
    ap.add_argument("--config", type=Path, default=ROOT / "configs" / "train_types_stage13.yaml")
    ap.add_argument("--json", type=Path, default=None, help="write the matrices here")
    args = ap.parse_args()

    cfg = load_config(args.config, TrainConfig)
    class_names = ["background", *cfg.classes] if cfg.classes else list(CONSEP_CLASSES)
    _, val = read_mix(cfg.data.datasets, cfg.mpp, "fail",
                      None if cfg.classes is None else tuple(class_names))
    model = load_checkpoint(args.checkpoint)
    net = load_predictor(model, choose_runtime(model.net.mean.device, "auto", "torch")).net
    tile, stride = validation_tiling(cfg.patch_size)
    t0 = time.time()
    maps = predict_maps(net, val, tile=tile, stride=stride, batch_size=8, device="cpu")
    radius = radius_px(cfg.mpp)
    by_set: dict[str, PointCounts] = {}
    for s, m in zip(val, maps, strict=True):
        if s.points is None and s.type_map is None:
            continue
        seg = segment_instances(m["ns"], m["hv"], m["nc"], mpp=cfg.mpp, config=cfg.postproc)
        true_rc, true_types = labelled_nuclei(s.points, s.inst_map, s.type_map)
        counts = by_set.setdefault(s.meta.get("dataset", ""), PointCounts())
        counts.add(true_rc, true_types, centroids_rc(seg.inst_map), seg.types, radius)
    flags = " ".join(sorted(f for f in cpu_flags() if f.startswith(("avx512_bf16", "amx_bf16", "avx2"))))
    print(f"checkpoint {args.checkpoint} (sha256 {model.sha256[:12]}), config {args.config}, "
          f"{len(val)} validation images, {time.time() - t0:.0f} s, CPU flags: {flags}\n")
    pooled = PointCounts()
    for name, counts in by_set.items():
        print(confusion_table(name, counts, class_names) + "\n")
        pooled.merge(counts)
    print(confusion_table("pooled", pooled, class_names))
    if args.json:
        args.json.write_text(json.dumps(
            {"checkpoint": str(args.checkpoint), "sha256": model.sha256, "classes": class_names,
             "confusion": {k: v.confusion_matrix(len(class_names)).tolist()
                           for k, v in {**by_set, "pooled": pooled}.items()}}, indent=1))


if __name__ == "__main__":
    main()
