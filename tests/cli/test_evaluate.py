"""`wsi-pipeline evaluate` on HoVer-Net .mat files and the CoNSeP patch layout; .mat round trip."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import scipy.io as sio
from click.testing import CliRunner

from wsi_pipeline.cli import main
from wsi_pipeline.evaluation.matio import read_consep_patch, read_instance_mat, write_instance_mat


def _maps():
    inst = np.zeros((32, 32), np.int32)
    inst[2:10, 2:10] = 4
    inst[15:25, 15:28] = 9
    return inst


def test_write_read_roundtrip(tmp_path):
    inst = _maps()
    path = write_instance_mat(
        tmp_path / "a.mat", inst, [2, 3], inst_type_prob=[[0, 0.9, 0.1], [0, 0.2, 0.8]]
    )
    raw = sio.loadmat(path)
    assert raw["inst_type"].shape == (2, 1) and raw["inst_centroid"].shape == (2, 2)
    assert raw["inst_uid"].ravel().tolist() == [4, 9]
    assert raw["type_map"][5, 5] == 2 and raw["type_map"][20, 20] == 3
    assert np.allclose(raw["inst_centroid"][0], [5.5, 5.5])  # (x, y)
    back = read_instance_mat(path)
    assert np.array_equal(back.inst_map, inst) and back.types.tolist() == [2, 3]
    assert not list(tmp_path.glob(".*tmp"))


def test_evaluate_mat_vs_mat(tmp_path):
    inst = _maps()
    (tmp_path / "true").mkdir()
    write_instance_mat(tmp_path / "true" / "x.mat", inst, [1, 2])
    pred = inst.copy()
    pred[pred == 9] = 0  # misses one nucleus
    write_instance_mat(tmp_path / "pred" / "x.mat", pred, [1])
    out = tmp_path / "res" / "ev"
    r = CliRunner().invoke(
        main,
        [
            "evaluate",
            "--pred",
            str(tmp_path / "pred"),
            "--true",
            str(tmp_path / "true"),
            "--types",
            "a,b",
            "--out",
            str(out),
        ],
    )
    assert r.exit_code == 0, r.output
    summary = json.loads((tmp_path / "res" / "ev.json").read_text())["summary"]
    assert summary["dq"] == 2 / 3 and summary["pq_1"] == 1.0 and summary["pq_2"] == 0.0
    assert summary["f_d"] == 2 / 3
    assert list(pd.read_csv(tmp_path / "res" / "ev.csv")["name"]) == ["x"]
    assert "PQ" in r.output and "b" in r.output


def test_evaluate_against_consep_layout(tmp_path, shared_data):
    data = shared_data / "consep_patches" / "train"
    stem = "train_1_005"
    truth = read_consep_patch(data / "inst" / f"{stem}.npy", data / "type_mat" / f"{stem}.mat")
    write_instance_mat(tmp_path / f"{stem}.mat", truth.inst_map, truth.types)  # perfect prediction
    r = CliRunner().invoke(main, ["evaluate", "--pred", str(tmp_path), "--true", str(data)])
    assert r.exit_code == 0, r.output
    summary = json.loads((tmp_path / "evaluation.json").read_text())["summary"]
    assert summary["n_images"] == 1 and summary["pq"] == 1.0 and summary["f_d"] == 1.0


def test_evaluate_reports_no_match(tmp_path):
    (tmp_path / "true").mkdir()
    (tmp_path / "pred").mkdir()
    write_instance_mat(tmp_path / "true" / "x.mat", _maps(), [1, 2])
    r = CliRunner().invoke(
        main, ["evaluate", "--pred", str(tmp_path / "pred"), "--true", str(tmp_path / "true")]
    )
    assert r.exit_code != 0 and "no prediction" in r.output
