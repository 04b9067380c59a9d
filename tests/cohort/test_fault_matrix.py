"""Fault matrix (issue 11): the ways a cohort run meets faults, each reproduced on tiny synthetic
slides (512² crops of the CMU slide, a width-8 network), asserting that nothing is lost or
written outside OUT and that what a rerun produces equals an undisturbed run's tables. Runs are
made in this process (`--workers 0`) except where another process is the point.

Cases that once lost or corrupted data, or failed unclearly (the issue's numbers):
  1  two runs on one OUT at once: slide locks, stale and foreign locks, a merged manifest
  2  slide ids from names like `...tif`: always a folder strictly inside OUT
  3  predict-tiles: never over an input, distinct inputs get distinct outputs
  4  stage markers whose outputs were deleted: redone, maps only where needed (export reads
     the nuclei table's metadata, not the maps)
  9, 10  ids whatever way the cohort path is written (`.`, absolute, symlinks)
  11 a full disk in each stage, its marker, its failure record, the manifest: injected, and on
     a real 8 MB tmpfs where one can be mounted
  12 evaluate --types naming fewer types than the data has
  13 errors that name the real problem (CLI flags, a folder in a slide list)
Cases that already passed, kept passing: kill -9 inside each stage (a `wsi-pipeline run`
process), broken and truncated slides, bad config files, malicious and damaged checkpoints;
a Dask worker killed by a slide's stage is tests/cohort/test_lost_worker.py (an external
cluster whose workers die; listed in FAULT_MATRIX below, not repeated here).
Items 5-8 (pixel sizes, preflight, QC flags) are tests/cohort/test_preflight.py and tests/export/test_qc.py.
The second matrix (issue 25: damaged outputs, locks across containers and SIGTERM, slide
identity in a growing cohort, inputs and tools that gave wrong results quietly) is
tests/cohort/test_fault_matrix_second.py; its cases are in FAULT_MATRIX below too.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path
from unittest import mock

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

from tests.helpers.cohort_fixtures import (
    CMU,
    CMU_CROPS,
    assert_same_tables,
    cli,
    cmu_cohort,
    cmu_crop,
    kill_group,
    result_tables,
    run_cli,
    wait_for,
    write_pyramid_tiff,
)
from wsi_pipeline.cli import ConsoleHandler, main
from wsi_pipeline.cohort import locks, tasks
from wsi_pipeline.cohort.config import load_run_config
from wsi_pipeline.cohort.discover import discover
from wsi_pipeline.cohort.layout import RESERVED_NAMES, UnsafeSlideId, safe_id, slide_dir
from wsi_pipeline.cohort.manifest_merge import merge_rows, write_shared_manifest
from wsi_pipeline.cohort.runner import CohortRunner, RunSetupError

#: Every case of the issue's fault matrix and the test that covers it ("package.module::test", the
#: module's dotted path under the tests package).
FAULT_MATRIX: dict[str, str] = {
    "two runs on one OUT":
        "cohort.test_fault_matrix::test_two_runs_at_once_on_one_out_finish_with_the_tables_of_one_run",
    "path traversal through the slide id":
        "cohort.test_fault_matrix::test_dot_names_stay_inside_out_and_nothing_outside_is_deleted",
    "predict-tiles over its input":
        "cohort.test_fault_matrix::test_predict_tiles_into_its_own_input_folder_refuses_overlays_over_inputs",
    "markers without their outputs":
        "cohort.test_fault_matrix::test_deleted_nuclei_table_is_rebuilt_without_redoing_inference",
    "maps deleted, then --geojson":
        "cohort.test_fault_matrix::test_deleted_maps_are_remade_only_when_a_stage_that_reads_them_runs",
    "--mpp a fallback only": "cohort.test_preflight::test_fallback_leaves_slides_with_metadata_alone",
    "missing mpp in the preflight": "cohort.test_preflight::test_missing_mpp_refused_before_any_work",
    "implausible mpp": "cohort.test_preflight::test_implausible_mpp_refused",
    "checkpoint checked once": "cohort.test_preflight::test_unusable_checkpoint_is_one_clear_error",
    "free disk space estimated": "cohort.test_preflight::test_disk_space_refused_or_warned",
    "plausibility QC": "export.test_qc::test_flags_reach_the_manifest_and_summarize",
    "run . from inside the cohort": "cohort.test_fault_matrix::test_run_dot_from_inside_the_cohort",
    "ids however the path is written":
        "cohort.test_fault_matrix::test_ids_do_not_depend_on_how_the_cohort_path_is_written",
    "disk full in a stage":
        "cohort.test_fault_matrix::test_a_full_disk_fails_the_slide_cleanly_and_stops_the_run",
    "disk full on a cluster":
        "cohort.test_fault_matrix::test_a_full_disk_on_a_cluster_starts_no_other_slide",
    "disk full, a real tmpfs":
        "cohort.test_fault_matrix::test_a_real_full_disk_loses_nothing_and_the_rerun_gives_the_same_tables",
    "evaluate --types too few":
        "cohort.test_fault_matrix::test_evaluate_types_fewer_than_the_data_has_is_refused",
    "bad CLI flags": "cohort.test_fault_matrix::test_bad_cli_flag_is_named_as_a_flag_not_as_the_defaults",
    "a folder in a slide list":
        "cohort.test_fault_matrix::test_a_folder_in_a_slide_list_is_reported_as_a_folder",
    "kill -9 in each stage":
        "cohort.test_fault_matrix::test_kill_9_in_a_stage_then_the_rerun_gives_the_same_tables",
    "a killed Dask worker":
        "cohort.test_lost_worker::test_slide_that_kills_its_worker_is_recorded_and_retried",
    "broken and truncated slides":
        "cohort.test_fault_matrix::test_broken_and_truncated_slides_lose_nothing_and_a_fixed_one_runs",
    "bad YAML": "cohort.test_fault_matrix::test_a_bad_config_file_touches_nothing",
    "malicious checkpoints":
        "cohort.test_fault_matrix::test_a_malicious_or_damaged_checkpoint_is_refused_and_touches_nothing",
    # The second matrix (issue 25): tests/cohort/test_fault_matrix_second.py.
    "a live lock from another PID namespace sharing the host name":
        "cohort.test_fault_matrix_second::test_a_live_lock_from_another_pid_namespace_on_this_host_is_not_taken_over",
    "locks of another boot or namespace":
        "cohort.test_fault_matrix_second::test_locks_of_another_boot_or_namespace_are_foreign_and_old_locks_still_judged",
    "SIGTERM (a SLURM time limit) releases every lock":
        "cohort.test_fault_matrix_second::test_sigterm_releases_every_lock_and_the_requeued_run_finishes",
    "a run that did nothing because of locks":
        "cohort.test_fault_matrix_second::test_a_run_that_did_nothing_because_of_locks_exits_non_zero",
    "an id once given, when a slide of the same name arrives":
        "cohort.test_fault_matrix_second::test_an_id_once_given_is_kept_when_a_slide_of_the_same_name_arrives_later",
    "a moved cohort": "cohort.test_fault_matrix_second::test_a_moved_cohort_keeps_its_ids_and_results",
    "another scan of the same size and mtime (cp -p)":
        "cohort.test_fault_matrix_second::test_a_slide_replaced_by_another_scan_of_the_same_size_and_mtime_is_redone",
    "outputs of the fingerprint without content":
        "cohort.test_fault_matrix_second::test_markers_of_the_fingerprint_without_content_are_upgraded_not_redone",
    "slide lists saved by spreadsheets":
        "cohort.test_fault_matrix_second::test_slide_lists_saved_by_spreadsheets_are_read",
    "Windows names, links to other disks, broken links":
        "cohort.test_fault_matrix_second::test_windows_names_links_to_other_disks_and_broken_links_each_one_line",
    "an unreadable folder in the cohort":
        "cohort.test_fault_matrix_second::test_an_unreadable_folder_is_named_and_the_other_slides_run",
    "an 8-bit greyscale export":
        "cohort.test_fault_matrix_second::test_a_greyscale_export_is_refused_not_reported_as_no_tissue",
    "a checkpoint with non-finite weights":
        "cohort.test_fault_matrix_second::test_a_checkpoint_with_non_finite_weights_is_refused_at_load",
    "export-model X X": "cohort.test_fault_matrix_second::test_export_model_never_writes_over_its_input",
    "a key given twice in a YAML":
        "cohort.test_fault_matrix_second::test_a_key_given_twice_in_a_config_file_is_an_error_naming_it",
    "a rerun without --geojson":
        "cohort.test_fault_matrix_second::test_a_rerun_without_geojson_keeps_the_geojson_an_earlier_run_wrote",
    "a slide folder that cannot be written":
        "cohort.test_fault_matrix_second::test_a_slide_folder_this_user_cannot_write_fails_that_slide_alone",
    "--scheduler at an HTTP port":
        "cohort.test_fault_matrix_second::test_a_scheduler_address_that_is_an_http_port_fails_within_connect_timeout",
    "the wheel ships run_default.yaml": "test_wheel::test_a_built_wheel_contains_run_default_yaml",
    "report.html shows each slide's mpp and its source":
        "cohort.test_report::test_row_cells_status_flags_counts_and_per_type_density",
    "the progress bar's failed count":
        "cohort.test_fault_matrix_second::test_the_progress_bar_ends_with_the_final_lines_failed_count",
    "a manifest lock from a clock ahead; --break-locks":
        "cohort.test_fault_matrix_second::test_a_manifest_lock_from_a_clock_ahead_expires_and_break_locks_takes_it",
    "bits flipped in a maps chunk, then a changed setting":
        "cohort.test_fault_matrix_second::"
        "test_a_flipped_maps_chunk_is_named_and_inference_redone_on_a_changed_setting",
    "a maps chunk truncated or gone (an interrupted copy)":
        "cohort.test_fault_matrix_second::test_a_truncated_maps_chunk_never_reaches_the_decoder",
    "a truncated nuclei table in a finished OUT":
        "cohort.test_fault_matrix_second::test_a_truncated_nuclei_table_is_named_and_rebuilt_from_the_maps",
    "maps without chunk checksums (older versions)":
        "cohort.test_fault_matrix_second::test_maps_without_checksums_are_decoded_in_a_child_process",
    "a damaged Parquet footer":
        "cohort.test_fault_matrix_second::test_a_parquet_file_with_a_damaged_footer_is_named",
}


def test_every_case_of_the_matrix_has_its_test():
    """The matrix above names real tests (a renamed or deleted one would drop a case silently)."""
    import importlib

    for case, where in FAULT_MATRIX.items():
        module, name = where.split("::")
        found = getattr(importlib.import_module(f"tests.{module}"), name, None)
        assert callable(found), f"{case}: {where} is gone"


# -- helpers --------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def cohort(shared_data, tmp_path_factory):
    """(root, checkpoint): root/slides holds cmu_a.tif and cmu_b.tif."""
    return cmu_cohort(shared_data, tmp_path_factory.mktemp("faults"))


def run_here(source: Path, out: Path, ckpt: Path, *, break_locks: bool = False, **overrides):
    """One run in this process, no cluster; the report."""
    cfg = load_run_config(None, {"checkpoint": str(ckpt), "cluster": {"workers": 0}, **overrides})
    return CohortRunner(source, out, cfg, break_locks=break_locks).run()


@pytest.fixture(scope="module")
def clean(cohort):
    """An undisturbed run of the cohort: the tables every faulty run must end up with."""
    root, ckpt = cohort
    out = root / "clean"
    report = run_here(root / "slides", out, ckpt)
    assert report.ok and not report.locked
    return result_tables(out)


@pytest.fixture(scope="module")
def finished(cohort, clean):
    """A finished OUT that tests of faults which must write nothing share (each compares what
    it finds at its start)."""
    root, ckpt = cohort
    out = root / "finished"
    assert run_here(root / "slides", out, ckpt).ok
    return out


def _sleeper() -> subprocess.Popen:
    """A live process on this host to stand for another run holding a lock."""
    return subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])


def _hold(lock: Path, *, pid: int, host: str | None = None) -> locks.LockHolder:
    """Write `lock` as if the run `pid` on `host` held it."""
    holder = locks.LockHolder(host=host or socket.gethostname(), pid=pid,
                              started_at="2026-01-01T00:00:00+0000", token="other-run",
                              pid_start=locks._pid_start(pid))
    locks.acquire(lock, holder)
    return holder


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


# -- 1: locks ------------------------------------------------------------------------------------
def test_a_slide_held_by_a_live_run_is_skipped_untouched_then_taken_over_when_it_dies(
        cohort, clean, tmp_path):
    root, ckpt = cohort
    out = tmp_path / "out"
    other = _sleeper()
    try:
        holder = _hold(out / "cmu_a" / "slide.lock", pid=other.pid)
        before = _snapshot(out / "cmu_a")
        report = run_here(root / "slides", out, ckpt)
        assert [sid for sid, *_ in report.locked] == ["cmu_a"]
        line = report.locked_lines()[0]
        assert f"pid {other.pid}" in line and socket.gethostname() in line and holder.started_at in line
        assert _snapshot(out / "cmu_a") == before  # not a marker, not a failure record
        rows = pd.read_parquet(out / "manifest.parquet").set_index("slide_id")
        assert rows.loc["cmu_b", "status"] == "done" and rows.loc["cmu_a", "status"] == "pending"
        cfg = load_run_config(None, {"checkpoint": str(ckpt), "cluster": {"workers": 0}})
        dry = {p.entry.slide_id: p.locked_by for p in CohortRunner(root / "slides", out, cfg).plan()}
        assert dry["cmu_a"] is not None and dry["cmu_a"].pid == other.pid
    finally:
        other.kill()
        other.wait()
    dry = {p.entry.slide_id: p for p in CohortRunner(root / "slides", out, cfg).plan()}
    assert dry["cmu_a"].locked_by is None and dry["cmu_a"].pending  # a dead holder: would be taken over
    # The holder died without releasing: the next run on this host takes the lock over.
    report = run_here(root / "slides", out, ckpt)
    assert report.ok and not report.locked
    assert not (out / "cmu_a" / "slide.lock").exists() and not (out / "cmu_b" / "slide.lock").exists()
    assert_same_tables(clean, result_tables(out))


def test_a_lock_held_from_another_host_needs_break_locks(cohort, tmp_path):
    root, ckpt = cohort
    out = tmp_path / "out"
    _hold(out / "cmu_a" / "slide.lock", pid=1, host="some-other-node")
    slide = root / "slides" / "cmu_a.tif"
    report = run_here(slide, out, ckpt)
    assert report.locked and "some-other-node" in report.locked_lines()[0]
    assert not (out / "cmu_a" / "stages").exists()
    proc = run_cli("run", str(slide), "-o", str(out), "--checkpoint", str(ckpt), "--workers", "0")
    # nothing run, only because of the lock: not a success (issue 25)
    assert proc.returncode == 3 and "--break-locks" in proc.stdout and "SKIPPED cmu_a" in proc.stdout
    report = run_here(slide, out, ckpt, break_locks=True)
    assert report.ok and not report.locked
    assert pd.read_parquet(out / "manifest.parquet")["status"].tolist() == ["done"]


def test_two_runs_at_once_on_one_out_finish_with_the_tables_of_one_run(cohort, clean, tmp_path):
    """The issue's reproduction: `run C -o OUT & sleep 2; run C -o OUT`."""
    root, ckpt = cohort
    out = tmp_path / "out"
    args = ("run", str(root / "slides"), "-o", str(out), "--checkpoint", str(ckpt), "--workers", "0")
    first = cli(*args)
    try:
        assert wait_for(lambda: any(out.glob("*/maps.zarr.partial")), 60), "inference never started"
        # The second run in this process, so that it plans at once, while the first holds both
        # slides (a second CLI process would spend seconds importing torch first).
        second = run_here(root / "slides", out, ckpt)
        out_first, _ = first.communicate(timeout=120)
    finally:
        kill_group(first)
    assert first.returncode == 0, out_first
    assert second.ok and second.locked, "the second run should have met the first one's locks"
    assert all(holder is not None and holder.pid == first.pid for _, holder, _ in second.locked)
    assert f"pid {first.pid}" in second.locked_lines()[0]
    assert_same_tables(clean, result_tables(out))
    assert not list(out.glob("*/slide.lock")) and not (out / ".manifest.lock").exists()


