"""The project's own on-disk dataset layout, which `wsi-pipeline convert` writes:

    DST/images/<name>.png       RGB
    DST/labels/<name>.npz       inst_map (int32), type_map (int32; absent if untyped), points
                                (float64 (K, 3) row, col, class; point-labelled sets only)
    DST/classes.json            class_names, and per sample its group and mpp, plus provenance

Every file is written under a temporary name and renamed, so a crash never leaves half a file.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

import wsi_pipeline
from wsi_pipeline.atomic import atomic_path, write_text_atomic
from wsi_pipeline.datasets.sample import Sample
from wsi_pipeline.datasets.validate import OnError, load_all

CLASSES_FILE = "classes.json"


def write_common(samples: list[Sample], dst: Path, *, source: dict | None = None) -> None:
    """Write `samples` (one shared class list) to `dst`; classes.json is written last."""
    if not samples:
        raise ValueError("no samples to write")
    class_names = samples[0].class_names
    if any(s.class_names != class_names for s in samples):
        raise ValueError("samples disagree on class_names; convert one dataset at a time")
    names = [s.name for s in samples]
    if len(set(names)) != len(names):
        raise ValueError("sample names are not unique")
    dst = Path(dst)
    (dst / "images").mkdir(parents=True, exist_ok=True)
    (dst / "labels").mkdir(parents=True, exist_ok=True)
    for s in samples:
        with atomic_path(dst / "images" / f"{s.name}.png") as tmp:
            Image.fromarray(s.image).save(tmp, format="PNG")
        arrays: dict[str, Any] = {"inst_map": s.inst_map.astype(np.int32)}
        if s.type_map is not None:
            arrays["type_map"] = s.type_map.astype(np.int32)
        if s.points is not None:
            arrays["points"] = s.points.astype(np.float64)
        with atomic_path(dst / "labels" / f"{s.name}.npz") as tmp, open(tmp, "wb") as f:
            np.savez_compressed(f, **arrays)  # a file object: savez would append .npz to a name
    index = {
        "class_names": list(class_names),
        "samples": {s.name: {"group": s.group, "mpp": s.mpp} for s in samples},
        "provenance": {"wsi_pipeline_version": wsi_pipeline.__version__, **(source or {})},
    }
    write_text_atomic(dst / CLASSES_FILE, json.dumps(index, indent=1))


def read_common(root: Path, *, on_error: OnError = "fail") -> list[Sample]:
    """Samples listed in root/classes.json, in name order."""
    root = Path(root)
    index = json.loads((root / CLASSES_FILE).read_text())
    class_names = tuple(index["class_names"])
    entries = index["samples"]

    def load(name: str) -> Sample:
        with np.load(root / "labels" / f"{name}.npz") as z:
            inst = z["inst_map"].astype(np.int32)
            typ = z["type_map"].astype(np.int32) if "type_map" in z.files else None
            points = z["points"].astype(np.float64) if "points" in z.files else None
        return Sample(
            name=name,
            image=np.asarray(Image.open(root / "images" / f"{name}.png").convert("RGB")),
            inst_map=inst,
            type_map=typ,
            class_names=class_names,
            mpp=entries[name].get("mpp"),
            group=entries[name].get("group") or name,
            meta={"source": str(root / "images" / f"{name}.png")},
            points=points,
        )

    return load_all(sorted(entries), load, on_error, name=lambda n: f"{n}.png/{n}.npz")
