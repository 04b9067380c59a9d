"""Consistency checks shared by every reader, so a bad label file is caught at load time
with its file name rather than as a silent wrong target mid-training."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, Literal, TypeVar

import numpy as np

from wsi_pipeline.datasets.sample import Sample

log = logging.getLogger(__name__)

OnError = Literal["fail", "skip"]
T = TypeVar("T")


class SampleError(ValueError):
    """A sample whose files disagree with each other; the message starts with the file name."""


def instance_types(inst_map: np.ndarray, type_map: np.ndarray) -> np.ndarray:
    """Per-instance class id for a contiguous inst_map, index i-1 for instance i.

    Raises ValueError if an instance carries more than one type value.
    """
    fg = inst_map > 0
    n = int(inst_map.max()) if fg.any() else 0
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    inst = inst_map[fg].astype(np.int64)
    typ = type_map[fg].astype(np.int64)
    lo = np.full(n + 1, np.iinfo(np.int64).max)
    hi = np.full(n + 1, np.iinfo(np.int64).min)
    np.minimum.at(lo, inst, typ)
    np.maximum.at(hi, inst, typ)
    lo, hi = lo[1:], hi[1:]
    present = hi != np.iinfo(np.int64).min
    mixed = np.flatnonzero(present & (lo != hi)) + 1
    if mixed.size:
        raise ValueError(f"{mixed.size} instance(s) carry more than one type, e.g. id {mixed[0]}")
    return np.where(present, lo, 0)


def check_sample(sample: Sample) -> None:
    """Raise ValueError if shapes, dtypes or the type map disagree with the instance map."""
    img, inst, typ = sample.image, sample.inst_map, sample.type_map
    if img.ndim != 3 or img.shape[2] != 3 or img.dtype != np.uint8:
        raise ValueError(f"image must be (H,W,3) uint8, got {img.shape} {img.dtype}")
    if inst.shape != img.shape[:2]:
        raise ValueError(f"size mismatch: image {img.shape[:2]} vs instance map {inst.shape}")
    if typ is None:
        return
    if typ.shape != inst.shape:
        raise ValueError(f"size mismatch: instance map {inst.shape} vs type map {typ.shape}")
    if typ.min(initial=0) < 0 or typ.max(initial=0) >= len(sample.class_names):
        raise ValueError(
            f"type values {int(typ.min())}..{int(typ.max())} outside 0..{len(sample.class_names) - 1}"
        )
    fg = inst > 0
    disagree = int(np.count_nonzero(fg != (typ > 0)))
    if disagree:
        raise ValueError(f"type map disagrees with instances: {disagree} px where (inst>0) != (type>0)")
    instance_types(inst, typ)


def _file_name(item: Any) -> str:
    return Path(item).name


def load_all(
    items: Iterable[T],
    load: Callable[[T], Sample],
    on_error: OnError,
    name: Callable[[T], str] = _file_name,
) -> list[Sample]:
    """Load and check each item; failures name the file (or `name(item)`), and either raise
    `SampleError` or are logged and skipped."""
    if on_error not in ("fail", "skip"):
        raise ValueError(f"on_error must be 'fail' or 'skip', got {on_error!r}")
    samples: list[Sample] = []
    for item in items:
        try:
            sample = load(item)
            check_sample(sample)
        except (ValueError, OSError, KeyError) as exc:
            msg = f"{name(item)}: {exc}"
            if on_error == "fail":
                raise SampleError(msg) from exc
            log.warning("skipping bad sample %s", msg)
            continue
        samples.append(sample)
    return samples