def test_locks_are_released_when_a_run_stops_on_an_exception(cohort, tmp_path, monkeypatch):
    import wsi_pipeline.cohort.tasks as tasks

    root, ckpt = cohort

    def interrupted(job):
        raise KeyboardInterrupt

    monkeypatch.setitem(tasks.STAGE_FUNCTIONS, "infer", interrupted)
    with pytest.raises(KeyboardInterrupt):
        run_here(root / "slides", tmp_path / "out", ckpt)
    assert not list((tmp_path / "out").glob("*/slide.lock"))


def test_a_stage_whose_lock_was_taken_over_writes_nothing(cohort, clean, tmp_path):
    """A run whose lock another run broke (--break-locks) must not touch the folder again."""
    from wsi_pipeline.cohort.stages import SlideStages
    from wsi_pipeline.cohort.tasks import run_stage

    root, ckpt = cohort
    out = tmp_path / "out"
    run_here(root / "slides" / "cmu_a.tif", out, ckpt)
    cfg = load_run_config(None, {"checkpoint": str(ckpt), "cluster": {"workers": 0},
                                 "postproc": {"ns_threshold": 0.6}})
    runner = CohortRunner(root / "slides" / "cmu_a.tif", out, cfg)
    plan = runner.plan(lock=True)[0]
    assert plan.pending == ["postproc", "export"]
    job = runner.job(plan, progress=False)
    lock = out / "cmu_a" / "slide.lock"
    lock.unlink()
    _hold(lock, pid=1, host="the-run-that-broke-it")
    before = _snapshot(out / "cmu_a")
    outcome = run_stage(job, "postproc")
    assert not outcome["ok"] and outcome["lock_lost"]
    assert _snapshot(out / "cmu_a") == before
    assert SlideStages(out / "cmu_a").read_failure() is None


