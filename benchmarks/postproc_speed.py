"""Throughput of ``segment_instances`` on one core, in megapixels per second.

CoNSeP patches (256²) are stitched 4×4 into 1024² mosaics; oracle maps (ns, hv_maps,
one-hot types) are built for each mosaic, then post-processing alone is timed, step 1 only
and two-step. Run with one thread so the figure is per core:

    OMP_NUM_THREADS=1 python benchmarks/postproc_speed.py [--mosaics N] [--degrade]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from wsi_pipeline.evaluation import Instances
from wsi_pipeline.evaluation.oracle import degrade, load_consep_truth, oracle_maps
from wsi_pipeline.postproc import segment_instances

DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "consep_patches" / "train"


def mosaics(patches: list[tuple[str, Instances]], n: int) -> list[Instances]:
    """Tile 16 consecutive patches into one 1024² map (ids offset so they stay unique)."""
    out = []
    for m in range(n):
        group = patches[16 * m : 16 * (m + 1)]
        inst = np.zeros((1024, 1024), np.int64)
        types = []
        offset = 0
        for k, (_, p) in enumerate(group):
            r, c = divmod(k, 4)
            ids = p.ids()
            lut = np.zeros(int(p.inst_map.max(initial=0)) + 1, np.int64)
            lut[ids] = np.arange(1, ids.size + 1) + offset
            inst[256 * r : 256 * r + 256, 256 * c : 256 * c + 256] = lut[p.inst_map]
            types.append(p.type_array())
            offset += ids.size
        out.append(Instances(inst, types=np.concatenate(types)))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--mosaics", type=int, default=8, help="number of 1024² mosaics (max 27)")
    ap.add_argument(
        "--degrade", action="store_true", help="time on soft, noisy maps instead of oracle maps"
    )
    args = ap.parse_args()
    patches = load_consep_truth(DEFAULT_DATA)
    rng = np.random.default_rng(0)
    inputs = []
    for mos in mosaics(patches, args.mosaics):
        maps = oracle_maps(mos)
        inputs.append(degrade(*maps, rng) if args.degrade else maps)
    mpx = len(inputs) * 1024 * 1024 / 1e6
    for two_step in (False, True):
        segment_instances(*inputs[0], two_step=two_step)  # warm-up
        t0 = time.perf_counter()
        n = sum(segment_instances(*maps, two_step=two_step).n for maps in inputs)
        dt = time.perf_counter() - t0
        name = "two-step" if two_step else "step 1  "
        print(f"{name}: {mpx / dt:6.2f} Mpx/s  ({len(inputs)} x 1024², {dt:.2f} s, {n} nuclei)")


if __name__ == "__main__":
    main()
