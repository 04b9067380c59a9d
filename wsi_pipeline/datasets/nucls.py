"""Reader for the NuCLS segmentation layout used by CellViT++:
<split>/images/<name>.png + <split>/labels/<name>.npy (pickled 0-d object array holding a dict
with `inst_map` and `type_map`) and label_map.yaml (class id -> name; 0 is background)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import yaml
from PIL import Image

from wsi_pipeline.datasets.sample import Sample
from wsi_pipeline.datasets.validate import OnError, load_all
from wsi_pipeline.labels import relabel


def read_label_map(path: Path) -> tuple[str, ...]:
    """label_map.yaml -> class_names with "background" at 0; ids must be 1..K."""
    mapping = {int(k): str(v) for k, v in yaml.safe_load(Path(path).read_text()).items()}
    if sorted(mapping) != list(range(1, len(mapping) + 1)):
        raise ValueError(f"{path.name}: class ids must be 1..K, got {sorted(mapping)}")
    return ("background",) + tuple(mapping[k] for k in sorted(mapping))


def _load(path: Path, class_names: tuple[str, ...], mpp: float | None, split: str) -> Sample:
    label_path = path.parent.parent / "labels" / f"{path.stem}.npy"
    # These label files are pickles by format: only load datasets you trust.
    labels = np.load(label_path, allow_pickle=True).item()
    missing = [k for k in ("inst_map", "type_map") if not isinstance(labels, dict) or k not in labels]
    if missing:
        raise ValueError(f"{label_path.name}: no {' or '.join(repr(k) for k in missing)}")
    return Sample(
        name=path.stem,
        image=np.asarray(Image.open(path).convert("RGB")),
        inst_map=relabel(np.asarray(labels["inst_map"]).astype(np.int64)),
        type_map=np.asarray(labels["type_map"]).astype(np.int32),
        class_names=class_names,
        mpp=mpp,
        group=path.stem,
        meta={"source": str(path), "split": split},
    )


def read_nucls(
    root: Path,
    *,
    splits: tuple[str, ...] = ("train", "test"),
    mpp: float | None = None,
    on_error: OnError = "fail",
) -> list[Sample]:
    """Images of the given splits that exist under `root`. The layout does not record the
    resolution, so mpp is whatever the caller passes (None = unknown)."""
    root = Path(root)
    class_names = read_label_map(root / "label_map.yaml")
    items = [(p, s) for s in splits for p in sorted((root / s / "images").glob("*.png"))]
    if not items:
        raise FileNotFoundError(f"no images under {root}/{{{','.join(splits)}}}/images")
    return load_all(items, lambda it: _load(it[0], class_names, mpp, it[1]), on_error,
                    name=lambda it: it[0].name)