def test_stale_locks_dead_pid_reused_pid_and_empty_file(tmp_path):
    me = locks.me()
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    lock = tmp_path / "a.lock"
    _hold(lock, pid=dead.pid)
    locks.acquire(lock, me)  # dead pid on this host: taken over
    assert locks.holds(lock, me.token)
    locks.release(lock, me)
    assert not lock.exists()

    reused = locks.LockHolder(host=socket.gethostname(), pid=os.getpid(), started_at="x", token="old",
                              pid_start=(locks._pid_start(os.getpid()) or 0) + 1)
    locks.acquire(lock, reused)
    if locks._pid_start(os.getpid()) is not None:  # start times are known (Linux): pid reuse is seen
        locks.acquire(lock, me)
        assert locks.holds(lock, me.token)
        locks.release(lock, me)
    lock.unlink(missing_ok=True)

    lock.write_text("")  # a holder that died between creating and writing its lock
    with pytest.raises(locks.LockHeld):
        locks.acquire(lock, me)  # young: maybe still being written
    old = time.time() - 3600
    os.utime(lock, (old, old))
    locks.acquire(lock, me)
    assert locks.holds(lock, me.token)


def test_release_leaves_a_lock_that_was_taken_over(tmp_path):
    lock = tmp_path / "a.lock"
    mine, theirs = locks.me(), locks.me()
    locks.acquire(lock, mine)
    lock.unlink()
    locks.acquire(lock, theirs)
    locks.release(lock, mine)
    assert locks.holds(lock, theirs.token)


def test_manifest_merges_runs_of_different_slides_into_one_out(cohort, tmp_path):
    """SLURM array jobs, each given its own list, one OUT: the manifest lists every slide."""
    root, ckpt = cohort
    out = tmp_path / "out"
    for name in ("cmu_a", "cmu_b"):
        listing = tmp_path / f"{name}.csv"
        listing.write_text(f"path\n{root / 'slides' / name}.tif\n")
        assert run_here(listing, out, ckpt).ok
    rows = pd.read_parquet(out / "manifest.parquet")
    assert sorted(rows["slide_id"]) == ["cmu_a", "cmu_b"] and set(rows["status"]) == {"done"}
    summary = pd.read_parquet(out / "cohort_summary.parquet")
    assert sorted(summary["slide_id"].unique()) == ["cmu_a", "cmu_b"]


def test_merge_rows_keeps_rows_of_slides_held_elsewhere(tmp_path):
    existing = [{"slide_id": "a", "status": "done"}, {"slide_id": "b", "status": "done"},
                {"slide_id": "gone", "status": "done"}]
    ours = [{"slide_id": "a", "status": "pending"}, {"slide_id": "c", "status": "done"}]
    merged = merge_rows(existing, ours, keep_theirs={"a"})
    assert [(r["slide_id"], r["status"]) for r in merged] == [
        ("a", "done"), ("c", "done"), ("b", "done"), ("gone", "done")]
    for sid in ("a", "b", "c"):
        (tmp_path / sid).mkdir()
    write_shared_manifest(tmp_path, existing)
    write_shared_manifest(tmp_path, ours, keep_theirs={"a"})
    rows = pd.read_parquet(tmp_path / "manifest.parquet")
    assert rows["slide_id"].tolist() == ["a", "c", "b"]  # "gone" has no folder any more
    assert not (tmp_path / ".manifest.lock").exists()


# -- 2: slide ids that would leave OUT ---------------------------------------------------------
@pytest.mark.parametrize("raw, expected", [
    ("..", "__"), (".", "_"), ("", "_"), (".hidden", "_hidden"), ("a/b", "a_b"), ("a\\b", "a_b"),
    ("x\ny", "x_y"), ("logs", "logs_"), ("manifest.parquet", "manifest.parquet_"),
    ("TCGA-01 (copy).svs", "TCGA-01 (copy).svs"), ("a..b", "a..b"),
])
def test_safe_id(raw, expected):
    assert safe_id(raw) == expected


def test_long_ids_are_cut_and_stay_distinct():
    a, b = safe_id("x" * 300 + "a"), safe_id("x" * 300 + "b")
    assert a != b and len(a.encode()) <= 160 and len(b.encode()) <= 160


def test_reserved_names_are_what_out_uses():
    from wsi_pipeline.cohort.manifest import MANIFEST
    from wsi_pipeline.cohort.report import REPORT
    from wsi_pipeline.cohort.summarize import SUMMARY_PLOT, SUMMARY_TABLE

    assert {MANIFEST, SUMMARY_TABLE, SUMMARY_PLOT, REPORT, "logs"} == set(RESERVED_NAMES)


