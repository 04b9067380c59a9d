from pathlib import Path

import numpy as np
import pytest

from tests.helpers.data_fixtures import disc_labels
from wsi_pipeline.datasets.pannuke import PANNUKE_CLASSES, pannuke_labels, read_pannuke
from wsi_pipeline.datasets.validate import SampleError


def _fold(tmp_path: Path, n: int = 3, overlap_at: int | None = None) -> Path:
    fold = tmp_path / "fold1"
    fold.mkdir()
    images = np.zeros((n, 64, 64, 3), np.float64)  # the official folds store float64
    masks = np.zeros((n, 64, 64, 6), np.float64)
    for i in range(n):
        image, inst, _ = disc_labels(ids=(1, 2, 3))
        images[i] = image
        # neoplastic channel holds ids 1 and 2; connective reuses id 1 for another nucleus
        masks[i, ..., 0] = np.where(np.isin(inst, (1, 2)), inst, 0)
        masks[i, ..., 2] = np.where(inst == 3, 1, 0)
        masks[i, ..., 5] = inst == 0
        if i == overlap_at:
            masks[i, 16, 20, 4] = 7
    np.save(fold / "images.npy", images)
    np.save(fold / "masks.npy", masks)
    np.save(fold / "types.npy", np.array(["Colon"] * n))
    return fold


def test_reads_fold_with_ids_repeated_across_channels(tmp_path: Path) -> None:
    samples = read_pannuke(_fold(tmp_path))
    assert [s.name for s in samples] == ["fold1_00000", "fold1_00001", "fold1_00002"]
    s = samples[0]
    assert s.class_names == PANNUKE_CLASSES and s.image.dtype == np.uint8
    assert s.meta["tissue"] == "Colon" and s.mpp == 0.25
    assert int(s.inst_map.max()) == 3  # the two "id 1" nuclei stay distinct
    assert s.type_map[16, 20] == 1 and s.type_map[40, 44] == 1 and s.type_map[20, 48] == 3
    assert len({s.group for s in samples}) == 3


def test_overlapping_channels_reported(tmp_path: Path) -> None:
    fold = _fold(tmp_path, overlap_at=1)
    with pytest.raises(SampleError, match=r"\[1\].*more than one class"):
        read_pannuke(fold)
    assert len(read_pannuke(fold, on_error="skip")) == 2


def test_pannuke_labels_empty() -> None:
    inst, typ = pannuke_labels(np.zeros((8, 8, 6)))
    assert inst.max() == 0 and typ.max() == 0
