"""Training on several datasets at once, each with the labels it has.

Every dataset of the mix is read by its reader, brought to the model's pixel size
(`rescale.to_mpp`), split into train and validation by its own rule (named held-out groups, or
a fraction of its source groups) and tagged with its name in `meta["dataset"]`, so validation
reports each dataset separately and no held-out tile of one set leaks through another.

Drawing: each epoch draws `samples_per_epoch` training crops; a dataset's share of the draws is
its `weight`; within a dataset an image is drawn in proportion to its area (a 1000² tile holds
15 crops' worth of nuclei, a 256² patch one) times its rare-class boost (`rare_class_boost`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, field_validator

from wsi_pipeline.datasets.points import remap_point_classes
from wsi_pipeline.datasets.readers import READERS
from wsi_pipeline.datasets.rescale import to_mpp
from wsi_pipeline.datasets.sample import Sample
from wsi_pipeline.datasets.split import split_by_group
from wsi_pipeline.datasets.validate import OnError

log = logging.getLogger(__name__)

DATASET_KEY = "dataset"  # Sample.meta key naming the dataset of the mix a sample came from


class DatasetSpec(BaseModel):
    """One dataset of a training mix."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=r"^[A-Za-z0-9_]+$", description="Used in history.csv column names.")
    format: str = Field(description="A `wsi-pipeline convert` format (reader name).")
    root: Path
    weight: float = Field(1.0, gt=0, description="Share of the training draws (relative).")
    options: dict = Field(default_factory=dict, description="Extra reader keywords, e.g. mpp.")
    val_groups: list[str] = Field(
        default_factory=list, description="Source groups (tiles) held out for validation."
    )
    val_fraction: float = Field(0.0, ge=0, lt=1, description="Or: share of groups held out.")
    split_seed: int = 0
    class_map: dict[str, str | None] | None = Field(
        None,
        description="Point-labelled sets: the dataset's class names onto the model's (the typed "
        "mask sets' class list); None = a marked nucleus with no type target. Every class of "
        "the dataset must be named; a model class no dataset class maps to is unlabelled here.",
    )

    @field_validator("format")
    @classmethod
    def _known_format(cls, value: str) -> str:
        value = value.replace("_", "-")
        if value not in READERS:
            raise ValueError(f"unknown format {value!r}; one of {sorted(READERS)}")
        return value


def read_dataset(spec: DatasetSpec, mpp: float, on_error: OnError) -> tuple[list[Sample], list[Sample]]:
    """(train, val) of one dataset at `mpp`, tagged with its name."""
    samples = READERS[spec.format](spec.root, on_error=on_error, **spec.options)
    if not samples:
        raise ValueError(f"{spec.root}: no samples for dataset {spec.name!r}")
    samples = [to_mpp(s, mpp) for s in samples]
    for s in samples:
        s.meta[DATASET_KEY] = spec.name
    if spec.val_groups:
        groups = {s.group or s.name for s in samples}
        missing = sorted(set(spec.val_groups) - groups)
        if missing:
            raise ValueError(f"dataset {spec.name!r}: val_groups {missing} not in {spec.root}")
        held = set(spec.val_groups)
        train = [s for s in samples if (s.group or s.name) not in held]
        val = [s for s in samples if (s.group or s.name) in held]
    else:
        train, val = split_by_group(samples, spec.val_fraction, spec.split_seed)
    log.info("dataset %s (%s, %s): %d train / %d validation images", spec.name, spec.format,
             spec.root, len(train), len(val))
    return train, val


def read_mix(specs: list[DatasetSpec], mpp: float, on_error: OnError,
             class_names: tuple[str, ...] | None = None,
             default_class_names: Callable[[], tuple[str, ...]] | None = None
             ) -> tuple[list[Sample], list[Sample]]:
    """Concatenated (train, val) of every dataset; names must be unique. Point-labelled sets'
    classes are mapped (their `class_map`) onto `class_names`, by default the typed mask sets',
    and without typed mask sets those `default_class_names()` gives (the classes of the weights a
    run starts from; called only then)."""
    names = [s.name for s in specs]
    if len(set(names)) != len(names):
        raise ValueError(f"dataset names must be unique, got {names}")
    parts = [(spec, *read_dataset(spec, mpp, on_error)) for spec in specs]
    target = class_names or typed_class_names(
        [s for _, t, v in parts for s in t + v if s.points is None])
    if target is None and default_class_names is not None:
        target = default_class_names()
    train: list[Sample] = []
    val: list[Sample] = []
    for spec, t, v in parts:
        if any(s.points is not None for s in t + v):
            if spec.class_map is None or target is None:
                raise ValueError(f"dataset {spec.name!r} is point-labelled: it needs a class_map "
                                 "onto the model's classes (from a typed mask set of the mix)")
            try:
                t = [remap_point_classes(s, spec.class_map, target) for s in t]
                v = [remap_point_classes(s, spec.class_map, target) for s in v]
            except ValueError as exc:
                raise ValueError(f"dataset {spec.name!r}: {exc}") from exc
        elif spec.class_map is not None:
            raise ValueError(f"dataset {spec.name!r}: class_map applies to point-labelled sets only")
        train += t
        val += v
    return train, val


def typed_class_names(samples: list[Sample]) -> tuple[str, ...] | None:
    """The class list every typed (or point-labelled) sample shares (None if none is)."""
    names = {s.class_names for s in samples if s.type_map is not None or s.points is not None}
    if len(names) > 1:
        raise ValueError(f"typed datasets disagree on classes: {sorted(names)}")
    return names.pop() if names else None


def instance_type_counts(sample: Sample, n_types: int) -> np.ndarray:
    """Nuclei per class in one typed sample (index 0 unused)."""
    assert sample.type_map is not None, "called for typed samples only"
    ids, first = np.unique(sample.inst_map, return_index=True)
    types = sample.type_map.ravel()[first[ids > 0]]
    return np.bincount(types, minlength=n_types)[:n_types]


def rare_class_boost(samples: list[Sample], class_weight: np.ndarray, strength: float) -> np.ndarray:
    """Per-sample factor 1 + strength × (share of its nuclei in rare classes, weighted by
    class_weight / max): a patch full of the rarest class is drawn (1 + strength) times as often
    as one without. Untyped samples get 1. `class_weight` is the cost matrix's row weight w_c."""
    boost = np.ones(len(samples))
    if strength == 0:
        return boost
    w = np.asarray(class_weight, dtype=np.float64).copy()
    w[0] = 0.0
    w = w / max(w[1:].max(initial=0.0), 1e-12)
    for i, s in enumerate(samples):
        if s.type_map is None:
            continue
        counts = instance_type_counts(s, w.size)
        if counts[1:].sum():
            boost[i] += strength * float((counts * w).sum() / counts[1:].sum())
    return boost


def draw_weights(samples: list[Sample], dataset_weights: dict[str, float], boost: np.ndarray) -> np.ndarray:
    """Probability of drawing each training sample: dataset share × area share × boost."""
    area = np.array([s.inst_map.size for s in samples], dtype=np.float64) * boost
    names = [s.meta.get(DATASET_KEY, "") for s in samples]
    p = np.zeros(len(samples))
    total_weight = sum(dataset_weights.get(n, 1.0) for n in set(names))
    for name in set(names):
        idx = [i for i, n in enumerate(names) if n == name]
        p[idx] = dataset_weights.get(name, 1.0) / total_weight * area[idx] / area[idx].sum()
    return p / p.sum()