def test_slide_dir_refuses_anything_not_strictly_inside_out(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    for bad in ("..", ".", "", "a/b", "../x", "logs"):
        with pytest.raises(UnsafeSlideId):
            slide_dir(out, bad)
    (tmp_path / "elsewhere").mkdir()
    (out / "linked").symlink_to(tmp_path / "elsewhere")
    with pytest.raises(UnsafeSlideId, match="not a folder directly inside"):
        slide_dir(out, "linked")
    assert slide_dir(out, "__") == out / "__"


def test_dot_names_stay_inside_out_and_nothing_outside_is_deleted(cohort, tmp_path):
    """`...tif` once got the id "..": its stage clean-up deleted maps.zarr, tissue.png and
    nuclei.parquet in OUT's parent."""
    root, ckpt = cohort
    work = tmp_path / "work"
    for decoy in ("tissue.png", "tissue.json", "nuclei.parquet", "summary.json", "overlay.png"):
        (work / decoy).parent.mkdir(parents=True, exist_ok=True)
        (work / decoy).write_text("the user's own file")
    (work / "maps.zarr").mkdir()
    (work / "maps.zarr" / "keep").write_text("the user's own file")
    slides = work / "slides"
    slides.mkdir()
    shutil.copy(root / "slides" / "cmu_a.tif", slides / "...tif")
    shutil.copy(root / "slides" / "cmu_b.tif", slides / "..tif")
    listing = work / "list.csv"
    listing.write_text("path\nslides/...tif\nslides/..tif\n")
    assert sorted(e.slide_id for e in discover(listing)) == ["_", "__"]
    before = _snapshot(work)
    report = run_here(listing, work / "out", ckpt)
    assert report.ok, report.failure_lines()
    after = _snapshot(work)
    assert {k: v for k, v in after.items() if not k.startswith("out/")} == before
    assert (work / "out" / "__" / "nuclei.parquet").is_file()
    assert (work / "out" / "_" / "nuclei.parquet").is_file()
    # given alone, the same file gets the same id
    assert [e.slide_id for e in discover(slides / "...tif")] == ["__"]


def test_a_slide_folder_that_is_a_link_out_of_out_is_refused_before_any_work(cohort, tmp_path):
    root, ckpt = cohort
    out = tmp_path / "out"
    out.mkdir()
    (tmp_path / "elsewhere").mkdir()
    (out / "cmu_a").symlink_to(tmp_path / "elsewhere")
    with pytest.raises(RunSetupError, match="not a folder directly inside"):
        run_here(root / "slides", out, ckpt)
    assert not any((tmp_path / "elsewhere").iterdir())


# -- 3: predict-tiles never writes over an input ------------------------------------------------
@pytest.fixture(scope="module")
def tile_ckpt(tmp_path_factory):
    import torch

    from wsi_pipeline.model import MultiTaskNet, save_checkpoint

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("tile_ckpt") / "tiny.pt"
    save_checkpoint(path, MultiTaskNet(encoder="resnet18", width=8),
                    class_names=("background", "other", "inflammatory", "epithelial", "spindle"), mpp=0.25)
    return path


def _tile(path: Path, seed: int) -> Path:
    from PIL import Image

    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(path)
    return path


def _predict(*args: str):
    return CliRunner().invoke(main, ["predict-tiles", *map(str, args), "--device", "cpu"])


def test_predict_tiles_into_its_own_input_folder_refuses_overlays_over_inputs(tile_ckpt, tmp_path):
    d = tmp_path / "d"
    d.mkdir()
    t1 = _tile(d / "t1.png", 0)
    original = t1.read_bytes()
    res = _predict(d, d, "--overlay", "--checkpoint", tile_ckpt)
    assert res.exit_code != 0 and "would overwrite the input image" in res.output and "t1.png" in res.output
    assert t1.read_bytes() == original and not (d / "t1.mat").exists()
    res = _predict(d, d, "--checkpoint", tile_ckpt)  # .mat only: fine next to the inputs
    assert res.exit_code == 0, res.output
    assert t1.read_bytes() == original and (d / "t1.mat").is_file()


def test_predict_tiles_same_stem_different_extension_get_their_own_outputs(tile_ckpt, tmp_path):
    import scipy.io as sio

    d, out = tmp_path / "d", tmp_path / "out"
    d.mkdir()
    _tile(d / "x.png", 0)
    _tile(d / "x.jpg", 1)
    _tile(d / "y.png", 2)
    res = _predict(d, out, "--overlay", "--geojson", "--checkpoint", tile_ckpt)
    assert res.exit_code == 0, res.output
    assert "3 image(s) written" in res.output
    names = sorted(p.name for p in out.iterdir())
    assert names == ["x.jpg.geojson.gz", "x.jpg.mat", "x.jpg.png", "x.png.geojson.gz", "x.png.mat",
                     "x.png.png", "y.geojson.gz", "y.mat", "y.png"]
    assert sio.loadmat(out / "x.png.mat")["inst_map"].shape == (64, 64)


def test_predict_tiles_outputs_that_still_clash_are_an_error_before_any_work(tile_ckpt, tmp_path):
    d, out = tmp_path / "d", tmp_path / "out"
    d.mkdir()
    _tile(d / "x.png", 0)
    _tile(d / "x.jpg", 1)
    _tile(d / "x.png.bmp", 2)  # its stem is "x.png": x.png.mat, like x.png's
    res = _predict(d, out, "--checkpoint", tile_ckpt)
    assert res.exit_code != 0 and "would both write" in res.output
    assert not out.exists() or not any(out.iterdir())


# -- 4: markers are only as good as the outputs they promise -----------------------------------
def test_deleted_nuclei_table_is_rebuilt_without_redoing_inference(cohort, clean, tmp_path):
    root, ckpt = cohort
    out = tmp_path / "out"
    run_here(root / "slides", out, ckpt)
    infer_marker = (out / "cmu_a" / "stages" / "infer.json").read_text()
    (out / "cmu_a" / "nuclei.parquet").unlink()
    res = CliRunner().invoke(main, ["summarize", str(out)])
    assert res.exit_code != 0 and "cmu_a" in res.output and "nuclei.parquet is missing" in res.output
    cfg = load_run_config(None, {"checkpoint": str(ckpt), "cluster": {"workers": 0}})
    plans = {p.entry.slide_id: p.pending for p in CohortRunner(root / "slides", out, cfg).plan()}
    assert plans == {"cmu_a": ["postproc", "export"], "cmu_b": []}
    report = run_here(root / "slides", out, ckpt)
    assert report.ran_stages == 2
    assert (out / "cmu_a" / "stages" / "infer.json").read_text() == infer_marker
    assert_same_tables(clean, result_tables(out))


def test_deleted_maps_are_remade_only_when_a_stage_that_reads_them_runs(cohort, clean, tmp_path):
    root, ckpt = cohort
    out = tmp_path / "out"
    run_here(root / "slides", out, ckpt)
    shutil.rmtree(out / "cmu_a" / "maps.zarr")  # to save space, once the slide is finished
    report = run_here(root / "slides", out, ckpt)
    assert report.ran_stages == 0 and not (out / "cmu_a" / "maps.zarr").exists()
    assert_same_tables(clean, result_tables(out))
    # --geojson later: export reads what it needs from nuclei.parquet's metadata, so only export
    # runs, without the maps (it used to fail with FileNotFoundError on every rerun, then to
    # redo inference)
    summary = json.loads((out / "cmu_a" / "summary.json").read_text())
    report = run_here(root / "slides", out, ckpt, export={"geojson": True})
    assert report.ok, report.failure_lines()
    assert (out / "cmu_a" / "nuclei.geojson.gz").is_file() and (out / "cmu_b" / "nuclei.geojson.gz").is_file()
    assert report.ran_stages == 1 + 1  # export only, on each slide
    assert not (out / "cmu_a" / "maps.zarr").exists()
    again = json.loads((out / "cmu_a" / "summary.json").read_text())
    for key in ("n_nuclei", "tissue_mm2", "per_type", "qc", "slide_mpp", "slide_mpp_source", "model_mpp",
                "level0_size", "overlay_mpp", "qc_sheet"):
        assert again[key] == summary[key], key
    for key in ("model_sha256", "input", "stain_normalization", "maps_wsi_pipeline_version"):
        assert again["provenance"][key] == summary["provenance"][key], key
    assert again["provenance"]["config"]["infer"] == summary["provenance"]["config"]["infer"]
    assert (out / "cmu_a" / "qc" / "sheet.png").is_file()
    tables = result_tables(out)
    tables["manifest"] = tables["manifest"].assign(config_hash=clean["manifest"]["config_hash"])
    assert_same_tables(clean, tables)  # the settings' hash aside (--geojson)
    # a postproc setting reads the maps: only then is inference redone
    report = run_here(root / "slides" / "cmu_a.tif", out, ckpt, export={"geojson": True},
                      postproc={"ns_threshold": 0.45})
    assert report.ok and report.ran_stages == 3 and (out / "cmu_a" / "maps.zarr").is_dir()


def test_export_of_an_old_table_without_its_maps_names_what_to_do(cohort, tmp_path):
    """A table written before its metadata carried the maps' attributes, maps deleted: one
    error naming the file and the way out, not a KeyError."""
    import pyarrow.parquet as pq

    from wsi_pipeline.export.config import ExportConfig
    from wsi_pipeline.export.stage import export_slide
    from wsi_pipeline.export.table_meta import TableMetaError

    root, ckpt = cohort
    out = tmp_path / "out"
    run_here(root / "slides" / "cmu_b.tif", out, ckpt)
    folder = out / "cmu_b"
    table = pq.read_table(folder / "nuclei.parquet")
    prov = json.loads(table.schema.metadata[b"wsi_pipeline"])
    for key in ("class_colors", "slide_mpp_source", "stain", "maps_wsi_pipeline_version"):
        prov.pop(key)
    old = table.replace_schema_metadata({**table.schema.metadata, b"wsi_pipeline": json.dumps(prov).encode()})
    pq.write_table(old, folder / "nuclei.parquet")
    assert export_slide(folder, ExportConfig())["slide_mpp_source"] == "metadata"  # from the maps
    shutil.rmtree(folder / "maps.zarr")
    with pytest.raises(TableMetaError, match="lacks class_colors.*delete nuclei.parquet and rerun"):
        export_slide(folder, ExportConfig())


def test_deleted_export_outputs_are_rewritten(cohort, tmp_path):
    root, ckpt = cohort
    out = tmp_path / "out"
    slide = root / "slides" / "cmu_b.tif"
    run_here(slide, out, ckpt, export={"geojson": True})
    (out / "cmu_b" / "nuclei.geojson.gz").unlink()
    report = run_here(slide, out, ckpt, export={"geojson": True})
    assert report.ran_stages == 1 and (out / "cmu_b" / "nuclei.geojson.gz").is_file()


# -- 9, 10: ids whatever way the path is written -----------------------------------------------
def _touch(p: Path) -> Path:
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_bytes(b"x")
    return p


def test_ids_do_not_depend_on_how_the_cohort_path_is_written(tmp_path, monkeypatch):
    cohort = tmp_path / "cohort"
    for rel in ("a/s.svs", "b/s.svs", "t.svs"):
        _touch(cohort / rel)
    (tmp_path / "link").symlink_to(cohort)
    expected = ["a__s", "b__s", "t"]
    monkeypatch.chdir(cohort)
    # was: PosixPath('.') has an empty name
    assert sorted(e.slide_id for e in discover(Path("."))) == expected
    assert all(e.path.is_absolute() for e in discover(Path(".")))
    monkeypatch.chdir(tmp_path)
    for spelled in (Path("cohort"), cohort, tmp_path / "link", Path("link"), Path("cohort/../cohort")):
        assert sorted(e.slide_id for e in discover(spelled)) == expected, spelled


def test_run_dot_from_inside_the_cohort(cohort, tmp_path, monkeypatch):
    root, ckpt = cohort
    monkeypatch.chdir(root / "slides")
    report = run_here(Path("."), tmp_path / "out", ckpt)
    assert report.ok and sorted(r["slide_id"] for r in report.rows) == ["cmu_a", "cmu_b"]


def test_symlinked_slides_keep_their_own_names_and_two_links_are_one_slide(tmp_path, caplog):
    target = _touch(tmp_path / "store" / "0f3a9c.svs")
    cohort = tmp_path / "cohort"
    cohort.mkdir()
    (cohort / "patient1.svs").symlink_to(target)
    (cohort / "patient1_again.svs").symlink_to(target)
    (cohort / "patient2.svs").symlink_to(_touch(tmp_path / "store" / "77aa.svs"))
    entries = discover(cohort)
    assert [e.slide_id for e in entries] == ["patient1", "patient2"]
    assert "patient1_again.svs is the same file as" in caplog.text


# -- kill -9 in each stage ---------------------------------------------------------------------
#: Run as `python HOOK run ...`: `wsi-pipeline` with one stage paused half-written (the first
#: slide to reach it), so that the test's SIGKILL lands inside that stage, never after it.
PAUSE_HOOK = '''
import os
import time
from pathlib import Path
from unittest import mock

from wsi_pipeline.cohort import tasks

STAGE, FLAG = os.environ["FAULT_PAUSE_STAGE"], Path(os.environ["FAULT_PAUSE_FLAG"])


def pause(*args, **kwargs):
    FLAG.write_text(str(os.getpid()))
    time.sleep(600)


def pause_when_done(slide_id, stage, done, total):
    # infer: every map chunk is in maps.zarr.partial; postproc: the table half-written
    if stage == STAGE and done == total:
        pause()


if STAGE == "export":  # export reports no progress: overlay.png and qc/ written, not summary.json
    mock.patch("wsi_pipeline.export.stage.write_text_atomic", pause).start()
else:
    tasks.STAGE_PROGRESS.append(pause_when_done)
from wsi_pipeline.cli import main  # noqa: E402

main()
'''


def _stored_chunks(maps: Path) -> set[str]:
    """The chunk files of a maps.zarr's arrays, relative to it (empty where it does not exist)."""
    return {str(p.relative_to(maps)) for p in maps.glob("*/c/**/*") if p.is_file()}


@pytest.mark.parametrize("stage", ["infer", "postproc", "export"])
def test_kill_9_in_a_stage_then_the_rerun_gives_the_same_tables(cohort, clean, tmp_path, stage):
    """A `wsi-pipeline run` SIGKILLed inside a stage leaves no marker claiming it, and the next
    run (taking over the dead run's lock) finishes with an undisturbed run's tables."""
    from wsi_pipeline.cohort.stages import STAGES

    root, ckpt = cohort
    out = tmp_path / "out"
    hook = tmp_path / "paused_run.py"
    hook.write_text(PAUSE_HOOK)
    flag = tmp_path / "paused"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "FAULT_PAUSE_STAGE": stage, "FAULT_PAUSE_FLAG": str(flag)}
    run = subprocess.Popen([sys.executable, str(hook), "run", str(root / "slides"), "-o", str(out),
                            "--checkpoint", str(ckpt), "--workers", "0"], env=env,
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                           start_new_session=True)
    try:
        assert wait_for(flag.exists, 120), f"{stage} was never reached: {run.communicate(timeout=5)[0]}"
    finally:
        kill_group(run)
    run.stdout.close()
    folder = out / "cmu_a"
    done = {p.stem for p in (folder / "stages").glob("*.json")}
    assert done == set(STAGES[:STAGES.index(stage)]), done  # the killed stage is not marked done
    half_written = {"infer": list(folder.glob("maps.zarr.partial/ns")),
                    "postproc": list(folder.glob(".nuclei.parquet.*.tmp")),
                    "export": list(folder.glob("overlay.png"))}[stage]
    assert half_written and not (folder / "summary.json").exists()
    assert (folder / "slide.lock").exists()  # the dead run's
    # infer paused at its last tile: every map chunk is already stored, the attributes are not
    chunks_at_kill = _stored_chunks(folder / "maps.zarr.partial")
    if stage == "infer":
        group_meta = json.loads((folder / "maps.zarr.partial" / "zarr.json").read_text())
        assert "model_sha256" not in group_meta.get("attributes", {})

    report = run_here(root / "slides", out, ckpt)
    assert report.ok, report.failure_lines()
    if stage == "infer":  # the rerun's finished maps store exactly the chunks the killed run had
        assert chunks_at_kill and chunks_at_kill == _stored_chunks(folder / "maps.zarr")
    assert report.ran_stages == len(STAGES) - STAGES.index(stage) + len(STAGES)
    assert_same_tables(clean, result_tables(out))
    assert not list(out.rglob("*.tmp")) and not list(out.glob("*/maps.zarr.partial"))
    assert not list(out.glob("*/slide.lock"))


