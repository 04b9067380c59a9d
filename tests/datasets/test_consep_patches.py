from pathlib import Path

import numpy as np
import pytest
import scipy.io as sio
from PIL import Image

from tests.helpers.data_fixtures import disc_labels
from wsi_pipeline.datasets.consep_patches import CONSEP_CLASSES, read_consep_patches
from wsi_pipeline.datasets.validate import SampleError


def test_real_consep_patches(shared_data: Path) -> None:
    samples = read_consep_patches(shared_data / "consep_patches" / "train")
    assert len(samples) == 432
    assert sum(int(s.inst_map.max()) for s in samples) == 18216
    s = next(x for x in samples if x.name == "train_10_003")
    assert s.group == "train_10" and s.mpp == 0.25 and s.class_names == CONSEP_CLASSES
    assert s.image.shape == (256, 256, 3) and s.image.dtype == np.uint8
    assert s.inst_map.dtype == np.int32
    ids = np.unique(s.inst_map)
    assert (ids == np.arange(ids.size)).all()  # contiguous 0..N
    assert ((s.inst_map > 0) == (s.type_map > 0)).all()
    assert len({x.group for x in samples}) == 27


def _write_patch(root: Path, name: str, image, inst, typ, inst_type=None) -> None:
    for sub in ("images", "inst", "seg_mask", "type_mat"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    Image.fromarray(image).save(root / "images" / f"{name}.jpg")
    np.save(root / "inst" / f"{name}.npy", inst)
    Image.fromarray(typ.astype(np.uint8)).save(root / "seg_mask" / f"{name}.png")
    if inst_type is None:
        ids = np.unique(inst)[1:]
        inst_type = np.array([typ[inst == i][0] for i in ids])
    sio.savemat(root / "type_mat" / f"{name}.mat", {"inst_type": np.asarray(inst_type).reshape(-1, 1)})


def _bad_root(tmp_path: Path, kind: str) -> Path:
    image, inst, typ = disc_labels()
    _write_patch(tmp_path, "train_1_000", image, inst, typ)
    if kind == "size":
        _write_patch(tmp_path, "train_1_001", image[:60], inst, typ)
    elif kind == "two_types":
        bad = typ.copy()
        bad[16, 20:] = np.where(inst[16, 20:] == 3, 4, bad[16, 20:])
        _write_patch(tmp_path, "train_1_001", image, inst, bad, inst_type=[1, 2, 3])
    elif kind == "untyped_pixels":
        bad = typ.copy()
        bad[16, 20] = 0
        _write_patch(tmp_path, "train_1_001", image, inst, bad, inst_type=[1, 2, 3])
    elif kind == "mat_disagrees":
        _write_patch(tmp_path, "train_1_001", image, inst, typ, inst_type=[2, 2, 3])
    return tmp_path


@pytest.mark.parametrize("kind", ["size", "two_types", "untyped_pixels", "mat_disagrees"])
def test_bad_sample_named_fail_or_skip(tmp_path: Path, kind: str) -> None:
    root = _bad_root(tmp_path, kind)
    with pytest.raises(SampleError, match="train_1_001"):
        read_consep_patches(root)
    kept = read_consep_patches(root, on_error="skip")
    assert [s.name for s in kept] == ["train_1_000"]


def test_relabels_to_contiguous(tmp_path: Path) -> None:
    image, inst, typ = disc_labels(ids=(5, 90, 17))
    _write_patch(tmp_path, "train_2_000", image, inst, typ)
    (s,) = read_consep_patches(tmp_path)
    assert sorted(np.unique(s.inst_map)) == [0, 1, 2, 3]
    # ascending original id order is kept: 5 -> 1, 17 -> 2, 90 -> 3
    assert s.inst_map[16, 20] == 1 and s.inst_map[20, 48] == 2 and s.inst_map[40, 44] == 3
