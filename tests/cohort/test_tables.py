"""Run tables for other tools: manifest integer columns, the cohort-wide nucleus dataset, and
the DuckDB queries of workflows/README.md run as written."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest

from tests.helpers.maps_synth import disc_instances, oracle_maps, write_maps_zarr
from wsi_pipeline.cohort.dataset import nuclei_dataset
from wsi_pipeline.cohort.discover import SlideEntry
from wsi_pipeline.cohort.manifest import read_manifest, slide_row, write_manifest
from wsi_pipeline.postproc import PostprocConfig
from wsi_pipeline.postproc.slide import postprocess_slide

README = Path(__file__).resolve().parents[2] / "workflows" / "README.md"


def _slide(out: Path, slide_id: str, centres) -> int:
    d = out / slide_id
    d.mkdir(parents=True)
    inst = disc_instances((256, 256), centres, radius=10)
    types = np.where(inst > 0, 1 + inst % 3, 0).astype(np.uint8)
    write_maps_zarr(d / "maps.zarr", oracle_maps(inst, types), 128)
    return postprocess_slide(d / "maps.zarr", d / "nuclei.parquet", PostprocConfig(),
                             progress=False).n_nuclei


def _row(slide_id, status, **kw):
    return {"slide_id": slide_id, "path": f"/x/{slide_id}.svs", "status": status, **kw}


@pytest.fixture(scope="module")
def out(tmp_path_factory):
    out = tmp_path_factory.mktemp("out")
    n1 = _slide(out, "s1", [(40, 40), (40, 120), (120, 40), (200, 200)])
    n2 = _slide(out, "s2", [(60, 60), (180, 90)])
    _slide(out, "late", [(100, 100)])  # failed in export: its table is not a result
    write_manifest(out, [
        _row("s1", "done", n_tiles=4, n_nuclei=n1, size_bytes=10, tissue_mm2=0.004),
        _row("s2", "done", n_tiles=2, n_nuclei=n2, size_bytes=20, tissue_mm2=0.002),
        _row("late", "failed", n_tiles=1, size_bytes=5, failed_stage="export"),
        _row("broken", "failed", failed_stage="infer"),
    ])
    return out, {"s1": n1, "s2": n2}


def test_manifest_integer_columns_stay_integers_when_a_slide_failed(out, tmp_path):
    out, _ = out
    for m in (pd.read_parquet(out / "manifest.parquet"), read_manifest(out)):
        for col in ("n_tiles", "n_nuclei", "size_bytes"):
            assert m[col].dtype == pd.Int64Dtype(), (col, m[col].dtype)
        m = m.set_index("slide_id")
        assert m.loc["s1", "n_tiles"] == 4 and pd.isna(m.loc["broken", "n_tiles"])
    # also a manifest of only pending slides, and one written before the pandas metadata
    row = slide_row(tmp_path, SlideEntry(path=tmp_path / "a.svs", slide_id="a"),
                    {"infer": "x", "postproc": "y", "export": "z"}, "sha", "cfg")
    write_manifest(tmp_path, [row])
    assert pd.read_parquet(tmp_path / "manifest.parquet")["n_nuclei"].dtype == pd.Int64Dtype()
    pq.write_table(pq.read_table(out / "manifest.parquet").replace_schema_metadata(None),
                   tmp_path / "manifest.parquet")
    assert read_manifest(tmp_path)["n_tiles"].dtype == pd.Int64Dtype()


def test_nuclei_dataset_spans_finished_slides_with_slide_id(out):
    out, counts = out
    nuclei = nuclei_dataset(out)
    table = nuclei.to_table(columns=["slide_id", "nucleus_id", "bbox"])
    assert table.group_by("slide_id").aggregate([("nucleus_id", "count")]).to_pydict() == {
        "slide_id": ["s1", "s2"], "nucleus_id_count": [counts["s1"], counts["s2"]]}
    one = nuclei.to_table(filter=(ds.field("slide_id") == "s2") & (ds.field("bbox", "ymax") < 64))
    assert one.num_rows == 1 and one.column("slide_id").to_pylist() == ["s2"]
    assert nuclei_dataset(out, statuses=("done", "failed")).count_rows() == sum(counts.values()) + 1
    with pytest.raises(FileNotFoundError, match="no manifest"):
        nuclei_dataset(out / "s1")


def _readme_sql() -> list[str]:
    text = README.read_text(encoding="utf-8")
    section = text[text.index("### A cohort-wide view"):]
    return re.findall(r"```sql\n(.*?)```", section, flags=re.DOTALL)


def test_duckdb_queries_of_the_workflows_readme(out, tmp_path, monkeypatch):
    duckdb = pytest.importorskip("duckdb")
    out, counts = out
    (tmp_path / "OUT").symlink_to(out, target_is_directory=True)
    monkeypatch.chdir(tmp_path)  # the README's queries name OUT relative to the working folder
    view, queries = _readme_sql()
    con = duckdb.connect()
    con.execute(view)
    per_slide = dict(con.execute("SELECT slide_id, count(*) FROM nuclei GROUP BY ALL").fetchall())
    assert per_slide == counts  # the failed slide's table is left out
    density, window = [q.strip() for q in queries.split(";") if q.strip()]

    nuclei = nuclei_dataset(out).to_table(columns=["slide_id", "type_name"]).to_pandas()
    tissue = read_manifest(out).set_index("slide_id")["tissue_mm2"]
    infl = nuclei[nuclei.type_name == "inflammatory"].groupby("slide_id").size()
    assert dict(con.execute(density).fetchall()) == pytest.approx((infl / tissue[infl.index]).to_dict())

    assert con.execute(window.replace("'slide1'", "'s1'")).fetchall() == []  # beyond a 128² slide
    corner = window.replace("'slide1'", "'s1'").replace("6000", "50").replace("5000", "0")
    rows = con.execute(corner).fetchall()
    assert [(x, y) for _, _, x, y in rows] == [(20.0, 20.0)]  # of s1's 4, the one at the corner
