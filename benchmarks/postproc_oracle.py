"""Oracle test of the two-step watershed on CoNSeP patches.

Ideal network outputs are built from the ground truth (ns = inst > 0, hv = hv_maps(inst),
type_prob = one-hot of the type map), passed through ``segment_instances`` with
``two_step`` False and True, and scored against the ground truth. With ``--degrade`` the
maps are first made soft and noisy (Gaussian-blurred HV, blurred + noisy NS and types), to
check that the thresholds also hold on network-like outputs.

    python benchmarks/postproc_oracle.py [--data DIR] [--limit N] [--degrade] [--json OUT]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from wsi_pipeline.evaluation.oracle import load_consep_truth, score_oracle

DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "consep_patches" / "train"


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA)
    ap.add_argument("--limit", type=int, default=None)
    ap.add_argument("--step", type=int, default=1, help="take every n-th patch")
    ap.add_argument("--degrade", action="store_true")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    patches = load_consep_truth(args.data, args.limit, args.step)
    results = {}
    for two_step in (False, True):
        t0 = time.perf_counter()
        s = score_oracle(patches, two_step=two_step, degraded=args.degrade)
        s["seconds"] = time.perf_counter() - t0
        key = "two_step" if two_step else "step1"
        results[key] = s
        print(
            f"{key:9s} n={int(s['n_images'])} PQ={s['pq']:.4f} DQ={s['dq']:.4f} SQ={s['sq']:.4f} "
            f"AJI={s['aji']:.4f} AJI+={s['aji_plus']:.4f} Dice={s['dice']:.4f} mPQ={s['mpq']:.4f} "
            f"F_d={s['f_d']:.4f} ({s['seconds']:.1f} s)"
        )
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
