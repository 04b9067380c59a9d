"""The Python API (`wsi_pipeline.api`), used as a notebook user would: each public function,
and that it gives what the command line gives."""

from __future__ import annotations

import doctest

import geopandas as gpd
import numpy as np
import pandas as pd
import pytest
import scipy.io as sio
from PIL import Image

import wsi_pipeline
from tests.helpers.cohort_fixtures import CMU_CROPS, cmu_crop, make_cohort, run_cli, tiny_checkpoint
from wsi_pipeline import api
from wsi_pipeline.cohort.config import RunConfig


@pytest.fixture(scope="module")
def model():
    return wsi_pipeline.load_model(device="cpu")


@pytest.fixture(scope="module")
def consep_crop(shared_data, tmp_path_factory):
    """A 320² crop of a real CoNSeP training image (at the model's 0.25 µm/px), as a PNG folder."""
    image = np.asarray(Image.open(shared_data / "consep_patches/train/images/train_3_000.jpg"))
    folder = tmp_path_factory.mktemp("images")
    Image.fromarray(image[:320, :320]).save(folder / "a.png")
    return folder


def test_the_api_is_declared_and_documented():
    public = set(wsi_pipeline.__all__) - {"__version__"}
    assert public == set(api.__all__)
    for name in public:
        doc = getattr(wsi_pipeline, name).__doc__ or ""
        assert doc.strip(), name
    for fn in (api.load_model, api.process_slide, api.run_cohort, api.Model.segment):
        assert "Parameters" in fn.__doc__ and "Returns" in fn.__doc__, fn.__name__
    with pytest.raises(AttributeError):
        wsi_pipeline.no_such_name  # noqa: B018


def test_docstring_examples_run():
    """The Examples sections run as doctests (CI runs this test)."""
    failed, tried = doctest.testmod(api, optionflags=doctest.ELLIPSIS)
    assert tried >= 4 and failed == 0


def test_load_model_decides_the_runtime_once(model):
    assert model.runtime.device.type == "cpu" and model.class_names[0] == "background"
    assert model.mpp == 0.25 and "sha256" in repr(model)
    assert model.config.infer.batch_size == api.TILE_MODE_BATCH_SIZE  # tile mode's, as predict-tiles
    with pytest.raises(Exception, match="no-such.pt"):
        wsi_pipeline.load_model("no-such.pt", device="cpu")


def test_segment_gives_the_table_and_labels_of_predict_tiles(model, consep_crop, tmp_path):
    out = tmp_path / "out"
    res = run_cli("predict-tiles", str(consep_crop), str(out), "--device", "cpu", "--no-tta",
                  "--formats", "mat,csv", timeout=600)
    assert res.returncode == 0, res.stdout
    image = np.asarray(Image.open(consep_crop / "a.png"))
    seg = model.segment(image, maps=True)
    assert isinstance(seg.nuclei, gpd.GeoDataFrame) and len(seg.nuclei) > 20
    np.testing.assert_array_equal(seg.labels, sio.loadmat(out / "a.mat")["inst_map"])
    cli_table = pd.read_csv(out / "a.csv")
    mine = pd.DataFrame(seg.nuclei.drop(columns="geometry"))
    assert list(cli_table.columns) == list(mine.columns)
    pd.testing.assert_frame_equal(cli_table, mine, check_dtype=False, rtol=1e-6)
    assert seg.maps is not None and seg.maps["ns"].shape == image.shape[:2]
    # the outlines: valid polygons in the image's pixels
    assert seg.nuclei.geometry.is_valid.all()
    assert seg.nuclei.total_bounds[2] <= image.shape[1] and seg.nuclei.total_bounds[3] <= image.shape[0]


def test_segment_refuses_what_is_not_an_rgb_image(model):
    with pytest.raises(ValueError, match="scan.tif: expected a uint8 .H, W, 3. RGB image"):
        model.segment(np.zeros((64, 64), np.float32), name="scan.tif")


@pytest.fixture(scope="module")
def tiny(shared_data, tmp_path_factory):
    """A network refitted to call dark blobs nuclei at 1 µm/px: a slide runs in seconds."""
    return tiny_checkpoint(tmp_path_factory.mktemp("ckpt") / "blobs.pt",
                           fit_rgb=cmu_crop(shared_data, *CMU_CROPS["cmu_a"]), mpp=1.0)


def test_process_slide_writes_the_nuclei_parquet_of_wsi_pipeline_run(shared_data, tiny, tmp_path):
    slides = make_cohort(shared_data, tmp_path / "slides")
    slide = sorted(slides.iterdir())[0]
    res = run_cli("run", str(slide), "-o", str(tmp_path / "cli"), "--checkpoint", str(tiny),
                  "--workers", "0", timeout=600)
    assert res.returncode == 0, res.stdout
    config = RunConfig.model_validate({"checkpoint": str(tiny), "cluster": {"workers": 0}})
    folder = wsi_pipeline.process_slide(slide, tmp_path / "api", config=config)
    assert folder == tmp_path / "api" / slide.stem
    want = gpd.read_parquet(tmp_path / "cli" / slide.stem / "nuclei.parquet")
    got = gpd.read_parquet(folder / "nuclei.parquet")
    assert len(got) > 10 and got.equals(want)


def test_run_cohort_on_a_folder_a_list_and_an_existing_client(shared_data, tiny, tmp_path):
    distributed = pytest.importorskip("distributed")
    slides = make_cohort(shared_data, tmp_path / "slides")
    config = RunConfig.model_validate({"checkpoint": str(tiny), "cluster": {"workers": 0}})
    report = wsi_pipeline.run_cohort(slides, tmp_path / "folder", config=config)
    assert report.ok and sorted(r["status"] for r in report.rows) == ["done", "done"]
    again = wsi_pipeline.run_cohort(sorted(slides.iterdir()), tmp_path / "folder", config=config)
    assert again.ran_stages == 0  # the same slides, finished: nothing redone
    with distributed.LocalCluster(n_workers=1, threads_per_worker=2, processes=False,
                                  resources={config.cluster.infer_resource: 1},
                                  dashboard_address=None) as cluster, \
            distributed.Client(cluster) as client:
        report = wsi_pipeline.run_cohort(slides, tmp_path / "client", config=config, client=client)
        assert client.status == "running"  # left open for its owner
    assert report.ok and len(report.rows) == 2
    for row in report.rows:
        a = pd.read_parquet(tmp_path / "folder" / row["slide_id"] / "nuclei.parquet")
        b = pd.read_parquet(tmp_path / "client" / row["slide_id"] / "nuclei.parquet")
        assert a.equals(b)


def test_a_failed_slide_is_an_error_naming_it(tiny, tmp_path):
    bad = tmp_path / "slides" / "broken.svs"
    bad.parent.mkdir()
    bad.write_bytes(b"not a slide")
    config = RunConfig.model_validate({"checkpoint": str(tiny), "cluster": {"workers": 0}})
    with pytest.raises(api.ProcessingError, match="broken"):
        wsi_pipeline.run_cohort(bad.parent, tmp_path / "out", config=config)
