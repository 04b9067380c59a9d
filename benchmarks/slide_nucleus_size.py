"""Nucleus sizes on the real slides: the plausibility check behind issue 10's CMU target.

Runs `wsi-pipeline run` (default settings, --workers 0) on each real slide of
../shared/data/slides with a checkpoint, in a temporary output folder, and prints per slide the
number of nuclei, the median area (µm²) and equivalent diameter, the share of objects ≤ 2 µm²
(fragments) and the type composition. Real nuclei on CMU-1-Small-Region (20× skin) are ≈
20–60 µm²; the project's target for the median is 12–80 µm².

    python benchmarks/slide_nucleus_size.py --checkpoint wsi_pipeline/weights/default.pt
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

REPO = Path(__file__).resolve().parents[1]
SLIDES = REPO.parent / "shared" / "data" / "slides"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--checkpoint", type=Path, default=REPO / "wsi_pipeline" / "weights" / "default.pt")
    ap.add_argument("--slides", type=Path, nargs="+", default=[SLIDES / "CMU-1-Small-Region.svs"])
    ap.add_argument("--mpp", type=float, default=None, help="fallback for slides without mpp")
    args = ap.parse_args()
    print("| slide | nuclei | median area µm² | median diameter µm | ≤ 2 µm² | types | s |")
    print("|---|---|---|---|---|---|---|")
    for slide in args.slides:
        with tempfile.TemporaryDirectory() as tmp:
            cmd = [sys.executable, "-c", "from wsi_pipeline.cli import main; main()",
                   "run", str(slide), "-o", tmp,
                   "--checkpoint", str(args.checkpoint), "--workers", "0"]
            if args.mpp:
                cmd += ["--mpp", str(args.mpp)]
            t0 = time.time()
            subprocess.run(cmd, check=True, capture_output=True)
            seconds = time.time() - t0
            table = next(Path(tmp).glob("*/nuclei.parquet"))
            df = pd.read_parquet(table, columns=["area_um2", "type_name"])
        area = df["area_um2"].to_numpy()
        types = df["type_name"].value_counts(normalize=True).round(2).to_dict()
        print(f"| {slide.name} | {len(df)} | {np.median(area):.1f} | "
              f"{2 * np.sqrt(np.median(area) / np.pi):.1f} | {np.mean(area <= 2):.1%} | {types} | "
              f"{seconds:.0f} |")


if __name__ == "__main__":
    main()
