"""Real slides through `wsi-pipeline run`, end to end.

TCGA (no pixel size in its metadata) is refused before any work, with the file named, unless
--mpp is given; CMU run with 512- and 2048-px chunks must report the same nuclei, so chunk seams
leave no trace.
A tiny network refitted to call dark blobs nuclei, working at 1 µm/px, keeps each run to seconds.
"""

from __future__ import annotations

import geopandas as gpd
import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
import shapely

from tests.helpers.cohort_fixtures import CMU, CMU_CROPS, cmu_crop, run_cli, tiny_checkpoint

TCGA = "slides/tcga-cr-7395-01a-01-ts1.svs"


@pytest.fixture(scope="module")
def checkpoint(shared_data, tmp_path_factory):
    x, y = CMU_CROPS["cmu_a"]
    return tiny_checkpoint(tmp_path_factory.mktemp("ckpt") / "blobs_1um.pt",
                           fit_rgb=cmu_crop(shared_data, x, y), mpp=1.0)


def _run(slide, out, checkpoint, *extra: str):
    return run_cli("run", str(slide), "-o", str(out), "--checkpoint", str(checkpoint),
                   "--workers", "0", *extra)


def test_tcga_without_mpp_fails_naming_the_file_and_runs_with_it(shared_data, checkpoint, tmp_path):
    slide = shared_data / TCGA
    res = _run(slide, tmp_path / "no_mpp", checkpoint)
    assert res.returncode != 0, res.stdout
    assert f"{slide.name}: no pixel size (mpp)" in res.stdout and "nothing was run" in res.stdout
    assert "--mpp" in res.stdout and "0.25 µm/px for 40×" in res.stdout
    assert not (tmp_path / "no_mpp" / "manifest.parquet").exists()  # refused by the preflight

    res = _run(slide, tmp_path / "mpp", checkpoint, "--mpp", "0.5")
    assert res.returncode == 0, res.stdout
    row = pd.read_parquet(tmp_path / "mpp" / "manifest.parquet").iloc[0]
    assert row["status"] == "done" and row["n_nuclei"] > 50
    slide_dir = tmp_path / "mpp" / slide.stem
    table = pq.read_table(slide_dir / "nuclei.parquet")
    assert table.num_rows == row["n_nuclei"]
    w0, h0 = 4443, 3567  # TCGA level 0
    x, y = table.column("x").to_numpy(), table.column("y").to_numpy()
    assert (x >= 0).all() and (x < w0).all() and (y >= 0).all() and (y < h0).all()
    np.testing.assert_allclose(table.column("x_um").to_numpy(), x * 0.5)
    for name in ("summary.json", "overlay.png", "tissue.png"):
        assert (slide_dir / name).is_file()


def _iou_pairs(a: np.ndarray, b: np.ndarray):
    ia, ib = shapely.STRtree(b).query(a, predicate="intersects")
    inter = shapely.area(shapely.intersection(a[ia], b[ib]))
    return ia, ib, inter / (shapely.area(a[ia]) + shapely.area(b[ib]) - inter)


def test_cmu_nuclei_do_not_depend_on_chunk_size(shared_data, checkpoint, tmp_path):
    tables = {}
    for chunk in (512, 2048):
        out = tmp_path / f"chunk{chunk}"
        res = _run(shared_data / CMU, out, checkpoint, "--chunk-size", str(chunk))
        assert res.returncode == 0, res.stdout
        path = out / "CMU-1-Small-Region" / "nuclei.parquet"
        tables[chunk] = gpd.read_parquet(path)
        assert pq.read_schema(path).metadata is not None
    small, large = tables[512], tables[2048]
    assert len(large) > 200  # the blob model finds nuclei all over the section

    # The 512 run cuts the 1108 x 1481 map into 3 x 3 chunks; nuclei sit on those seams.
    scale = 1.0 / 0.499
    origin = (scale - 1) / 2
    map_xy = (large[["x", "y"]].to_numpy() - origin) / scale
    near_seam = (np.abs(map_xy[:, None, :] - np.array([512, 1024])[None, :, None]) < 6).any((1, 2))
    assert near_seam.sum() >= 10

    ia, ib, iou = _iou_pairs(small.geometry.values, large.geometry.values)
    m = iou > 0.5
    assert len(set(ia[m])) == m.sum() == len(set(ib[m]))  # one-to-one
    assert m.sum() >= 0.995 * max(len(small), len(large))
    for table in tables.values():
        i, j, iou = _iou_pairs(table.geometry.values, table.geometry.values)
        assert not np.any((iou > 0.5) & (i != j))
        assert table["nucleus_id"].is_unique