# -- broken inputs: slides, config files, checkpoints -------------------------------------------
def test_broken_and_truncated_slides_lose_nothing_and_a_fixed_one_runs(shared_data, cohort, clean, tmp_path):
    """Broken files fail alone, each with an error naming it; the good slides equal an
    undisturbed run's; a rerun redoes nothing; a file replaced by a good copy runs by itself
    (its fingerprint changed: no --retry-failed needed) and nothing else is touched."""
    root, ckpt = cohort
    slides = tmp_path / "slides"
    slides.mkdir()
    for name in ("cmu_a", "cmu_b"):
        shutil.copy(root / "slides" / f"{name}.tif", slides / f"{name}.tif")
    good = (root / "slides" / "cmu_b.tif").read_bytes()
    (slides / "cmu_c.tif").write_bytes(good[: len(good) // 3])  # a copy that stopped a third in
    svs = (shared_data / CMU).read_bytes()
    (slides / "truncated.svs").write_bytes(svs[: len(svs) // 3])
    (slides / "text.svs").write_text("this is not a slide\n")
    (slides / "empty.svs").write_bytes(b"")
    out = tmp_path / "out"
    report = run_here(slides, out, ckpt)
    broken = {"cmu_c", "truncated", "text", "empty"}
    rows = pd.read_parquet(out / "manifest.parquet").set_index("slide_id")
    assert rows["status"].to_dict() == {**dict.fromkeys(broken, "failed"), "cmu_a": "done", "cmu_b": "done"}
    for line in report.failure_lines():
        slide_id = line.split(":")[0]
        assert line.startswith(f"{slide_id}: infer: ") and slide_id in line.split(": ", 3)[-1], line
    tables = result_tables(out)
    for name in ("cmu_a", "cmu_b"):
        pd.testing.assert_frame_equal(clean[name], tables[name])
    before = _snapshot(out / "cmu_a")

    again = run_here(slides, out, ckpt)  # failed before, not retried: nothing runs
    assert again.ran_stages == 0 and _snapshot(out / "cmu_a") == before

    (slides / "cmu_c.tif").write_bytes(good)
    fixed = run_here(slides, out, ckpt)
    assert fixed.ran_stages == 3
    assert sorted(r["slide_id"] for r in fixed.failures) == sorted(broken - {"cmu_c"})
    tables = result_tables(out)
    pd.testing.assert_frame_equal(clean["cmu_b"], tables["cmu_c"])  # the same pixels as cmu_b
    for name in ("cmu_a", "cmu_b"):
        pd.testing.assert_frame_equal(clean[name], tables[name])
    assert _snapshot(out / "cmu_a") == before


@pytest.mark.parametrize("text, named", [
    ("postproc:\n  ns_threshold: [0.5\n", "line 2"),  # YAML that does not parse
    ("postproc:\n  ns_treshold: 0.5\n", "ns_treshold"),  # a misspelt key
    ("infer:\n  chunk_size: lots\n", "chunk_size"),  # a value of the wrong type
    ("- just\n- a list\n", "mapping"),  # not a mapping at all
])
def test_a_bad_config_file_touches_nothing(cohort, clean, finished, tmp_path, text, named):
    root, ckpt = cohort
    out = finished
    before = _snapshot(out)
    bad = tmp_path / "bad.yaml"
    bad.write_text(text)
    res = CliRunner().invoke(main, ["run", str(root / "slides"), "-o", str(out), "--checkpoint", str(ckpt),
                                    "--workers", "0", "--config", str(bad)])
    assert res.exit_code != 0 and str(bad) in res.output and named in res.output, res.output
    assert "Traceback" not in res.output
    assert _snapshot(out) == before
    bad.write_text("postproc:\n  ns_threshold: 0.4\n")  # fixed (the default value)
    report = run_here(root / "slides", out, ckpt)
    assert report.ok and report.ran_stages == 0
    assert_same_tables(clean, result_tables(out))


class _Payload:
    """Unpickling this runs `touch PROOF`: what a malicious checkpoint would do."""

    def __init__(self, proof: Path):
        self.proof = proof

    def __reduce__(self):
        return (os.system, (f"touch {self.proof}",))


@pytest.mark.parametrize("kind", ["code", "truncated", "garbage"])
def test_a_malicious_or_damaged_checkpoint_is_refused_and_touches_nothing(cohort, clean, finished, tmp_path,
                                                                          kind):
    import torch

    root, ckpt = cohort
    out = finished
    before = {k: v for k, v in _snapshot(out).items() if not k.startswith("logs/")}
    evil = tmp_path / "model.pt"
    proof = tmp_path / "payload_ran"
    if kind == "code":
        torch.save({"model": _Payload(proof)}, evil)
    elif kind == "truncated":
        evil.write_bytes(ckpt.read_bytes()[:100_000])
    else:
        evil.write_bytes(os.urandom(4096))
    with pytest.raises(RunSetupError) as info:
        run_here(root / "slides", out, evil)
    message = str(info.value)
    assert str(evil) in message and "weights_only" not in message, message
    assert not proof.exists(), "the checkpoint's code ran"
    assert {k: v for k, v in _snapshot(out).items() if not k.startswith("logs/")} == before
    assert not list(out.glob("*/slide.lock"))
    report = run_here(root / "slides", out, ckpt)
    assert report.ok and report.ran_stages == 0
    assert_same_tables(clean, result_tables(out))


# -- 11: a full disk ----------------------------------------------------------------------------
def _disk_full_error(code: int = errno.ENOSPC) -> OSError:
    """What pyarrow and Python writes raise on a full disk: errno set, no file name."""
    return OSError(code, f"Error writing bytes to file. Detail: [errno {code}] {os.strerror(code)}")


def _raise(*_args, code: int = errno.ENOSPC, **_kwargs):
    raise _disk_full_error(code)


def _write_text_filling_on(name: str, code: int):
    """Path.write_text that meets a full disk on the temporary file of `name` (atomic writes)."""
    real = Path.write_text

    def write_text(self, *args, **kwargs):
        if self.name.startswith(f".{name}."):
            _raise(code=code)
        return real(self, *args, **kwargs)

    return write_text


def _json_write_failing(*names: str):
    """stages.atomic_write_json that meets a full disk writing `names` (markers, failed.json)."""
    from wsi_pipeline.cohort.stages import atomic_write_json as real

    def write(path, obj):
        if Path(path).name in names:
            _raise()
        return real(path, obj)

    return write


def _full_when_done():
    """A full disk at a stage's last progress step (tasks.STAGE_PROGRESS): the stage wrote all
    but the commit of its output."""
    def observer(_slide_id, _stage, done, total):
        if done == total:
            _raise()

    return mock.patch.object(tasks, "STAGE_PROGRESS", [observer])


#: Where each case meets the full disk, after the stage wrote part of what it writes.
DISK_FULL_AT = {
    # the maps are all in maps.zarr.partial, tissue.png/json written: the attributes do not fit
    "infer": _full_when_done,
    # the last chunk's rows (the table's last row group) do not fit
    "postproc": _full_when_done,
    # overlay.png and qc/ written, summary.json does not fit (a quota, EDQUOT)
    "export": lambda: mock.patch.object(Path, "write_text",
                                        _write_text_filling_on("summary.json", errno.EDQUOT)),
    # post-processing finished, its marker does not fit
    "marker": lambda: mock.patch("wsi_pipeline.cohort.stages.atomic_write_json",
                                 _json_write_failing("postproc.json")),
    # ... and neither does the failure record: the manifest says it all the same
    "record": lambda: mock.patch("wsi_pipeline.cohort.stages.atomic_write_json",
                                 _json_write_failing("postproc.json", "failed.json")),
}


def _disk_full_in(monkeypatch, case: str, slide_id: str = "cmu_a") -> str:
    """Make one stage of `slide_id` meet a full disk (DISK_FULL_AT); the stage's name."""
    from wsi_pipeline.cohort import tasks

    stage = "postproc" if case in ("marker", "record") else case
    real = tasks.run_stage

    def run_stage(job, name, upstream=None):
        if job.slide_id == slide_id and name == stage:
            with DISK_FULL_AT[case]():
                return real(job, name, upstream)
        return real(job, name, upstream)

    monkeypatch.setattr("wsi_pipeline.cohort.runner.run_stage", run_stage)
    return stage


@pytest.mark.parametrize("case", list(DISK_FULL_AT))
def test_a_full_disk_fails_the_slide_cleanly_and_stops_the_run(cohort, clean, tmp_path, monkeypatch, case):
    """Issue 11: a full disk in post-processing gave a 135-line traceback from write_manifest
    and no failure record, and the slide's partial maps stayed on the full disk."""
    from wsi_pipeline.cohort.stages import STAGE_OUTPUTS, STAGES

    root, ckpt = cohort
    out = tmp_path / "out"
    stage = _disk_full_in(monkeypatch, case)
    # The console handler `wsi-pipeline` installs (its logging.basicConfig leaves pytest's alone).
    root_log = logging.getLogger()
    if not any(isinstance(h, ConsoleHandler) for h in root_log.handlers):
        monkeypatch.setattr(root_log, "handlers", [*root_log.handlers, ConsoleHandler(level=logging.WARNING)])
    res = CliRunner().invoke(main, ["run", str(root / "slides"), "-o", str(out), "--checkpoint", str(ckpt),
                                    "--workers", "0"])
    assert res.exit_code == 1, res.output
    assert "Traceback" not in res.output and "Errno" not in res.output, res.output
    what = "disk quota exceeded" if case == "export" else "disk full"
    written = {"infer": "maps.zarr.partial", "export": "summary.json"}.get(case, "nuclei.parquet")
    said = f"{what} while writing {out / 'cmu_a' / written}: free space "
    lines = [line for line in res.output.splitlines() if "disk full" in line or "quota exceeded" in line]
    if case == "record":
        assert "the failure could not be recorded in" in lines.pop(1) and not list(out.rglob("failed.json"))
    assert len(lines) == 3, res.output
    assert f"cmu_a: {stage} failed: {said}" in lines[0]  # the one line while the run goes on
    assert lines[1].startswith(f"FAILED cmu_a: {stage}: DiskFull: {said}")  # the report at the end
    assert lines[2].startswith(f"disk full: no slide was started after cmu_a's {stage}; 1 left pending")

    rows = pd.read_parquet(out / "manifest.parquet").set_index("slide_id")
    assert (rows.loc["cmu_a", "status"], rows.loc["cmu_a", "failed_stage"]) == ("failed", stage)
    assert rows.loc["cmu_a", "error_type"] == "DiskFull" and rows.loc["cmu_a", "error"].startswith(said)
    assert rows.loc["cmu_b", "status"] == "pending"  # never started: it would have failed too
    assert not (out / "cmu_b" / "stages").exists()
    # The stage's partial outputs are gone (the space is given back); earlier stages' are kept.
    folder = out / "cmu_a"
    assert not [name for name in STAGE_OUTPUTS[stage] if (folder / name).exists()]
    assert not list(folder.rglob("*.tmp")) and not list(out.glob("*/slide.lock"))
    kept = STAGES[:STAGES.index(stage)]
    recorded = set() if case == "record" else {"failed"}
    assert {p.stem for p in (folder / "stages").glob("*.json")} == {*kept, *recorded}
    log = (out / "logs" / "cmu_a.log").read_text()
    assert said in log and "Traceback" in log  # the traceback is in the slide's log only

    # Space freed: the next run (no --retry-failed: the disk's fault, not the slide's) finishes
    # both, redoing only what was lost, with the tables of an undisturbed run.
    monkeypatch.undo()
    report = run_here(root / "slides", out, ckpt)
    assert report.ok, report.failure_lines()
    assert report.ran_stages == len(STAGES) - len(kept) + len(STAGES)
    assert_same_tables(clean, result_tables(out))


def test_a_full_disk_on_a_cluster_starts_no_other_slide(cohort, clean, tmp_path, monkeypatch):
    """On a Dask cluster every slide is submitted at once: a stage that meets a full disk sets
    the run's stop event and the stage tasks that have not started return without work."""
    from distributed import LocalCluster

    root, ckpt = cohort
    out = tmp_path / "out"
    # Worker threads in this process, so that the injected full disk reaches them; one thread:
    # cmu_b's inference waits behind cmu_a's.
    with LocalCluster(n_workers=1, threads_per_worker=1, processes=False, resources={"GPU": 1},
                      dashboard_address=None) as cluster:
        from wsi_pipeline.cohort import tasks

        real = tasks.STAGE_FUNCTIONS["infer"]

        def infer(job):
            if job.slide_id != "cmu_a":
                return real(job)
            with DISK_FULL_AT["infer"]():
                return real(job)

        monkeypatch.setitem(tasks.STAGE_FUNCTIONS, "infer", infer)
        report = run_here(root / "slides", out, ckpt, cluster={"scheduler": cluster.scheduler_address})
    rows = pd.read_parquet(out / "manifest.parquet").set_index("slide_id")
    assert rows.loc["cmu_a", "error_type"] == "DiskFull" and rows.loc["cmu_b", "status"] == "pending"
    assert report.disk_full and "1 left pending" in report.disk_full[0]
    assert "cmu_b: infer started" not in (out / "logs" / "run.log").read_text()
    monkeypatch.undo()
    assert run_here(root / "slides", out, ckpt).ok
    assert_same_tables(clean, result_tables(out))


@pytest.fixture
def small_disk(tmp_path):
    """A real 12 MB tmpfs (the whole two-slide run takes about 9 MB); skipped where this
    process may not mount one (not root, or no CAP_SYS_ADMIN in a container)."""
    disk = tmp_path / "disk"
    disk.mkdir()
    if shutil.which("mount") is None:
        pytest.skip("no mount command")
    res = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=12m", "tmpfs", str(disk)],
                         capture_output=True, text=True, check=False)
    if res.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {(res.stderr or res.stdout).strip()}")
    try:
        yield disk
    finally:
        subprocess.run(["umount", "-l", str(disk)], capture_output=True, check=False)


def _fill(disk: Path, leave: int = 0) -> Path:
    """Fill `disk` with one file until `leave` bytes are free (0: until a write fails)."""
    filler = disk / f"filler-{len(list(disk.glob('filler-*')))}"
    with open(filler, "wb", buffering=0) as f:  # unbuffered: nothing left to fail at close
        try:
            while (room := shutil.disk_usage(disk).free - leave) > 0:
                f.write(b"\0" * min(room, 1 << 20))
            while not leave:
                f.write(b"\0" * 4096)
        except OSError as exc:
            assert exc.errno == errno.ENOSPC
    return filler


def test_a_real_full_disk_loses_nothing_and_the_rerun_gives_the_same_tables(cohort, clean, small_disk,
                                                                            monkeypatch):
    """Another writer fills the disk while the run goes on (no error is injected): the slide
    whose maps no longer fit fails cleanly, gives its space back, and the finished one is kept;
    with space freed the rerun gives an undisturbed run's tables. Then, on a disk full to the
    last byte, a manifest write fails without touching the manifest."""
    import pyarrow.parquet as pq

    from wsi_pipeline.cohort import tasks
    from wsi_pipeline.cohort.runner import DiskFullError

    root, ckpt = cohort
    out = small_disk / "out"
    real = tasks.STAGE_FUNCTIONS["infer"]
    room = 300_000  # well under cmu_b's 1.2 MB of maps
    free_at_start: list[int] = []

    def infer(job):
        if job.slide_id == "cmu_b":
            _fill(small_disk, leave=room)
            free_at_start.append(shutil.disk_usage(small_disk).free)
        return real(job)

    monkeypatch.setitem(tasks.STAGE_FUNCTIONS, "infer", infer)
    report = run_here(root / "slides", out, ckpt, summarize=False)
    assert [line.split(": free space")[0] for line in report.failure_lines()] == [
        f"cmu_b: infer: DiskFull: disk full while writing {out / 'cmu_b' / 'maps.zarr.partial'}"]
    rows = pd.read_parquet(out / "manifest.parquet").set_index("slide_id")
    assert rows["status"].to_dict() == {"cmu_a": "done", "cmu_b": "failed"}
    pd.testing.assert_frame_equal(clean["cmu_a"], pd.read_parquet(out / "cmu_a" / "nuclei.parquet"))
    assert sorted(p.name for p in (out / "cmu_b").iterdir()) == ["stages"]  # maps.zarr.partial gone
    # the space came back, less the failure record, a log line and the manifest (a page each)
    assert shutil.disk_usage(small_disk).free >= free_at_start[0] - 64 * 1024

    for filler in small_disk.glob("filler-*"):
        filler.unlink()
    monkeypatch.undo()
    report = run_here(root / "slides", out, ckpt)
    assert report.ok and report.ran_stages == 3, report.failure_lines()
    assert_same_tables(clean, result_tables(out))

    # Full to the last byte: the manifest and the cohort summary are not replaced, and stay whole.
    manifest = (out / "manifest.parquet").read_bytes()
    _fill(small_disk)
    report = run_here(root / "slides", out, ckpt)
    assert not report.ok and not report.failures
    assert [line.split(": free space")[0] for line in report.disk_full] == [  # its lock does not fit
        f"disk full while writing {out / '.manifest.lock'}",
        f"disk full while writing {out / 'cohort_summary.parquet'}"]
    assert "the manifest was not replaced (the previous one, if any, is whole)" in report.disk_full[0]
    assert (out / "manifest.parquet").read_bytes() == manifest
    assert_same_tables(clean, result_tables(out))
    assert not list(out.rglob("*.tmp")) and not (out / ".manifest.lock").exists()
    # A slide to redo cannot even be locked: one error, and no empty lock left behind.
    with pytest.raises(DiskFullError, match=f"disk full while writing {out / 'cmu_a' / 'slide.lock'}"):
        run_here(root / "slides", out, ckpt, export={"geojson": True})
    assert not list(out.glob("*/slide.lock"))
    # Room for the manifest's lock (a page) but not for the manifest itself.
    for filler in small_disk.glob("filler-*"):
        filler.unlink()
    rows = pq.read_table(out / "manifest.parquet").to_pylist()
    assert len(manifest) > 2 * 4096
    _fill(small_disk, leave=4096)
    with pytest.raises(OSError) as info:
        write_shared_manifest(out, rows)
    assert info.value.errno == errno.ENOSPC and info.value.filename == str(out / "manifest.parquet")
    assert (out / "manifest.parquet").read_bytes() == manifest
    assert not list(out.rglob("*.tmp")) and not (out / ".manifest.lock").exists()


# -- 12: evaluate --types must name every type the data has ------------------------------------
def test_evaluate_types_fewer_than_the_data_has_is_refused(tmp_path):
    from wsi_pipeline.evaluation.matio import write_instance_mat

    inst = np.zeros((32, 32), np.int32)
    for i, (r, c) in enumerate([(2, 2), (2, 18), (18, 2), (18, 18)], start=1):
        inst[r:r + 10, c:c + 10] = i
    for folder in ("pred", "true"):
        (tmp_path / folder).mkdir()
        write_instance_mat(tmp_path / folder / "img.mat", inst, np.array([1, 2, 3, 4]))
    args = ["evaluate", "--pred", str(tmp_path / "pred"), "--true", str(tmp_path / "true")]
    res = CliRunner().invoke(main, [*args, "--types", "a,b"])
    assert res.exit_code != 0 and "type id 4" in res.output and "--types names 2" in res.output
    assert not (tmp_path / "pred" / "evaluation.json").exists()
    res = CliRunner().invoke(main, [*args, "--types", "a,b,c,d"])
    assert res.exit_code == 0, res.output
    assert json.loads((tmp_path / "pred" / "evaluation.json").read_text())["type_names"]["4"] == "d"


# -- 13: errors that name the real problem -----------------------------------------------------
def test_bad_cli_flag_is_named_as_a_flag_not_as_the_defaults(cohort, tmp_path):
    root, ckpt = cohort
    res = CliRunner().invoke(main, ["run", str(root / "slides"), "-o", str(tmp_path / "out"),
                                    "--checkpoint", str(ckpt), "--workers", "-3"])
    assert res.exit_code != 0 and "--workers" in res.output and "<defaults>" not in res.output
    cfg = tmp_path / "c.yaml"
    cfg.write_text("cluster:\n  workers: 1\n")
    res = CliRunner().invoke(main, ["run", str(root / "slides"), "-o", str(tmp_path / "out"),
                                    "--checkpoint", str(ckpt), "--config", str(cfg), "--chunk-size", "7"])
    assert res.exit_code != 0 and "--chunk-size" in res.output and str(cfg) not in res.output


def test_a_folder_in_a_slide_list_is_reported_as_a_folder(cohort, tmp_path):
    root, ckpt = cohort
    (tmp_path / "scan_1.svs").mkdir()
    listing = tmp_path / "list.csv"
    listing.write_text("path\nscan_1.svs\n")
    report = run_here(listing, tmp_path / "out", ckpt)
    assert report.failure_lines() == [f"scan_1: infer: IsADirectoryError: {tmp_path / 'scan_1.svs'}: "
                                      "is a folder, not a slide file"]


def test_crops_make_valid_slides_for_this_module(shared_data, tmp_path):
    """The fixture slides are real pyramidal TIFFs (guards the cases above against a fixture
    that silently fails every slide)."""
    from wsi_pipeline.io import open_slide

    path = write_pyramid_tiff(tmp_path / "s.tif", cmu_crop(shared_data, *CMU_CROPS["cmu_a"]), 0.499)
    with open_slide(path) as slide:
        assert abs(slide.mpp - 0.499) < 1e-3
