"""COCO instance annotations (PanNuke breast here; what CVAT, Label Studio and detectron2 use).

One JSON file (`images`, `annotations`, `categories`) beside the images. Each annotation's
`segmentation` is an RLE mask — uncompressed (`counts` a list, column-major runs starting with
background, as pycocotools writes) or compressed (`counts` a string) — or a list of polygons.
Rules: an RLE whose `size` differs from the image's is an error naming the image; an empty mask
is skipped and counted; where masks overlap, the annotation listed later keeps the pixels (as
for polygons, `polygons.rasterise_polygons`), and the count of such pixels is kept in meta.
Categories become types with `typed=True`; otherwise the masks are instances only and the
category of each instance stays in meta["categories"].
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
from PIL import Image

from wsi_pipeline.datasets.polygons import rasterise_polygons
from wsi_pipeline.datasets.sample import Sample
from wsi_pipeline.datasets.validate import OnError, load_all
from wsi_pipeline.labels import relabel

log = logging.getLogger(__name__)

UNTYPED_CLASSES = ("background", "nucleus")


def decode_compressed_counts(text: str) -> list[int]:
    """pycocotools' compressed RLE string -> run lengths (6-bit chars, 5 data bits, deltas
    against the run two back from the third run on)."""
    counts: list[int] = []
    p = 0
    while p < len(text):
        x, k, more = 0, 0, True
        while more:
            c = ord(text[p]) - 48
            x |= (c & 0x1F) << (5 * k)
            more = bool(c & 0x20)
            p += 1
            k += 1
            if not more and (c & 0x10):
                x |= -1 << (5 * k)
        if len(counts) > 2:
            x += counts[-2]
        counts.append(x)
    return counts


def decode_rle(rle: dict) -> np.ndarray:
    """Bool (h, w) mask of one COCO RLE."""
    h, w = (int(v) for v in rle["size"])
    counts = rle["counts"]
    counts = decode_compressed_counts(counts) if isinstance(counts, str) else [int(c) for c in counts]
    if any(c < 0 for c in counts) or sum(counts) != h * w:
        raise ValueError(f"RLE runs sum to {sum(counts)}, not {h}x{w} = {h * w}")
    values = np.zeros(len(counts), dtype=bool)
    values[1::2] = True
    return np.repeat(values, counts).reshape(w, h).T  # column-major


def _annotation_mask(ann: dict, shape: tuple[int, int]) -> np.ndarray:
    seg = ann.get("segmentation")
    if isinstance(seg, dict):
        if tuple(int(v) for v in seg["size"]) != shape:
            raise ValueError(f"annotation {ann.get('id')}: RLE size {seg['size']} differs from the "
                             f"image's {list(shape)}")
        return decode_rle(seg)
    if isinstance(seg, list):  # polygons [[x0, y0, x1, y1, ...], ...]
        polys = [np.asarray(p, dtype=np.float64).reshape(-1, 2) for p in seg]
        return rasterise_polygons(polys, shape).index_map > 0
    raise ValueError(f"annotation {ann.get('id')}: no segmentation")


def _load(image: dict, anns: list[dict], folder: Path, categories: dict[int, str],
          class_ids: dict[int, int] | None, class_names: tuple[str, ...], mpp: float | None) -> Sample:
    path = folder / image["file_name"]
    rgb = np.asarray(Image.open(path).convert("RGB"))
    if rgb.shape[:2] != (int(image["height"]), int(image["width"])):
        raise ValueError(f"image is {rgb.shape[1]}x{rgb.shape[0]} but the JSON says "
                         f"{image['width']}x{image['height']}")
    index = np.zeros(rgb.shape[:2], np.int32)
    overlap = empty = 0
    kept: list[dict] = []
    for ann in anns:
        mask = _annotation_mask(ann, rgb.shape[:2])
        if not mask.any():
            empty += 1
            continue
        overlap += int(np.count_nonzero(index[mask]))
        kept.append(ann)
        index[mask] = len(kept)
    inst = relabel(index)
    present = np.unique(index[index > 0])  # kept-annotation numbers that still own pixels
    cats = [categories.get(int(kept[i - 1]["category_id"]), "?") for i in present]
    typ = None
    if class_ids is not None:
        lut = np.zeros(len(kept) + 1, np.int32)
        lut[1:] = [class_ids[int(a["category_id"])] for a in kept]
        typ = lut[index]
    return Sample(
        name=path.stem,
        image=rgb,
        inst_map=inst,
        type_map=typ,
        class_names=class_names,
        mpp=mpp,
        group=path.stem,
        meta={"source": str(path), "categories": cats, "empty_masks": empty,
              "overlap_px": overlap},
    )


def read_coco(
    root: Path,
    *,
    annotations: str | None = None,
    typed: bool = False,
    mpp: float | None = 0.25,
    on_error: OnError = "fail",
) -> list[Sample]:
    """Images of a COCO JSON (the only *.json in root, or `annotations`), in file-name order.

    mpp: what the images are at (PanNuke: 40×, 0.25 µm/px); COCO does not record it."""
    root = Path(root)
    if annotations is not None:
        json_path = root / annotations
    else:
        found = sorted(root.glob("*.json"))
        if len(found) != 1:
            raise FileNotFoundError(f"expected one COCO .json in {root}, found {len(found)}")
        json_path = found[0]
    try:
        coco = json.loads(json_path.read_text())
        images, anns_all, cats = coco["images"], coco["annotations"], coco["categories"]
    except (json.JSONDecodeError, KeyError, TypeError) as exc:
        raise ValueError(f"{json_path}: not a COCO annotation file ({exc})") from exc
    categories = {int(c["id"]): str(c["name"]) for c in cats}
    class_ids = class_names = None
    if typed:
        order = sorted(categories)
        class_ids = {cid: i + 1 for i, cid in enumerate(order)}
        class_names = ("background", *(categories[c] for c in order))
    by_image: dict[int, list[dict]] = {}
    for a in anns_all:
        by_image.setdefault(int(a["image_id"]), []).append(a)
    items = sorted(images, key=lambda im: im["file_name"])
    return load_all(
        items,
        lambda im: _load(im, by_image.get(int(im["id"]), []), root, categories, class_ids,
                         class_names or UNTYPED_CLASSES, mpp),
        on_error,
        name=lambda im: f"{json_path.name}:{im['file_name']}",
    )
