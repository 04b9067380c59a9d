"""Nuclei of a real annotated image (a CoNSeP patch's ground truth), as every format reads them."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from wsi_pipeline.export.formats.base import Nuclei
from wsi_pipeline.postproc.measure import nucleus_table

CLASSES = ("background", "other", "inflammatory", "epithelial", "spindle")
COLORS = ("#000000", "#ff0000", "#00ff00", "#0000ff", "#ffff00")


@pytest.fixture(scope="module")
def nuclei(shared_data) -> Nuclei:
    """train_3_000's nuclei, ids 1..N in raster order of their first pixel, types by majority."""
    root = shared_data / "consep_patches/train"
    inst = np.load(root / "inst" / "train_3_000.npy")
    types_map = np.asarray(Image.open(root / "seg_mask" / "train_3_000.png"))
    ids = np.unique(inst)[1:]
    labels = np.searchsorted(np.concatenate([[0], ids]), inst).astype(np.int32)
    types = np.array([np.bincount(types_map[labels == i]).argmax() for i in range(1, ids.size + 1)],
                     np.int32)
    probs = np.eye(len(CLASSES), dtype=np.float32)[types] * 0.9 + 0.02
    table = nucleus_table(labels, types, probs, class_names=CLASSES, mpp=0.25)
    return Nuclei.from_table(table, source_id="train_3_000", class_names=CLASSES, class_colors=COLORS,
                             level0_mpp=0.25, labels=labels, type_probs=probs,
                             provenance={"model_sha256": "ab" * 32, "mpp": 0.25})
