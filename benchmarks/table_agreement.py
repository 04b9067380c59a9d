"""How far two nuclei tables of the same slide agree: the tolerance of a change of engine settings.

A faster path (another back end, another tile size) changes the network's maps by rounding
or context, so its table is not byte-identical; this says by how much. Nuclei are matched
one-to-one by centroid (each pair the mutual nearest within --radius µm); reported: counts,
the share of each table matched, type agreement among the matched, the median |Δ area| / area
and the centroid offset.

    python benchmarks/table_agreement.py OUT_A/SLIDE/nuclei.parquet OUT_B/SLIDE/nuclei.parquet

Centroids in µm (the tables' x_um, y_um), so the two may differ in map pixel size.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
from scipy.spatial import cKDTree

COLUMNS = ("x_um", "y_um", "area_um2", "type_name")


def read(path: Path) -> dict[str, np.ndarray]:
    table = pq.read_table(path, columns=list(COLUMNS))
    return {c: table.column(c).to_numpy(zero_copy_only=False) for c in COLUMNS}


def mutual_nearest(a: np.ndarray, b: np.ndarray, radius: float) -> tuple[np.ndarray, np.ndarray]:
    """Index pairs (i in a, j in b) that are each other's nearest neighbour within `radius`."""
    if len(a) == 0 or len(b) == 0:
        return np.zeros(0, int), np.zeros(0, int)
    da, ja = cKDTree(b).query(a, distance_upper_bound=radius)
    _, ib = cKDTree(a).query(b, distance_upper_bound=radius)
    i = np.flatnonzero(np.isfinite(da))
    j = ja[i]
    keep = ib[j] == i
    return i[keep], j[keep]


def agreement(a: dict[str, np.ndarray], b: dict[str, np.ndarray], radius_um: float) -> dict:
    pa = np.column_stack([a["x_um"], a["y_um"]])
    pb = np.column_stack([b["x_um"], b["y_um"]])
    i, j = mutual_nearest(pa, pb, radius_um)
    n_a, n_b, n = len(pa), len(pb), len(i)
    area_a, area_b = a["area_um2"][i], b["area_um2"][j]
    return {
        "n_a": n_a, "n_b": n_b, "matched": n,
        "matched_share_a": n / n_a if n_a else float("nan"),
        "matched_share_b": n / n_b if n_b else float("nan"),
        "type_agreement": float(np.mean(a["type_name"][i] == b["type_name"][j])) if n else float("nan"),
        "median_rel_area_diff": float(np.median(np.abs(area_b - area_a) / area_a)) if n else float("nan"),
        "median_offset_um": float(np.median(np.hypot(*(pa[i] - pb[j]).T))) if n else float("nan"),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("a", type=Path, help="reference nuclei.parquet")
    ap.add_argument("b", type=Path, help="nuclei.parquet to compare")
    ap.add_argument("--radius", type=float, default=2.0, help="match radius, µm")
    args = ap.parse_args()
    print(json.dumps(agreement(read(args.a), read(args.b), args.radius), indent=1))


if __name__ == "__main__":
    main()
