"""Point labels: nuclei marked by a dot and a class, not outlined (CRCHistoPhenotypes, BRCA-M2C,
QuPath point annotations).

A point set marks *some* of the nuclei of an image. What it says is "the nucleus under this
dot is of class c"; it says nothing about the pixels elsewhere, so an unmarked nucleus is
unlabelled, never background. Training turns the points into type targets in three steps:

1. `check_points` refuses coordinates outside the image and unknown classes, naming the file;
2. `remap_point_classes` maps the dataset's class names onto the model's (a class the model
   does not have becomes 0: still a marked nucleus, for detection recall, but no type target);
3. `point_targets` gives each labelled point's class to the nucleus that contains it — an
   instance of the network's own post-processed prediction (`training.point_instances`
   computes and caches them), or a disk of `disk_um` where no predicted instance covers the
   point (or two points of different classes claim the same instance). Every other pixel is
   `IGNORE` for the type branch, and the whole image is ignored by NS and HV
   (`NucleusDataset` reads `POINTS_ONLY`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path

import numpy as np
from scipy import ndimage

from wsi_pipeline.datasets.sample import Sample
from wsi_pipeline.model.losses import IGNORE

#: Sample.meta key set on point-labelled samples once they carry targets: their inst_map holds
#: only the labelled nuclei, so NS and HV must not learn from it
POINTS_ONLY = "points_only"
#: radius of the disk that stands for a nucleus no predicted instance covers (µm); also the
#: pairing radius of point scoring (HoVer-Net's 12 px at 0.25 µm/px)
DISK_UM = 3.0
#: a point this close (µm) to a predicted instance is given to it: annotators' dots are not
#: always inside the outline the network draws
SNAP_UM = 1.5


#: how far (px) outside the image a point may lie and be moved onto its edge: annotators click
#: on nuclei cut by the border (CRCHistoPhenotypes has x = 0.27 in 1-based coordinates)
EDGE_TOLERANCE_PX = 1.5


def check_points(points: np.ndarray, shape_hw: tuple[int, int], n_classes: int, source: str | Path,
                 *, edge_tolerance: float = EDGE_TOLERANCE_PX) -> np.ndarray:
    """`points` as float64 (K, 3) (row, col, class), or ValueError naming `source` for
    malformed arrays, non-finite or outside coordinates and class ids outside 0..n_classes-1.
    Points up to `edge_tolerance` px outside are moved onto the edge."""
    pts = np.asarray(points, dtype=np.float64)
    if pts.ndim != 2 or pts.shape[1] != 3:
        raise ValueError(f"{source}: points must be (K, 3) row, col, class; got shape {pts.shape}")
    if not np.isfinite(pts).all():
        raise ValueError(f"{source}: non-finite point coordinates")
    h, w = shape_hw
    t = 0.5 + edge_tolerance
    outside = (pts[:, 0] < -t) | (pts[:, 0] > h - 1 + t) | (pts[:, 1] < -t) | (pts[:, 1] > w - 1 + t)
    if outside.any():
        r, c = pts[np.argmax(outside), :2]
        raise ValueError(f"{source}: {int(outside.sum())} point(s) outside the {w}×{h} image, "
                         f"e.g. row {r:g}, col {c:g}")
    cls = pts[:, 2]
    bad = (cls != np.round(cls)) | (cls < 0) | (cls >= n_classes)
    if bad.any():
        raise ValueError(f"{source}: unknown class {cls[np.argmax(bad)]:g} (classes 0..{n_classes - 1})")
    pts[:, 0] = np.clip(pts[:, 0], 0, h - 1)
    pts[:, 1] = np.clip(pts[:, 1], 0, w - 1)
    return pts


def remap_point_classes(sample: Sample, class_map: Mapping[str, str | None],
                        target_names: Sequence[str]) -> Sample:
    """`sample` with its point classes renamed onto `target_names` (entry 0 background) by
    `class_map` (dataset class name -> target name, or None: marked, no type). A dataset class
    missing from the map is an error, so a renamed class is never dropped by accident."""
    if sample.points is None:
        raise ValueError(f"{sample.name}: not a point-labelled sample")
    target = {name: i for i, name in enumerate(target_names)}
    lut = np.zeros(len(sample.class_names), np.float64)
    for i, name in enumerate(sample.class_names[1:], start=1):
        if name not in class_map:
            raise ValueError(f"class_map has no entry for the dataset's class {name!r} "
                             f"(its classes: {list(sample.class_names[1:])})")
        dst = class_map[name]
        if dst is None:
            continue
        if dst not in target or target[dst] == 0:
            raise ValueError(f"class_map: {name!r} -> {dst!r}, not one of the model's classes "
                             f"{list(target_names[1:])}")
        lut[i] = target[dst]
    unknown = sorted(set(class_map) - set(sample.class_names[1:]))
    if unknown:
        raise ValueError(f"class_map names classes the dataset does not have: {unknown}")
    pts = sample.points.copy()
    pts[:, 2] = lut[pts[:, 2].astype(np.int64)]
    return replace(sample, points=pts, class_names=tuple(target_names))


def scale_points(points: np.ndarray, scale_rc: tuple[float, float]) -> np.ndarray:
    """Points moved onto a grid resampled by `scale_rc` (new pixels per old pixel per axis),
    pixel centres mapping as in `resample.resize_rgb`."""
    out = points.copy()
    out[:, 0] = (points[:, 0] + 0.5) * scale_rc[0] - 0.5
    out[:, 1] = (points[:, 1] + 0.5) * scale_rc[1] - 0.5
    return out


def point_targets(points: np.ndarray, pred_inst: np.ndarray, mpp: float, *,
                  disk_um: float = DISK_UM, snap_um: float = SNAP_UM
                  ) -> tuple[np.ndarray, np.ndarray]:
    """(inst_map, type_map) training targets from labelled points and a predicted instance map.

    Each point of class c > 0 labels the predicted instance under it (or within `snap_um`); a
    point no instance takes, or whose instance another point of a different class also claims,
    gets a disk of radius `disk_um` (not over labelled instances). inst_map holds only these
    labelled nuclei (ids 1..K); type_map is their class there and `IGNORE` everywhere else.
    """
    h, w = pred_inst.shape
    inst = np.zeros((h, w), np.int32)
    typ = np.full((h, w), IGNORE, np.int32)
    labelled = points[points[:, 2] > 0]
    if len(labelled) == 0:
        return inst, typ
    rc = np.clip(np.rint(labelled[:, :2]).astype(np.int64), 0, [h - 1, w - 1])
    cls = labelled[:, 2].astype(np.int32)
    owner = pred_inst[rc[:, 0], rc[:, 1]].astype(np.int64)
    if (owner == 0).any() and pred_inst.any():
        dist, (ir, ic) = ndimage.distance_transform_edt(pred_inst == 0, return_indices=True)
        near = (owner == 0) & (dist[rc[:, 0], rc[:, 1]] <= snap_um / mpp)
        owner[near] = pred_inst[ir[rc[near, 0], rc[near, 1]], ic[rc[near, 0], rc[near, 1]]]
    # an instance claimed by points of two classes is an under-segmentation: use disks instead
    claimed: dict[int, set[int]] = {}
    for o, c in zip(owner, cls, strict=True):
        if o > 0:
            claimed.setdefault(int(o), set()).add(int(c))
    given = {o: k for k, o in enumerate((o for o, cs in claimed.items() if len(cs) == 1), start=1)}
    if given:  # one pass over the image: lookup tables from predicted id to target id and class
        id_lut = np.zeros(int(pred_inst.max()) + 1, np.int32)
        type_lut = np.full(id_lut.size, IGNORE, np.int32)
        for o, k in given.items():
            id_lut[o], type_lut[o] = k, next(iter(claimed[o]))
        inst, typ = id_lut[pred_inst], type_lut[pred_inst]
    next_id = len(given) + 1
    radius = disk_um / mpp
    rr = int(np.ceil(radius))
    dy, dx = np.mgrid[-rr:rr + 1, -rr:rr + 1]
    disk = dy * dy + dx * dx <= radius * radius
    for (r, c), o, k in zip(rc, owner, cls, strict=True):
        if o > 0 and int(o) in given:
            continue
        r0, r1, c0, c1 = max(r - rr, 0), min(r + rr + 1, h), max(c - rr, 0), min(c + rr + 1, w)
        window = disk[r0 - r + rr:r1 - r + rr, c0 - c + rr:c1 - c + rr] & (inst[r0:r1, c0:c1] == 0)
        inst[r0:r1, c0:c1][window] = next_id
        typ[r0:r1, c0:c1][window] = k
        next_id += 1
    return inst, typ


def apply_point_targets(sample: Sample, pred_inst: np.ndarray, mpp: float, *,
                        disk_um: float = DISK_UM, snap_um: float = SNAP_UM) -> Sample:
    """`sample` (point-labelled, at `mpp`) with the targets of `point_targets` and `POINTS_ONLY`
    set; its points are kept for scoring."""
    if sample.points is None:
        raise ValueError(f"{sample.name}: not a point-labelled sample")
    if pred_inst.shape != sample.image.shape[:2]:
        raise ValueError(f"{sample.name}: predicted instances {pred_inst.shape} vs image "
                         f"{sample.image.shape[:2]}")
    inst, typ = point_targets(sample.points, pred_inst, mpp, disk_um=disk_um, snap_um=snap_um)
    return replace(sample, inst_map=inst, type_map=typ, meta={**sample.meta, POINTS_ONLY: True})


def is_points_only(sample: Sample) -> bool:
    """Whether `sample`'s masks come from points (NS and HV must not learn from them)."""
    return bool(sample.meta.get(POINTS_ONLY)) or (sample.points is not None and sample.type_map is None)
