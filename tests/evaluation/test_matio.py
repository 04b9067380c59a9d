"""Instance-file readers reject files that contradict their own map, naming the file."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.io as sio
from click.testing import CliRunner

from wsi_pipeline.cli import main
from wsi_pipeline.evaluation.matio import (
    MatFileError,
    read_consep_patch,
    read_instance_mat,
    write_instance_mat,
)


def _inst():
    inst = np.zeros((16, 16), np.int32)
    inst[1:5, 1:5] = 1
    inst[8:12, 8:14] = 2
    return inst


def test_inst_type_length_must_match(tmp_path):
    path = tmp_path / "a.mat"
    sio.savemat(path, {"inst_map": _inst(), "inst_type": np.array([[1], [2], [3]])})
    with pytest.raises(MatFileError, match=r"a\.mat: inst_type has 3 entries for 2 instances"):
        read_instance_mat(path)


def test_wrong_length_centroids_are_an_error_not_dropped(tmp_path):
    path = tmp_path / "c.mat"
    sio.savemat(path, {"inst_map": _inst(), "inst_centroid": np.zeros((3, 2))})
    with pytest.raises(MatFileError, match=r"c\.mat: inst_centroid"):
        read_instance_mat(path)


def test_corrupt_and_incomplete_files_name_the_file(tmp_path):
    (tmp_path / "bad.mat").write_bytes(b"this is not a mat file at all" * 10)
    with pytest.raises(MatFileError, match=r"bad\.mat"):
        read_instance_mat(tmp_path / "bad.mat")
    sio.savemat(tmp_path / "nomap.mat", {"inst_type": np.array([[1]])})
    with pytest.raises(MatFileError, match=r"nomap\.mat: no 'inst_map'"):
        read_instance_mat(tmp_path / "nomap.mat")


def test_consep_type_mat_is_validated(tmp_path):
    np.save(tmp_path / "x.npy", _inst())
    sio.savemat(tmp_path / "x.mat", {"inst_type": np.array([[1]]), "inst_centroid": np.zeros((1, 2))})
    with pytest.raises(MatFileError, match=r"x\.mat: inst_type has 1 entries for 2 instances"):
        read_consep_patch(tmp_path / "x.npy", tmp_path / "x.mat")


def test_valid_files_still_read(tmp_path):
    write_instance_mat(tmp_path / "ok.mat", _inst(), [1, 2])
    back = read_instance_mat(tmp_path / "ok.mat")
    assert back.types.tolist() == [1, 2] and back.centroids.shape == (2, 2)
    sio.savemat(tmp_path / "empty.mat", {"inst_map": np.zeros((4, 4), np.int32),
                                         "inst_type": np.zeros((0, 1)), "inst_centroid": np.zeros((0, 2))})
    empty = read_instance_mat(tmp_path / "empty.mat")
    assert empty.types.size == 0 and empty.centroids is None


def test_evaluate_turns_a_bad_file_into_a_clear_error(tmp_path):
    (tmp_path / "true").mkdir()
    write_instance_mat(tmp_path / "true" / "x.mat", _inst(), [1, 2])
    (tmp_path / "pred").mkdir()
    sio.savemat(tmp_path / "pred" / "x.mat", {"inst_map": _inst(), "inst_type": np.array([[1]])})
    r = CliRunner().invoke(main, ["evaluate", "--pred", str(tmp_path / "pred"),
                                  "--true", str(tmp_path / "true")])
    assert r.exit_code == 1 and "Traceback" not in r.output
    assert "x.mat: inst_type has 1 entries for 2 instances" in r.output


def test_write_empty_image_with_type_probs(tmp_path):
    """An image without nuclei (21 CoNSeP patches) still gets a valid .mat."""
    from wsi_pipeline.evaluation.matio import read_instance_mat, write_instance_mat

    path = write_instance_mat(tmp_path / "empty.mat", np.zeros((8, 8), np.int32), np.zeros(0),
                              inst_type_prob=np.zeros((0, 5), np.float32))
    assert read_instance_mat(path).ids().size == 0
