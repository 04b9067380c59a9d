"""Done-markers: what a rerun skips, what it redoes, and that half-done work never counts."""

from __future__ import annotations

from wsi_pipeline.cohort.stages import (
    STAGE_OUTPUTS,
    STAGES,
    SlideStages,
    StageMarker,
    atomic_write_json,
    stage_hashes,
)

CFG = {"infer": {"tile": 256}, "postproc": {"t": 0.5}, "export": {"geojson": False}}
FP = {"size": 10, "mtime": 1}


def _write_outputs(stages: SlideStages, stage: str) -> None:
    """Stand-ins for what `stage` writes, in their formats (a rerun checks them: maps.zarr an
    empty zarr group, nuclei.parquet a one-row Parquet file, the rest a byte)."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    import zarr

    stages.slide_dir.mkdir(parents=True, exist_ok=True)
    for name in STAGE_OUTPUTS[stage]:
        if name == "maps.zarr":
            zarr.open_group(str(stages.slide_dir / name), mode="w", zarr_format=3)
        elif name == "nuclei.parquet":
            pq.write_table(pa.table({"x": [1]}), stages.slide_dir / name)
        elif not name.endswith(".partial") and name != "nuclei.geojson.gz":
            (stages.slide_dir / name).write_bytes(b"x")


def _finish_all(stages: SlideStages, hashes: dict, sha: str = "m1") -> None:
    for s in STAGES:
        stages.begin(s)
        _write_outputs(stages, s)
        stages.finish(StageMarker(stage=s, config_hash=hashes[s], model_sha256=sha, version="t", seconds=1.0))


def test_hash_chain_invalidates_downstream():
    base = stage_hashes(CFG, "m1", FP)
    changed = stage_hashes({**CFG, "postproc": {"t": 0.6}}, "m1", FP)
    assert changed["infer"] == base["infer"]
    assert changed["postproc"] != base["postproc"] and changed["export"] != base["export"]
    for other in (stage_hashes(CFG, "m2", FP), stage_hashes(CFG, "m1", {"size": 11, "mtime": 1})):
        assert all(other[s] != base[s] for s in STAGES)
    assert stage_hashes(dict(reversed(CFG.items())), "m1", FP) == base  # key order does not matter


def test_pending_from_first_changed_stage(tmp_path):
    stages = SlideStages(tmp_path / "slide")
    hashes = stage_hashes(CFG, "m1", FP)
    assert stages.pending(hashes, "m1") == list(STAGES)
    _finish_all(stages, hashes)
    assert stages.pending(hashes, "m1") == []
    assert stages.pending(hashes, "m2") == list(STAGES)  # other model: everything again
    new = stage_hashes({**CFG, "export": {"geojson": True}}, "m1", FP)
    assert stages.pending(new, "m1") == ["export"]
    new = stage_hashes({**CFG, "postproc": {"t": 0.9}}, "m1", FP)
    assert stages.pending(new, "m1") == ["postproc", "export"]


def test_begin_removes_outputs_and_later_markers(tmp_path):
    slide = tmp_path / "slide"
    stages = SlideStages(slide)
    hashes = stage_hashes(CFG, "m1", FP)
    _finish_all(stages, hashes)
    (slide / "maps.zarr.partial").mkdir(parents=True)
    (slide / "nuclei.parquet").write_bytes(b"old")
    (slide / ".nuclei.parquet.4242.0badcafe.tmp").write_bytes(b"PAR1")  # a killed attempt's write
    stages.begin("postproc")
    assert not (slide / "nuclei.parquet").exists()
    assert not list(slide.glob("*.tmp")) and (slide / "stages" / "infer.json").exists()
    assert (slide / "maps.zarr").exists()  # earlier stage's output kept
    assert stages.read("infer") is not None
    assert stages.read("postproc") is None and stages.read("export") is None
    stages.begin("infer")
    assert not (slide / "maps.zarr").exists() and not (slide / "maps.zarr.partial").exists()


def test_corrupt_or_foreign_marker_means_not_done(tmp_path):
    stages = SlideStages(tmp_path / "slide")
    hashes = stage_hashes(CFG, "m1", FP)
    _finish_all(stages, hashes)
    stages.marker_path("postproc").write_text('{"stage": "postpr')  # torn write by a non-atomic tool
    assert stages.pending(hashes, "m1") == ["postproc", "export"]
    atomic_write_json(stages.marker_path("postproc"), {"unexpected": 1})
    assert stages.read("postproc") is None


def test_atomic_write_leaves_no_temp_files(tmp_path):
    target = tmp_path / "a" / "m.json"
    atomic_write_json(target, {"x": 1})
    atomic_write_json(target, {"x": 2})
    assert [p.name for p in target.parent.iterdir()] == ["m.json"]
    assert '"x": 2' in target.read_text()
