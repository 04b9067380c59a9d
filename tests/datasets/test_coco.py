import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from wsi_pipeline.datasets.coco import decode_compressed_counts, decode_rle, read_coco
from wsi_pipeline.datasets.validate import SampleError


def _rle(mask: np.ndarray) -> dict:
    """Uncompressed column-major COCO RLE of a bool mask."""
    flat = mask.T.ravel().astype(int)
    change = np.flatnonzero(np.diff(np.concatenate([[0], flat, [1 - flat[-1]]])))
    counts = np.diff(np.concatenate([[0], change])).tolist()
    return {"size": list(mask.shape), "counts": counts}


def _write(root: Path, masks: list[np.ndarray], shape=(12, 10), cats=None) -> None:
    Image.fromarray(np.zeros((*shape, 3), np.uint8)).save(root / "p.png")
    anns = [{"id": i, "image_id": 1, "category_id": (cats or [1] * len(masks))[i],
             "segmentation": _rle(m)} for i, m in enumerate(masks)]
    (root / "a.json").write_text(json.dumps({
        "images": [{"id": 1, "file_name": "p.png", "height": shape[0], "width": shape[1]}],
        "annotations": anns,
        "categories": [{"id": 1, "name": "A"}, {"id": 2, "name": "B"}]}))


def test_rle_is_column_major_and_compressed_form_decodes() -> None:
    mask = np.zeros((4, 3), bool)
    mask[0, 1] = mask[1, 1] = True  # column 1, rows 0-1
    rle = _rle(mask)
    assert rle["counts"] == [4, 2, 6]
    assert (decode_rle(rle) == mask).all()
    # pycocotools' compressed string for the same runs [4, 2, 6]
    assert decode_compressed_counts("426") == [4, 2, 6]
    with pytest.raises(ValueError, match="RLE runs sum to 11"):
        decode_rle({"size": [4, 3], "counts": [4, 2, 5]})


def test_coco_rules(tmp_path: Path) -> None:
    a = np.zeros((12, 10), bool)
    a[2:6, 2:6] = True
    b = np.zeros((12, 10), bool)
    b[4:9, 4:9] = True
    _write(tmp_path, [a, b, np.zeros((12, 10), bool)], cats=[1, 2, 1])
    (s,) = read_coco(tmp_path)
    assert s.type_map is None and int(s.inst_map.max()) == 2
    assert s.inst_map[5, 5] == 2  # the later annotation keeps the overlap
    assert s.meta["overlap_px"] == 4 and s.meta["empty_masks"] == 1
    assert s.meta["categories"] == ["A", "B"]
    (t,) = read_coco(tmp_path, typed=True)
    assert t.class_names == ("background", "A", "B") and t.type_map[3, 3] == 1 and t.type_map[5, 5] == 2
    _write(tmp_path, [np.zeros((10, 12), bool)])  # RLE of another size than the image
    with pytest.raises(SampleError, match=r"a.json:p.png: annotation 0: RLE size \[10, 12\]"):
        read_coco(tmp_path)


def test_real_pannuke_breast(shared_data: Path) -> None:
    samples = read_coco(shared_data / "pannuke_breast")
    assert len(samples) == 25 and sum(int(s.inst_map.max()) for s in samples) == 631
    cats = [c for s in samples for c in s.meta["categories"]]
    assert cats.count("Neoplastic") == 216 and len(cats) == 631
    s = samples[0]
    grey = s.image.mean(axis=2)
    assert grey[s.inst_map > 0].mean() < grey[s.inst_map == 0].mean() - 20  # masks on the nuclei
