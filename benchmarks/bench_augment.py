"""Time the augmentation pipeline per 256² CoNSeP patch (single thread).

Usage: OMP_NUM_THREADS=1 python benchmarks/bench_augment.py [DATA_ROOT]
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np

from wsi_pipeline.datasets import Augmenter, read_consep_patches
from wsi_pipeline.datasets.augment_config import AugmentConfig
from wsi_pipeline.datasets.targets import hv_maps

CASES = {
    "default config": AugmentConfig(),
    "cheap path (flip/rot90 + HED + colour)": AugmentConfig(p_affine=0, p_blur=0, p_hed=1, p_color=1),
    "affine only": AugmentConfig(p_affine=1, p_hed=0, p_color=0, p_blur=0),
    "everything, p=1": AugmentConfig(p_affine=1, p_hed=1, p_color=1, p_blur=1),
}


def main() -> None:
    root = Path(sys.argv[1]) if len(sys.argv) > 1 else Path("../shared/data/consep_patches/train")
    samples = read_consep_patches(root)[:64]
    for name, cfg in CASES.items():
        aug, rng, n = Augmenter(cfg), np.random.default_rng(0), 640
        t = time.perf_counter()
        for i in range(n):
            s = samples[i % len(samples)]
            aug(s.image, s.inst_map, s.type_map, rng)
        print(f"{name:45s} {(time.perf_counter() - t) / n * 1e3:6.2f} ms/patch")
    t = time.perf_counter()
    for s in samples:
        hv_maps(s.inst_map)
    ms = (time.perf_counter() - t) / len(samples) * 1e3
    print(f"{'hv_maps (datasets/targets.py, for comparison)':45s} {ms:6.2f} ms/patch")


if __name__ == "__main__":
    main()
