"""Nucleus types on real slides, compared between runs (e.g. two checkpoints): type shares, type
confidence, background share, and the same crop of each run outlined by type, side by side.

    wsi-pipeline run ../shared/data/slides -o /tmp/old --mpp 0.5 --workers 0
    wsi-pipeline run ../shared/data/slides -o /tmp/new --mpp 0.5 --workers 0 --config new.yaml
    python benchmarks/slide_types.py /tmp/old /tmp/new --labels shipped new \
        --slide CMU-1-Small-Region --box X Y SIZE --png docs/img/cmu_types.png

--box X Y SIZE is a level-0 square (the QC sheet names its crops' boxes); the PNG shows the raw
crop and then each run's outlines coloured by type (the QC sheet's colours). The TCGA slide has
no pixel size in its file: pass the same --mpp to every run.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import shapely
from PIL import Image, ImageDraw

from wsi_pipeline.io import open_slide

COLOURS = {"other": (255, 165, 0), "inflammatory": (220, 0, 0), "epithelial": (0, 170, 0),
           "spindle": (0, 0, 230)}
LOW_TYPE_PROB = 0.5


def slide_figures(folder: Path) -> dict:
    """Type shares and confidence of one slide's nuclei.parquet."""
    t = pd.read_parquet(folder / "nuclei.parquet",
                        columns=["type_name", "type_prob", "prob_background"])
    summary = json.loads((folder / "summary.json").read_text())
    return {"nuclei": len(t),
            "shares": {k: round(float(v), 3) for k, v in t.type_name.value_counts(normalize=True).items()},
            "mean_type_prob": round(float(t.type_prob.mean()), 3),
            "low_type_fraction": round(float((t.type_prob < LOW_TYPE_PROB).mean()), 3),
            "mean_background_share": round(float(t.prob_background.mean()), 3),
            "qc_flags": (summary.get("qc") or {}).get("flags"),
            "model_sha256": (summary.get("provenance") or {}).get("model_sha256", "")[:8]}


def crop(slide_path: Path, runs: list[Path], slide: str, box: tuple[int, int, int], scale: int,
         mpp: float | None) -> Image.Image:
    """The raw crop, then each run's outlines on it, side by side (level-0 box, enlarged)."""
    x, y, size = box
    with open_slide(slide_path, mpp=mpp) as s:
        raw = Image.fromarray(s.read_region_at_mpp(x, y, (size, size), s.mpp)).resize(
            (size * scale, size * scale), Image.Resampling.LANCZOS)
    panels = [raw]
    for run in runs:
        panel = raw.copy()
        draw = ImageDraw.Draw(panel)
        table = pq.read_table(run / slide / "nuclei.parquet",
                              columns=["type_name", "geometry", "x", "y"]).to_pandas()
        near = table[(table.x > x - 30) & (table.x < x + size + 30) & (table.y > y - 30)
                     & (table.y < y + size + 30)]
        for name, geom in zip(near.type_name, shapely.from_wkb(near.geometry.to_numpy()), strict=True):
            xy = (np.asarray(geom.exterior.coords) - [x, y]) * scale
            draw.line([tuple(p) for p in xy], fill=COLOURS.get(name, (0, 0, 0)), width=2)
        panels.append(panel)
    out = Image.new("RGB", (sum(p.width for p in panels) + 8 * (len(panels) - 1), panels[0].height),
                    "white")
    left = 0
    for p in panels:
        out.paste(p, (left, 0))
        left += p.width + 8
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("runs", type=Path, nargs="+", help="OUT folders of `wsi-pipeline run`")
    ap.add_argument("--labels", nargs="+", default=None)
    ap.add_argument("--slide", default=None, help="slide id of the crop")
    ap.add_argument("--slide-path", type=Path, default=None,
                    help="its file (default ../shared/data/slides/<slide>.svs)")
    ap.add_argument("--box", type=int, nargs=3, metavar=("X", "Y", "SIZE"), default=None)
    ap.add_argument("--scale", type=int, default=2)
    ap.add_argument("--mpp", type=float, default=None, help="level-0 µm/px of a slide without one")
    ap.add_argument("--png", type=Path, default=None)
    args = ap.parse_args()
    labels = args.labels or [str(r) for r in args.runs]
    for label, run in zip(labels, args.runs, strict=True):
        for folder in sorted(p for p in run.iterdir() if (p / "nuclei.parquet").is_file()):
            print(f"{label:>10} {folder.name}: {json.dumps(slide_figures(folder))}")
    if args.box and args.slide and args.png:
        shared = Path(__file__).resolve().parents[2] / "shared" / "data" / "slides"
        path = args.slide_path or shared / f"{args.slide}.svs"
        crop(path, args.runs, args.slide, tuple(args.box), args.scale, args.mpp).save(args.png, optimize=True)
        print(f"{args.png}: raw | {' | '.join(labels)}")


if __name__ == "__main__":
    main()
