"""Teaching skin with the QuPath recipe (docs/nucleus_types.md), measured on a part of the slide
the labels never touch.

The shipped weights never saw skin and call most keratinocytes of CMU-1-Small-Region's
epidermis inflammatory. A lab fixes that with `finetune-types`: it opens the run's detections in
QuPath, sets the class of the epidermis's nuclei to epithelial, leaves the rest as the model
called them, and exports. This script plays that user on the lower part of the slide (level-0
y ≥ 1500, epidermis outlined by eye in TRAIN_EPIDERMIS) and measures the upper part (y < 1500,
never labelled, 128 µm squares around the labels stay below y 1372): the type shares of the
nuclei inside the held-out epidermis outline HELD_OUT_EPIDERMIS (drawn by eye on the slide's
level-0 pixels, the QC sheet's judged crop at x 1058, y 1058 inside it) before and after.
Only reviewed nuclei are exported: the epidermis's (relabelled) and those of two dermis areas
(their class kept).

    wsi-pipeline run ../shared/data/slides -o OUT_BEFORE --mpp 0.5 --workers 0
    python benchmarks/skin_keratinocytes.py label OUT_BEFORE DATA     # DATA/CMU.svs + CMU.geojson
    wsi-pipeline finetune-types DATA -o RUN                           # type decoder only
    wsi-pipeline run ../shared/data/slides -o OUT_AFTER --mpp 0.5 --workers 0 --checkpoint RUN/best.pt
    python benchmarks/skin_keratinocytes.py score OUT_BEFORE OUT_AFTER
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import pandas as pd
import shapely

ROOT = Path(__file__).resolve().parents[1]
SLIDE = "CMU-1-Small-Region"
#: labels only below this level-0 row; the part above is held out
HELD_OUT_BELOW_Y = 1500
#: epidermis (and a follicle's outer sheath) of the lower part, level-0 (x, y), drawn by eye
TRAIN_EPIDERMIS = [
    [(1110, 1650), (1250, 1650), (1300, 1800), (1320, 1950), (1290, 2250), (1240, 2330),
     (1170, 2330), (1150, 2150), (1110, 1950), (1090, 1750)],
    [(600, 2560), (700, 2560), (720, 2700), (680, 2800), (640, 2940), (560, 2940), (560, 2700)],
    [(1600, 2400), (1680, 2380), (1720, 2500), (1700, 2700), (1680, 2950), (1540, 2950),
     (1530, 2700), (1560, 2500)],
]
#: dermis of the lower part away from any epidermis, level-0 (x, y), drawn by eye: its nuclei
#: keep the run's class (the reviewer found nothing to correct there)
TRAIN_DERMIS = [
    [(1400, 1900), (1550, 1900), (1550, 2350), (1400, 2350)],
    [(900, 2400), (1100, 2400), (1100, 2850), (900, 2850)],
    [(1400, 2400), (1510, 2400), (1510, 2900), (1400, 2900)],
    [(700, 1600), (1000, 1600), (1000, 1850), (700, 1850)],
]
#: epidermis of the held-out upper part, level-0 (x, y), drawn by eye
HELD_OUT_EPIDERMIS = [(1130, 650), (1250, 640), (1320, 780), (1310, 950), (1260, 1100),
                      (1230, 1250), (1150, 1250), (1120, 1050), (1110, 850)]
#: dermis of the held-out upper part (lymphocytes and fibroblasts), level-0 (x, y), drawn by eye
HELD_OUT_DERMIS = [(900, 700), (1080, 700), (1080, 1250), (900, 1250)]


def _nuclei(out: Path) -> pd.DataFrame:
    return pd.read_parquet(out / SLIDE / "nuclei.parquet", columns=["x", "y", "type_name", "type_prob"])


def label(out: Path, data: Path, slide: Path) -> None:
    """DATA/CMU.svs (a link to the slide) and DATA/CMU.geojson: a point per reviewed nucleus of
    the lower part, epithelial inside TRAIN_EPIDERMIS, the class the run gave it inside
    TRAIN_DERMIS; the nuclei nobody reviewed are not exported (an unreviewed keratinocyte would
    teach the very error being corrected)."""
    t = _nuclei(out)
    t = t[t.y >= HELD_OUT_BELOW_Y]
    xy = t.x.to_numpy(), t.y.to_numpy()
    inside = shapely.contains_xy(shapely.union_all([shapely.Polygon(p) for p in TRAIN_EPIDERMIS]), *xy)
    dermis = shapely.contains_xy(shapely.union_all([shapely.Polygon(p) for p in TRAIN_DERMIS]), *xy)
    t, inside = t[inside | dermis], inside[inside | dermis]
    names = t.type_name.where(~inside, "epithelial")
    features = [{"type": "Feature", "geometry": {"type": "Point", "coordinates": [float(x), float(y)]},
                 "properties": {"objectType": "annotation", "classification": {"name": str(n)}}}
                for x, y, n in zip(t.x, t.y, names, strict=True)]
    data.mkdir(parents=True, exist_ok=True)
    if not (data / "CMU.svs").exists():
        os.symlink(slide.resolve(), data / "CMU.svs")
    (data / "CMU.geojson").write_text(json.dumps({"type": "FeatureCollection", "features": features}))
    print(f"{data / 'CMU.geojson'}: {len(features)} points, {int(inside.sum())} relabelled epithelial "
          f"(inside the lower epidermis), {len(features) - int(inside.sum())} of the dermis "
          "with the run's class")


def score(outs: list[Path]) -> None:
    """Type shares of the nuclei inside the held-out epidermis and dermis outlines, per run."""
    print("| run | held-out area | nuclei | epithelial | inflammatory | spindle | other | mean type_prob |\n"
          "|---|---|---|---|---|---|---|---|")
    for out in outs:
        t = _nuclei(out)
        for area, outline in (("epidermis", HELD_OUT_EPIDERMIS), ("dermis", HELD_OUT_DERMIS)):
            sel = t[shapely.contains_xy(shapely.Polygon(outline), t.x.to_numpy(), t.y.to_numpy())]
            share = sel.type_name.value_counts(normalize=True)
            cells = " | ".join(f"{100 * share.get(k, 0.0):.1f} %" for k in
                               ("epithelial", "inflammatory", "spindle", "other"))
            print(f"| {out} | {area} | {len(sel)} | {cells} | {sel.type_prob.mean():.2f} |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="what", required=True)
    a = sub.add_parser("label", help="write the QuPath-style labels of the lower part")
    a.add_argument("out", type=Path, help="a run folder holding CMU-1-Small-Region/nuclei.parquet")
    a.add_argument("data", type=Path, help="the finetune-types data folder to write")
    a.add_argument("--slide", type=Path, default=ROOT.parent / "shared" / "data" / "slides" / f"{SLIDE}.svs")
    b = sub.add_parser("score", help="type shares in the held-out epidermis")
    b.add_argument("outs", type=Path, nargs="+")
    args = ap.parse_args()
    if args.what == "label":
        label(args.out, args.data, args.slide)
    else:
        score(args.outs)


if __name__ == "__main__":
    main()
