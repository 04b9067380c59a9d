"""Bring a sample to the model's pixel size, so no dataset is ever trained at the wrong scale.

A 20× image (0.5 µm/px) fed to a 0.25 µm/px network shows nuclei at half their size; the
network then learns (or is validated on) the wrong sizes. Readers record each image's mpp, and
training and `convert --target-mpp` resample here with the engine's own resampling
(`wsi_pipeline.resample`): the image as `Slide.read_region_at_mpp` resamples slide tiles, the
label maps nearest-neighbour on the same grid (instances that vanish when shrinking are dropped),
point labels moved onto the new grid.
"""

from __future__ import annotations

from dataclasses import replace

from wsi_pipeline.datasets.points import scale_points
from wsi_pipeline.datasets.sample import Sample
from wsi_pipeline.labels import relabel
from wsi_pipeline.resample import resize_labels, resize_rgb, scaled_size

# Pixel sizes within this relative difference are the same scale (0.2527 vs 0.25 µm/px).
SAME_SCALE_TOLERANCE = 0.05


def to_mpp(sample: Sample, mpp: float, tolerance: float = SAME_SCALE_TOLERANCE) -> Sample:
    """`sample` resampled to `mpp` µm/px; unchanged when its mpp is unknown or already within
    `tolerance`. The original pixel size is kept in meta["source_mpp"]."""
    if sample.mpp is None or abs(sample.mpp - mpp) <= tolerance * mpp:
        return sample
    size = scaled_size(sample.inst_map.shape, sample.mpp / mpp)
    inst = relabel(resize_labels(sample.inst_map, size))
    typ = None if sample.type_map is None else resize_labels(sample.type_map, size)
    h, w = sample.inst_map.shape
    points = None if sample.points is None else scale_points(sample.points, (size[1] / h, size[0] / w))
    return replace(
        sample,
        image=resize_rgb(sample.image, size),
        inst_map=inst,
        type_map=typ,
        mpp=float(mpp),
        meta={**sample.meta, "source_mpp": sample.mpp},
        points=points,
    )
