"""Train/validation split by source group, so overlapping or neighbouring patches of one
tile never sit on both sides (which would inflate validation scores)."""

from __future__ import annotations

import numpy as np

from wsi_pipeline.datasets.sample import Sample


def split_by_group(
    samples: list[Sample], val_fraction: float, seed: int = 0
) -> tuple[list[Sample], list[Sample]]:
    """Shuffle groups with `seed` and move whole groups to validation until it holds about
    `val_fraction` of the samples (at least one group when 0 < val_fraction and there are >= 2 groups)."""
    if not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}")
    groups = sorted({s.group or s.name for s in samples})
    order = np.random.default_rng(seed).permutation(len(groups))
    sizes: dict[str, int] = {}
    for s in samples:
        key = s.group or s.name
        sizes[key] = sizes.get(key, 0) + 1
    target = val_fraction * len(samples)
    val_groups: set[str] = set()
    taken = 0
    for i in order:
        if len(val_groups) >= len(groups) - 1 or taken >= target:
            break
        g = groups[i]
        if val_groups and abs(taken + sizes[g] - target) > abs(taken - target):
            continue
        val_groups.add(g)
        taken += sizes[g]
    train = [s for s in samples if (s.group or s.name) not in val_groups]
    val = [s for s in samples if (s.group or s.name) in val_groups]
    return train, val
