"""The one in-memory form that every dataset reader produces."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass
class Sample:
    """One annotated image.

    `group` names the source image a patch was cut from, so train/validation splits can keep
    neighbouring patches of one tile on the same side (no leakage through overlap).

    `points`: the labels of a point-annotated image (`datasets.points`), float64 (K, 3) rows
    (row, col, class id) in this image's pixels, 0-based pixel centres; class 0 = a marked
    nucleus of no (known) class. Such an image has no masks: `inst_map` is all 0 and
    `type_map` None until `datasets.points.apply_point_targets` gives it training targets, and
    an unmarked nucleus is unlabelled, never background.
    """

    name: str
    image: np.ndarray  # (H, W, 3) uint8 RGB
    inst_map: np.ndarray  # (H, W) int32, 0 = background
    type_map: np.ndarray | None  # (H, W) int32 class ids, 0 = background; None if untyped
    class_names: tuple[str, ...]  # index = class id, entry 0 is "background"
    mpp: float | None  # microns per pixel, None where the source does not say
    group: str = ""
    meta: dict = field(default_factory=dict)
    points: np.ndarray | None = None
