from pathlib import Path

import numpy as np
import pytest
import scipy.io as sio
from PIL import Image

from tests.helpers.data_fixtures import disc_labels
from wsi_pipeline.datasets.consep_patches import CONSEP_CLASSES
from wsi_pipeline.datasets.hovernet_layout import CONSEP_7_CLASSES, read_hovernet
from wsi_pipeline.datasets.validate import SampleError


def _write(root: Path, name: str, image, labels: dict) -> None:
    (root / "Images").mkdir(parents=True, exist_ok=True)
    (root / "Labels").mkdir(parents=True, exist_ok=True)
    Image.fromarray(image).save(root / "Images" / f"{name}.png")
    sio.savemat(root / "Labels" / f"{name}.mat", labels)


def test_reads_and_merges_consep_classes(tmp_path: Path) -> None:
    image, inst, typ = disc_labels(ids=(4, 9, 30), types=(4, 6, 7))
    _write(tmp_path, "train_1", image, {"inst_map": inst.astype(np.float64), "type_map": typ,
                                        "inst_type": np.array([[4], [6], [7]])})
    (s,) = read_hovernet(tmp_path)
    assert s.class_names == CONSEP_7_CLASSES and s.mpp == 0.25 and s.group == "train_1"
    assert sorted(np.unique(s.inst_map)) == [0, 1, 2, 3] and s.inst_map.dtype == np.int32
    assert sorted(np.unique(s.type_map)) == [0, 4, 6, 7]
    (m,) = read_hovernet(tmp_path, merge_consep=True)
    assert m.class_names == CONSEP_CLASSES
    assert sorted(np.unique(m.type_map)) == [0, 3, 4]
    assert m.type_map[16, 20] == 3 and m.type_map[40, 44] == 4 and m.type_map[20, 48] == 4


def test_kumar_style_untyped(tmp_path: Path) -> None:
    image, inst, _ = disc_labels()
    _write(tmp_path, "kumar_1", image, {"inst_map": inst})
    (s,) = read_hovernet(tmp_path)
    assert s.type_map is None and s.class_names == ("background", "nucleus")


def test_inconsistent_sample_named(tmp_path: Path) -> None:
    image, inst, typ = disc_labels()
    _write(tmp_path, "good", image, {"inst_map": inst, "type_map": typ})
    bad = typ.copy()
    bad[0, 0] = 2  # typed pixel outside any instance
    _write(tmp_path, "bad_one", image, {"inst_map": inst, "type_map": bad})
    with pytest.raises(SampleError, match=r"bad_one\.png.*disagrees"):
        read_hovernet(tmp_path)
    assert [s.name for s in read_hovernet(tmp_path, on_error="skip")] == ["good"]


def test_missing_inst_map_names_the_label_file(tmp_path: Path) -> None:
    image, _inst, typ = disc_labels()
    _write(tmp_path, "no_inst", image, {"type_map": typ})
    with pytest.raises(SampleError, match=r"no_inst\.mat: no 'inst_map'"):
        read_hovernet(tmp_path)
