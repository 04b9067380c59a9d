"""Cohort summary: slide × type counts, densities and means, from finished slides only."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from wsi_pipeline.cli import main
from wsi_pipeline.cohort.discover import SlideEntry
from wsi_pipeline.cohort.manifest import write_manifest
from wsi_pipeline.cohort.summarize import summarize_cohort
from wsi_pipeline.contract import MapsAttrs

NAMES = ["background", "inflammatory", "epithelial", "stromal"]
COLORS = ["#000000", "#ff0000", "#00ff00", "#0000ff"]
ATTRS = MapsAttrs(mpp=0.5, slide_mpp=0.25, scale=2.0, level0_size=(4000, 3000),
                  class_names=tuple(NAMES), class_colors=tuple(COLORS))


def _slide(out, slide_id, types, areas, probs, *, maps=True, table_meta=False):
    """A finished slide folder: nuclei.parquet, with maps.zarr's attributes in maps.zarr
    (`maps`) and/or in the table's metadata as post-processing copies them (`table_meta`)."""
    d = out / slide_id
    d.mkdir(parents=True)
    if maps:
        (d / "maps.zarr").mkdir()
        (d / "maps.zarr" / "zarr.json").write_text(json.dumps(
            {"zarr_format": 3, "node_type": "group", "attributes": ATTRS.to_attrs()}))
    table = pa.table({"type_id": pa.array(types, pa.int64()),
                      "type_name": [NAMES[t] for t in types],
                      "area_um2": pa.array(areas, pa.float64()),
                      "type_prob": pa.array(probs, pa.float64())})
    if table_meta:
        table = table.replace_schema_metadata(
            {"wsi_pipeline": json.dumps(ATTRS.table_metadata())})
    pq.write_table(table, d / "nuclei.parquet")


def _row(slide_id, status, tissue):
    return {"slide_id": slide_id, "path": f"/x/{slide_id}.svs", "status": status, "tissue_mm2": tissue}


@pytest.fixture
def out(tmp_path):
    _slide(tmp_path, "s1", [1, 1, 2, 1], [10.0, 20.0, 40.0, 30.0], [0.9, 0.7, 0.8, 0.8])
    _slide(tmp_path, "s2", [], [], [])
    _slide(tmp_path, "bad", [3], [5.0], [0.5])  # failed: must not be summarised
    write_manifest(tmp_path, [_row("s1", "done", 0.5), _row("s2", "no_tissue", 0.0),
                              _row("bad", "failed", None)])
    return tmp_path


def test_counts_density_means(out):
    res = summarize_cohort(out)
    t = res.table.set_index(["slide_id", "type_name"])
    assert set(res.table["slide_id"]) == {"s1", "s2"}
    assert len(res.table) == 2 * 3  # every class per slide, zero counts included
    infl = t.loc[("s1", "inflammatory")]
    assert infl["count"] == 3 and infl["density_per_mm2"] == pytest.approx(6.0)
    assert infl["mean_area_um2"] == pytest.approx(20.0) and infl["mean_type_prob"] == pytest.approx(0.8)
    assert infl["fraction"] == pytest.approx(0.75)
    # type confidence per slide and type (issue 24): share typed below the QC threshold (0.5)
    assert infl["low_type_fraction"] == 0.0
    assert t.loc[("s1", "epithelial"), "mean_type_prob"] == pytest.approx(0.8)
    assert np.isnan(t.loc[("s1", "epithelial"), "mean_background_share"])  # the fixture has none
    assert t.loc[("s1", "stromal"), "count"] == 0 and np.isnan(t.loc[("s1", "stromal"), "mean_area_um2"])
    assert (t.loc["s2", "count"] == 0).all() and t.loc["s2", "density_per_mm2"].isna().all()
    back = pd.read_parquet(out / "cohort_summary.parquet")
    pd.testing.assert_frame_equal(back, res.table)
    assert res.plot_path.stat().st_size > 1000


def test_class_list_from_the_table_when_the_maps_are_gone(tmp_path):
    _slide(tmp_path, "s1", [1, 2], [10.0, 20.0], [0.9, 0.7], maps=False, table_meta=True)
    write_manifest(tmp_path, [_row("s1", "done", 0.5)])
    res = summarize_cohort(tmp_path, report=False)
    assert res.table["type_name"].tolist() == NAMES[1:]  # stromal too, with no nuclei


def test_without_readable_attributes_the_types_found_are_the_classes(tmp_path):
    """No table metadata and no maps (or maps whose attributes do not read): the slide's
    classes are the type names its table holds, as for tables older than the metadata."""
    _slide(tmp_path, "s1", [1, 2], [10.0, 20.0], [0.9, 0.7], maps=False)
    _slide(tmp_path, "s2", [3], [5.0], [0.5])
    (tmp_path / "s2" / "maps.zarr" / "zarr.json").write_text(json.dumps(
        {"zarr_format": 3, "node_type": "group", "attributes": {"class_names": NAMES}}))
    write_manifest(tmp_path, [_row("s1", "done", 0.5), _row("s2", "done", 0.5)])
    res = summarize_cohort(tmp_path, report=False)
    by_slide = res.table.groupby("slide_id")["type_name"].apply(list).to_dict()
    assert by_slide == {"s1": ["epithelial", "inflammatory"], "s2": ["stromal"]}
    assert res.plot_path.is_file()  # drawn in matplotlib's default colours


def test_cli(out):
    res = CliRunner().invoke(main, ["summarize", str(out)])
    assert res.exit_code == 0, res.output
    assert "2 slides, 6 rows" in res.output and (out / "cohort_composition.png").is_file()


def test_cli_without_manifest(tmp_path):
    res = CliRunner().invoke(main, ["summarize", str(tmp_path)])
    assert res.exit_code != 0 and "no manifest" in res.output


def test_manifest_from_entries(tmp_path):
    """Rows for slides never started are 'pending' with nothing filled in."""
    from wsi_pipeline.cohort.manifest import read_manifest, slide_row

    entry = SlideEntry(path=tmp_path / "a.svs", slide_id="a")
    row = slide_row(tmp_path, entry, {"infer": "x", "postproc": "y", "export": "z"}, "sha", "cfg")
    write_manifest(tmp_path, [row])
    m = read_manifest(tmp_path)
    assert m.loc[0, "status"] == "pending" and m.loc[0, "config_hash"] == "cfg"
    assert pd.isna(m.loc[0, "n_nuclei"]) and pd.isna(m.loc[0, "size_bytes"])
