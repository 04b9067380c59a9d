"""Second fault matrix (issue 25): faults as cohorts meet them on shared storage, under SLURM,
in containers, with files from Windows shares and spreadsheets, and with bit rot. Each case
reproduces the issue's description on the tiny cohort of test_fault_matrix (512² crops of the
CMU slide, a width-8 network) and asserts what a user would notice: a damaged output named and
redone, never a finished-looking wrong table; a lock that holds; a slide id that stays.
The cases are listed in test_fault_matrix.FAULT_MATRIX.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pandas as pd
import pytest

from tests.helpers.cohort_fixtures import assert_same_tables, cmu_cohort, result_tables
from wsi_pipeline.cohort import integrity
from wsi_pipeline.cohort.config import load_run_config
from wsi_pipeline.cohort.runner import CohortRunner


@pytest.fixture(scope="module")
def cohort(shared_data, tmp_path_factory):
    """(root, checkpoint): root/slides holds cmu_a.tif and cmu_b.tif."""
    return cmu_cohort(shared_data, tmp_path_factory.mktemp("faults2"))


def run_here(source: Path, out: Path, ckpt: Path, *, break_locks: bool = False, **overrides):
    """One run in this process, no cluster; the report."""
    cfg = load_run_config(None, {"checkpoint": str(ckpt), "cluster": {"workers": 0}, **overrides})
    return CohortRunner(source, out, cfg, break_locks=break_locks).run()


@pytest.fixture(scope="module")
def finished(cohort):
    """A finished OUT (copied by each test that damages it) and its tables."""
    root, ckpt = cohort
    out = root / "finished"
    assert run_here(root / "slides", out, ckpt).ok
    return out, result_tables(out)


def _copy(out: Path, dest: Path) -> Path:
    shutil.copytree(out, dest, symlinks=True)
    return dest


def _chunks(out: Path, slide: str = "cmu_a", array: str = "ns") -> list[Path]:
    return sorted(p for p in (out / slide / "maps.zarr" / array / "c").rglob("*") if p.is_file())


# -- damaged outputs --------------------------------------------------------------------------
def test_a_flipped_maps_chunk_is_named_and_inference_redone_on_a_changed_setting(
        cohort, finished, tmp_path, caplog):
    """64 bytes flipped in one maps chunk, then a rerun with another post-processing setting:
    the chunk is named in one line, the slide is inferred again, and its table equals the one
    an undamaged OUT gives under that setting."""
    root, ckpt = cohort
    out = _copy(finished[0], tmp_path / "damaged")
    undamaged = _copy(finished[0], tmp_path / "undamaged")
    chunk = max(_chunks(out), key=lambda p: p.stat().st_size)
    data = bytearray(chunk.read_bytes())
    mid = len(data) // 2
    data[mid:mid + 64] = bytes(b ^ 0xFF for b in data[mid:mid + 64])
    chunk.write_bytes(bytes(data))
    changed = {"postproc": {"ns_threshold": 0.6}}
    with caplog.at_level("WARNING", logger="wsi_pipeline"):
        report = run_here(root / "slides", out, ckpt, **changed)
    assert report.ok
    lines = [r.getMessage() for r in caplog.records if "does not match its checksum" in r.getMessage()]
    where = str(chunk.relative_to(out / "cmu_a" / "maps.zarr"))
    assert len(lines) == 1 and "cmu_a" in lines[0] and where in lines[0]
    assert integrity.deep_problem(out / "cmu_a" / "maps.zarr", None) is None  # remade whole
    assert run_here(root / "slides", undamaged, ckpt, **changed).ok
    assert_same_tables(result_tables(undamaged), result_tables(out))


def test_a_truncated_maps_chunk_never_reaches_the_decoder(cohort, finished, tmp_path):
    """An interrupted copy of OUT (one chunk cut short, another gone), rerun in this process
    with a changed setting: named and redone; the other slide runs; no lock left behind."""
    root, ckpt = cohort
    out = _copy(finished[0], tmp_path / "out")
    chunks = _chunks(out)
    chunks[0].write_bytes(chunks[0].read_bytes()[:17])
    report = run_here(root / "slides", out, ckpt, postproc={"ns_threshold": 0.6})
    assert report.ok
    rows = pd.read_parquet(out / "manifest.parquet").set_index("slide_id")
    assert set(rows["status"]) == {"done"}
    assert not list(out.glob("*/slide.lock"))
    # A chunk file gone (the copy stopped before it): the chunk count recorded says so.
    out2 = _copy(finished[0], tmp_path / "out2")
    _chunks(out2, "cmu_b", "hv")[-1].unlink()
    problem = integrity.quick_problem(out2 / "cmu_b" / "maps.zarr",
                                      _marker_integrity(out2 / "cmu_b", "infer", "maps.zarr"))
    assert problem is not None and "array hv has" in problem


def _marker_integrity(slide: Path, stage: str, name: str) -> dict:
    import json

    return json.loads((slide / "stages" / f"{stage}.json").read_text())["integrity"][name]


def test_a_truncated_nuclei_table_is_named_and_rebuilt_from_the_maps(cohort, finished, tmp_path, caplog):
    """A truncated nuclei.parquet in a finished OUT: a plain rerun names it, redoes
    post-processing from the intact maps (not inference), and the tables equal the clean run."""
    root, ckpt = cohort
    out = _copy(finished[0], tmp_path / "out")
    table = out / "cmu_b" / "nuclei.parquet"
    table.write_bytes(table.read_bytes()[: table.stat().st_size // 2])
    infer_marker = (out / "cmu_b" / "stages" / "infer.json").read_bytes()
    with caplog.at_level("WARNING", logger="wsi_pipeline"):
        report = run_here(root / "slides", out, ckpt)
    assert report.ok, report.failure_lines()
    assert any(str(table) in r.getMessage() and "postproc is redone" in r.getMessage()
               for r in caplog.records)
    assert (out / "cmu_b" / "stages" / "infer.json").read_bytes() == infer_marker  # maps kept
    assert_same_tables(finished[1], result_tables(out))


def test_maps_without_checksums_are_decoded_in_a_child_process(tmp_path):
    """maps.zarr of a version before chunk checksums: a damaged chunk is found by decoding in a
    child process, so that a decompressor crash is a finding and not the end of the run."""
    import numpy as np
    import zarr
    from zarr.codecs import BloscCodec

    store = tmp_path / "maps.zarr"
    group = zarr.open_group(str(store), mode="w", zarr_format=3)
    array = group.create_array("ns", shape=(64, 64), chunks=(32, 32), dtype="float16", fill_value=0,
                               compressors=[BloscCodec(cname="zstd", clevel=3, shuffle="shuffle")])
    array[:] = np.random.default_rng(0).random((64, 64))
    assert integrity.deep_problem(store, None) is None
    chunk = store / "ns" / "c" / "1" / "1"
    chunk.write_bytes(chunk.read_bytes()[:10])
    problem = integrity.deep_problem(store, None)
    assert problem is not None and str(store) in problem and "damaged" in problem


def test_a_parquet_file_with_a_damaged_footer_is_named(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = tmp_path / "nuclei.parquet"
    pq.write_table(pa.table({"x": list(range(1000))}), path)
    rec = integrity.record(path)
    assert integrity.quick_problem(path, rec) is None
    data = bytearray(path.read_bytes())
    data[-12:-8] = b"\xff\xff\xff\x7f"  # the footer's length, garbled: same size, footer unreadable
    path.write_bytes(bytes(data))
    assert "Parquet footer" in (integrity.quick_problem(path, None) or "")
    data[-12:-8] = path.read_bytes()[-12:-8]
    os.truncate(path, 100)
    assert "truncated" in (integrity.quick_problem(path, rec) or "")
