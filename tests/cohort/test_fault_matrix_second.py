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
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from tests.helpers.cohort_fixtures import (
    assert_same_tables,
    cmu_cohort,
    kill_group,
    result_tables,
    run_cli,
    wait_for,
)
from wsi_pipeline.cohort import integrity, locks
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


# -- locks ------------------------------------------------------------------------------------
def _in_new_pid_namespace(code: str, *args: str) -> subprocess.Popen:
    """`python -c code args` as pid 1 of a new PID namespace (a container sharing this host's
    name); skips where namespaces cannot be made (not root, no user namespaces)."""
    probe = subprocess.run(["unshare", "--pid", "--fork", "--mount-proc", "true"], capture_output=True)
    if probe.returncode != 0:
        pytest.skip(f"no PID namespaces here (unshare: {probe.stderr.decode().strip()})")
    return subprocess.Popen(["unshare", "--pid", "--fork", "--mount-proc", sys.executable, "-c", code, *args],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)


HOLD_IN_NAMESPACE = """
import os, sys, time
from pathlib import Path
from wsi_pipeline.cohort import locks
locks.acquire(Path(sys.argv[1]), locks.me("another container"))
print("held", os.getpid(), flush=True)
time.sleep(120)
"""


def test_a_live_lock_from_another_pid_namespace_on_this_host_is_not_taken_over(cohort, tmp_path):
    """Two containers sharing the host name (docker --network host): run A, pid 1 of its own
    PID namespace, holds cmu_a. Run B must not read "pid 1" in its own namespace: cmu_a is
    skipped untouched, named with the namespace, and taken over only with --break-locks."""
    root, ckpt = cohort
    out = tmp_path / "out"
    lock = out / "cmu_a" / "slide.lock"
    lock.parent.mkdir(parents=True)
    other = _in_new_pid_namespace(HOLD_IN_NAMESPACE, str(lock))
    try:
        assert other.stdout is not None
        assert other.stdout.readline().startswith("held 1"), "the holder did not start"
        holder = locks.read_holder(lock)
        assert holder is not None and holder.pid == 1 and holder.pid_ns != locks.me().pid_ns
        report = run_here(root / "slides" / "cmu_a.tif", out, ckpt)
        assert [sid for sid, *_ in report.locked] == ["cmu_a"] and report.blocked
        assert "PID namespace" in report.locked_lines()[0]
        assert not (out / "cmu_a" / "stages").exists()
        assert locks.read_holder(lock) == holder  # still A's
        report = run_here(root / "slides" / "cmu_a.tif", out, ckpt, break_locks=True)
        assert report.ok and not report.locked
    finally:
        kill_group(other)


def test_locks_of_another_boot_or_namespace_are_foreign_and_old_locks_still_judged(tmp_path):
    """Without namespaces to make: a dead pid recorded under another boot id or another PID
    namespace is not "dead on this host" (its pid means another process there)."""
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    me = locks.me()
    for other in ({"boot_id": "another-boot"}, {"pid_ns": (me.pid_ns or 0) + 1}):
        lock = tmp_path / f"{sorted(other)[0]}.lock"
        locks.acquire(lock, locks.LockHolder(**{**me.__dict__, "pid": dead.pid, "token": "t", **other}))
        with pytest.raises(locks.LockHeld, match="--break-locks"):
            locks.acquire(lock, me)
        locks.acquire(lock, me, break_foreign=True)
        assert locks.holds(lock, me.token)


def test_sigterm_releases_every_lock_and_the_requeued_run_finishes(cohort, finished, tmp_path):
    """A SLURM time limit: SIGTERM while cmu_a is in its export stage and cmu_b not started.
    The run exits 143 within the grace period, saying so, with no lock left behind (not even
    cmu_b's, never started); the requeued job (another process) runs both slides to the same
    tables as an undisturbed run."""
    from tests.cohort.test_fault_matrix import PAUSE_HOOK

    root, ckpt = cohort
    out = tmp_path / "out"
    hook = tmp_path / "paused_run.py"
    hook.write_text(PAUSE_HOOK)
    flag = tmp_path / "paused"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "FAULT_PAUSE_STAGE": "export", "FAULT_PAUSE_FLAG": str(flag)}
    run = subprocess.Popen([sys.executable, str(hook), "run", str(root / "slides"), "-o", str(out),
                            "--checkpoint", str(ckpt), "--workers", "0"], env=env,
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                           start_new_session=True)
    try:
        assert wait_for(flag.exists, 120), f"export was never reached: {run.communicate(timeout=5)[0]}"
        assert (out / "cmu_a" / "slide.lock").exists() and (out / "cmu_b" / "slide.lock").exists()
        t0 = time.monotonic()
        run.send_signal(signal.SIGTERM)
        output, _ = run.communicate(timeout=30)
        assert time.monotonic() - t0 < 25  # SLURM's default grace (KillWait) is 30 s
    finally:
        kill_group(run)
    assert run.returncode == 128 + signal.SIGTERM, output
    assert "stopped by SIGTERM" in output
    assert not list(out.glob("*/slide.lock")) and not (out / ".manifest.lock").exists()
    rows = pd.read_parquet(out / "manifest.parquet").set_index("slide_id")
    assert set(rows["status"]) == {"pending"}
    report = run_here(root / "slides", out, ckpt)
    assert report.ok and not report.locked
    assert_same_tables(finished[1], result_tables(out))


def test_a_run_that_did_nothing_because_of_locks_exits_non_zero(cohort, tmp_path):
    """Every slide left to do held from another node: the run says nothing was run and exits 3,
    not 0 with every slide pending."""
    root, ckpt = cohort
    out = tmp_path / "out"
    for sid in ("cmu_a", "cmu_b"):
        locks.acquire(out / sid / "slide.lock", locks.LockHolder(
            host="node-17", pid=4242, started_at="2026-12-07T01:00:00+0000", token=sid))
    proc = run_cli("run", str(root / "slides"), "-o", str(out), "--checkpoint", str(ckpt), "--workers", "0")
    assert proc.returncode == 3, proc.stdout
    assert "nothing was run" in proc.stdout and proc.stdout.count("SKIPPED") == 2


def test_a_manifest_lock_from_a_clock_ahead_expires_and_break_locks_takes_it(cohort, tmp_path):
    """A .manifest.lock left by a dead run on a node whose clock is an hour ahead (its mtime in
    the future): it expires on this host's clock (a short expiry here), and --break-locks takes
    it over at once; a run on that OUT is not stopped by it."""
    from wsi_pipeline.cohort.manifest_merge import MANIFEST_LOCK

    root, ckpt = cohort
    out = tmp_path / "out"
    out.mkdir()
    lock = out / MANIFEST_LOCK
    dead = locks.LockHolder(host="node-ahead", pid=99, started_at="2026-12-07T09:00:00+0000", token="dead")

    def leave() -> None:
        locks.acquire(lock, dead)
        ahead = time.time() + 3600
        os.utime(lock, (ahead, ahead))

    leave()
    mine = locks.me()
    with locks.locked(lock, mine, max_age_s=1.0, timeout_s=10):
        assert locks.holds(lock, mine.token)
    leave()
    report = run_here(root / "slides" / "cmu_a.tif", out, ckpt, break_locks=True)
    assert report.ok and not lock.exists()


# -- slide identity ---------------------------------------------------------------------------
def test_an_id_once_given_is_kept_when_a_slide_of_the_same_name_arrives_later(cohort, tmp_path):
    """An incremental cohort: batch1/S1.tif finished as S1; later batch2/S1.tif (another
    slide) arrives. S1 keeps its id and its results (nothing redone), the newcomer gets its
    own id, and the manifest lists each file once."""
    root, ckpt = cohort
    slides, out = tmp_path / "cohort", tmp_path / "out"
    (slides / "batch1").mkdir(parents=True)
    shutil.copy(root / "slides" / "cmu_a.tif", slides / "batch1" / "S1.tif")
    assert run_here(slides, out, ckpt).ok
    marker = (out / "S1" / "stages" / "infer.json").read_bytes()
    (slides / "batch2").mkdir()
    shutil.copy(root / "slides" / "cmu_b.tif", slides / "batch2" / "S1.tif")
    report = run_here(slides, out, ckpt)
    assert report.ok and report.ran_stages == 3  # the newcomer's three stages only
    rows = pd.read_parquet(out / "manifest.parquet").set_index("slide_id")
    assert len(rows) == 2 and rows["path"].is_unique
    assert rows.loc["S1", "path"] == str(slides / "batch1" / "S1.tif")
    assert rows.loc["batch2__S1", "path"] == str(slides / "batch2" / "S1.tif")
    assert (out / "S1" / "stages" / "infer.json").read_bytes() == marker
    summary = pd.read_parquet(out / "cohort_summary.parquet")
    assert sorted(summary["slide_id"].unique()) == ["S1", "batch2__S1"]


def _same_size(a: Path, b: Path) -> None:
    """Pad the smaller TIFF with zeros (readers ignore trailing bytes) to the other's size."""
    small, big = sorted((a, b), key=lambda p: p.stat().st_size)
    with open(small, "ab") as fh:
        fh.write(b"\0" * (big.stat().st_size - small.stat().st_size))


def test_a_slide_replaced_by_another_scan_of_the_same_size_and_mtime_is_redone(cohort, finished, tmp_path):
    """`cp -p` / `rsync -a` of another scan of identical size over a finished slide: the
    content sample in the fingerprint differs, so the slide is redone and reports the new
    scan's nuclei, not the old one's."""
    root, ckpt = cohort
    slides, out = tmp_path / "slides", tmp_path / "out"
    slides.mkdir()
    a, b = tmp_path / "a.tif", tmp_path / "b.tif"
    shutil.copy(root / "slides" / "cmu_a.tif", a)
    shutil.copy(root / "slides" / "cmu_b.tif", b)
    _same_size(a, b)
    shutil.copy2(a, slides / "S.tif")
    assert run_here(slides, out, ckpt).ok
    st = (slides / "S.tif").stat()
    (slides / "S.tif").write_bytes(b.read_bytes())
    os.utime(slides / "S.tif", ns=(st.st_atime_ns, st.st_mtime_ns))
    assert (slides / "S.tif").stat().st_size == st.st_size
    report = run_here(slides, out, ckpt)
    assert report.ok and report.ran_stages == 3
    before = pd.read_parquet(finished[0] / "manifest.parquet").set_index("slide_id")
    expected = before.loc["cmu_b", "n_nuclei"]
    assert pd.read_parquet(out / "manifest.parquet")["n_nuclei"].tolist() == [expected]


def test_markers_of_the_fingerprint_without_content_are_upgraded_not_redone(cohort, finished, tmp_path):
    """An OUT finished by a version whose fingerprint was size + mtime: the upgrade keeps every
    finished stage (nothing is inferred again) and records the new hashes."""
    import json

    from wsi_pipeline.cohort.stages import STAGES, legacy_fingerprint, stage_hashes

    root, ckpt = cohort
    out = _copy(finished[0], tmp_path / "out")
    cfg = load_run_config(None, {"checkpoint": str(ckpt), "cluster": {"workers": 0}})
    runner = CohortRunner(root / "slides", out, cfg)
    for entry in runner.entries:
        old = stage_hashes(runner._stage_configs(entry), runner.model_sha256, legacy_fingerprint(entry.path))
        for stage in STAGES:
            marker = out / entry.slide_id / "stages" / f"{stage}.json"
            marker.write_text(json.dumps({**json.loads(marker.read_text()), "config_hash": old[stage]}))
    assert not any(p.pending for p in CohortRunner(root / "slides", out, cfg).plan())  # the dry run
    report = run_here(root / "slides", out, ckpt)
    assert report.ok and report.ran_stages == 0
    assert run_here(root / "slides", out, ckpt).ran_stages == 0
    assert_same_tables(finished[1], result_tables(out))


def test_slide_lists_saved_by_spreadsheets_are_read(cohort, tmp_path):
    """A list saved by Excel/LibreOffice: a byte-order mark, CRLF, quoted cells, `;` as the
    separator, Windows separators in relative paths; or UTF-16, or Windows-1252 with a name
    that is not ASCII. Every slide is found, with its mpp."""
    from wsi_pipeline.cohort.discover import discover

    root, _ = cohort
    folder = tmp_path / "lists"
    (folder / "slides").mkdir(parents=True)
    for name in ("cmu_a.tif", "cmu_b.tif", "café.tif"):
        shutil.copy(root / "slides" / "cmu_a.tif", folder / "slides" / name)
    text = '"path";"mpp"\r\n"slides\\cmu_a.tif";"0,5"\r\n"slides\\cmu_b.tif";""\r\n"slides\\café.tif";\r\n'
    for name, data in {"bom_semicolon.csv": b"\xef\xbb\xbf" + text.replace('"0,5"', '').encode(),
                       "utf16.csv": text.replace(";", "\t").replace('"0,5"', "").encode("utf-16"),
                       "cp1252.csv": text.replace('"0,5"', "").encode("cp1252")}.items():
        listing = folder / name
        listing.write_bytes(data)
        found = discover(listing)
        assert sorted(e.slide_id for e in found) == ["café", "cmu_a", "cmu_b"], name
        assert all(e.path.is_file() for e in found), name


def test_windows_names_links_to_other_disks_and_broken_links_each_one_line(cohort, tmp_path, caplog):
    """A cohort from a Windows share (a name that is not UTF-8) and from links to other disks
    (a linked folder, a link whose disk is not mounted): every readable slide runs, the
    broken link is a failed row naming it, and the manifest stores every name."""
    root, ckpt = cohort
    slides, other_disk, out = tmp_path / "cohort", tmp_path / "other_disk", tmp_path / "out"
    slides.mkdir()
    other_disk.mkdir()
    windows_name = os.fsdecode(b"Pr\xe9paration.tif")  # Latin-1 bytes, as an SMB mount may show them
    shutil.copy(root / "slides" / "cmu_a.tif", slides / windows_name)
    shutil.copy(root / "slides" / "cmu_b.tif", other_disk / "linked.tif")
    (slides / "from_other_disk").symlink_to(other_disk, target_is_directory=True)
    (slides / "unmounted.tif").symlink_to(tmp_path / "not_mounted" / "x.tif")
    with caplog.at_level("WARNING", logger="wsi_pipeline"):
        report = run_here(slides, out, ckpt)
    lines = [r.getMessage() for r in caplog.records]
    assert any("unmounted.tif" in line and "does not exist" in line for line in lines)
    rows = pd.read_parquet(out / "manifest.parquet").set_index("slide_id")
    assert rows.loc["Pr_paration", "status"] == "done" and "\\xe9" in rows.loc["Pr_paration", "path"]
    assert rows.loc["linked", "status"] == "done"
    assert rows.loc["unmounted", "status"] == "failed" and "unmounted.tif" in rows.loc["unmounted", "error"]
    assert [f["slide_id"] for f in report.failures] == ["unmounted"]


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads any folder: an unreadable one cannot be made")
def test_an_unreadable_folder_is_named_and_the_other_slides_run(cohort, tmp_path, caplog):
    root, ckpt = cohort
    slides, out = tmp_path / "cohort", tmp_path / "out"
    (slides / "closed").mkdir(parents=True)
    shutil.copy(root / "slides" / "cmu_a.tif", slides / "a.tif")
    shutil.copy(root / "slides" / "cmu_b.tif", slides / "closed" / "b.tif")
    (slides / "closed").chmod(0)
    try:
        with caplog.at_level("WARNING", logger="wsi_pipeline"):
            report = run_here(slides, out, ckpt)
    finally:
        (slides / "closed").chmod(0o755)
    assert report.ok and [r["slide_id"] for r in report.rows] == ["a"]
    assert any("closed" in r.getMessage() and "cannot be read" in r.getMessage() for r in caplog.records)


# -- inputs and tools that gave wrong results quietly -----------------------------------------
def _greyscale_tiff(path: Path, rgb, mpp: float) -> Path:
    """An 8-bit greyscale export of an H&E crop: one channel, tiled, with its resolution."""
    import numpy as np
    import tifffile

    grey = (rgb.astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32)).astype(np.uint8)
    res = 1e4 / mpp
    with tifffile.TiffWriter(path) as tw:
        for level, img in enumerate((grey, grey[::2, ::2])):
            tw.write(np.ascontiguousarray(img), tile=(256, 256), photometric="minisblack",
                     resolution=(res / 2**level, res / 2**level), resolutionunit="CENTIMETER",
                     subfiletype=1 if level else 0)
    return path


def test_a_greyscale_export_is_refused_not_reported_as_no_tissue(shared_data, cohort, tmp_path):
    """An 8-bit greyscale export of an H&E section: failed with one line saying it is not an
    RGB scan (never `no_tissue` with exit 0); the other slide runs."""
    from tests.helpers.cohort_fixtures import CMU_CROPS, MPP, cmu_crop

    root, ckpt = cohort
    slides, out = tmp_path / "slides", tmp_path / "out"
    slides.mkdir()
    _greyscale_tiff(slides / "grey.tif", cmu_crop(shared_data, *CMU_CROPS["cmu_a"]), MPP)
    shutil.copy(root / "slides" / "cmu_b.tif", slides / "cmu_b.tif")
    cfg = load_run_config(None, {"checkpoint": str(ckpt), "cluster": {"workers": 0}})
    from wsi_pipeline.cohort.preview import preview

    flags = {it.slide_id: it.flag for it in preview(CohortRunner(slides, out, cfg, dry_run=True))}
    assert flags["grey"] is not None and flags["grey"].startswith("not RGB") and flags["cmu_b"] is None
    proc = run_cli("run", str(slides), "-o", str(out), "--checkpoint", str(ckpt), "--workers", "0")
    assert proc.returncode == 1, proc.stdout
    rows = pd.read_parquet(out / "manifest.parquet").set_index("slide_id")
    assert rows.loc["grey", "status"] == "failed" and "not an RGB H&E scan" in rows.loc["grey", "error"]
    assert rows.loc["cmu_b", "status"] == "done"
    assert "FAILED grey" in proc.stdout and "greyscale" in proc.stdout


def test_a_checkpoint_with_non_finite_weights_is_refused_at_load(cohort, finished, tmp_path):
    """best.pt of a training whose loss went NaN: refused with one line naming the file and
    the tensors, before any slide is touched."""
    import torch

    from wsi_pipeline.model import CheckpointError, load_checkpoint

    root, ckpt = cohort
    payload = torch.load(ckpt, weights_only=True)
    name = next(k for k, v in payload["state_dict"].items() if v.is_floating_point())
    payload["state_dict"][name] = torch.full_like(payload["state_dict"][name], float("nan"))
    bad = tmp_path / "best.pt"
    torch.save(payload, bad)
    with pytest.raises(CheckpointError, match="NaN or infinite") as caught:
        load_checkpoint(bad)
    assert str(bad) in str(caught.value) and name in str(caught.value)
    out = tmp_path / "out"
    proc = run_cli("run", str(root / "slides"), "-o", str(out), "--checkpoint", str(bad), "--workers", "0")
    assert proc.returncode == 1 and "NaN or infinite" in proc.stdout and "Traceback" not in proc.stdout
    assert not [p for p in out.rglob("*") if p.is_file() and p.parent != out / "logs"]  # nothing written


def test_export_model_never_writes_over_its_input(cohort, tmp_path):
    """`export-model best.pt best.pt` (or through a link): refused, the fp32 file untouched."""
    root, ckpt = cohort
    src = tmp_path / "best.pt"
    shutil.copy(ckpt, src)
    (tmp_path / "link.pt").symlink_to(src)
    before = src.read_bytes()
    for dest in (src, tmp_path / "link.pt", tmp_path / "." / "best.pt"):
        proc = run_cli("export-model", str(src), str(dest))
        assert proc.returncode == 1 and "never writes over its input" in proc.stdout, proc.stdout
    assert src.read_bytes() == before
    proc = run_cli("export-model", str(src), str(tmp_path / "shipped.pt"))
    assert proc.returncode == 0 and (tmp_path / "shipped.pt").is_file()


def test_a_key_given_twice_in_a_config_file_is_an_error_naming_it(cohort, finished, tmp_path):
    """`postproc:` twice in a run YAML: an error naming the key and both lines, nothing run."""
    from wsi_pipeline.config import ConfigError, load_config
    from wsi_pipeline.model.config import ModelConfig

    root, ckpt = cohort
    cfg = tmp_path / "run.yaml"
    cfg.write_text("postproc:\n  ns_threshold: 0.6\nexport:\n  geojson: true\npostproc:\n  min_area_um2: 5\n")
    out = tmp_path / "out"
    proc = run_cli("run", str(root / "slides"), "-o", str(out), "--checkpoint", str(ckpt),
                   "--config", str(cfg))
    assert proc.returncode == 1, proc.stdout
    assert "duplicate key 'postproc' at line 5 (first at line 1)" in proc.stdout and str(cfg) in proc.stdout
    assert not out.exists()
    nested = tmp_path / "model.yaml"
    nested.write_text("width: 8\nencoder: resnet18\nwidth: 16\n")
    with pytest.raises(ConfigError, match="duplicate key 'width'"):
        load_config(nested, ModelConfig)


def test_a_rerun_without_geojson_keeps_the_geojson_an_earlier_run_wrote(cohort, finished, tmp_path, caplog):
    """`run --geojson`, then a plain rerun (export redone): the GeoJSON is set aside as
    nuclei.previous.geojson.gz with a warning, not deleted."""
    root, ckpt = cohort
    out = _copy(finished[0], tmp_path / "out")
    assert run_here(root / "slides", out, ckpt, export={"geojson": True}).ok
    geojson = out / "cmu_a" / "nuclei.geojson.gz"
    written = geojson.read_bytes()
    with caplog.at_level("WARNING", logger="wsi_pipeline"):
        assert run_here(root / "slides", out, ckpt).ok
    kept = out / "cmu_a" / "nuclei.previous.geojson.gz"
    assert not geojson.exists() and kept.read_bytes() == written
    assert any("nuclei.geojson.gz" in r.getMessage() and str(kept) in r.getMessage() for r in caplog.records)


def test_a_slide_folder_this_user_cannot_write_fails_that_slide_alone(cohort, finished, tmp_path):
    """A colleague's slide folder, read-only for this run (a read-only bind mount in a mount
    namespace, which binds root as well): that slide fails with one line naming the folder,
    the other slide is redone, no traceback, exit 1."""
    probe = subprocess.run(["unshare", "-m", "true"], capture_output=True)
    if probe.returncode != 0:
        pytest.skip(f"no mount namespaces here (unshare: {probe.stderr.decode().strip()})")
    root, ckpt = cohort
    out = _copy(finished[0], tmp_path / "out")
    folder = out / "cmu_a"
    config = tmp_path / "c.yaml"
    script = (f'mount --bind "{folder}" "{folder}" && mount -o remount,bind,ro "{folder}" && '
              f'exec "{sys.executable}" -c "from wsi_pipeline.cli import main; main()" run '
              f'"{root / "slides"}" -o "{out}" --checkpoint "{ckpt}" --workers 0 --config "{config}"')
    (tmp_path / "c.yaml").write_text("postproc:\n  ns_threshold: 0.6\n")
    proc = subprocess.run(["unshare", "-m", "sh", "-c", script], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    output = proc.stdout + proc.stderr
    assert proc.returncode == 1, output
    assert "Traceback" not in output and "FAILED cmu_a" in output
    assert "cannot write the slide's folder" in output
    rows = pd.read_parquet(out / "manifest.parquet").set_index("slide_id")
    assert rows.loc["cmu_b", "status"] == "done" and rows.loc["cmu_a", "status"] == "failed"


def test_a_scheduler_address_that_is_an_http_port_fails_within_connect_timeout(cohort, tmp_path):
    """`--scheduler` pointing at a web server (the dashboard's port): one line within
    cluster.connect_timeout_s, not a hang."""
    import socket

    root, ckpt = cohort
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = subprocess.Popen([sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        assert wait_for(lambda: socket.socket().connect_ex(("127.0.0.1", port)) == 0, 30)
        cfg = tmp_path / "c.yaml"
        cfg.write_text("cluster:\n  connect_timeout_s: 3\n")
        t0 = time.monotonic()
        proc = run_cli("run", str(root / "slides"), "-o", str(tmp_path / "out"), "--checkpoint", str(ckpt),
                       "--scheduler", f"tcp://127.0.0.1:{port}", "--config", str(cfg), timeout=120)
        elapsed = time.monotonic() - t0
    finally:
        server.kill()
        server.wait()
    assert proc.returncode == 1 and "not a Dask scheduler" in proc.stdout, proc.stdout
    assert elapsed < 60


# -- also (as a new user meets them) ----------------------------------------------------------
def test_the_progress_bar_ends_with_the_final_lines_failed_count(cohort, tmp_path):
    """A cohort with a file that does not open: the bar's last "N done, M failed" says what the
    final line says (it said "0 failed" beside "1 failed")."""
    import re

    root, ckpt = cohort
    slides = tmp_path / "slides"
    slides.mkdir()
    for name in ("cmu_a.tif", "cmu_b.tif"):
        shutil.copy(root / "slides" / name, slides / name)
    (slides / "text.svs").write_text("this is not a slide\n")
    proc = run_cli("run", str(slides), "-o", str(tmp_path / "out"), "--checkpoint", str(ckpt),
                   "--workers", "0")
    assert proc.returncode == 1, proc.stdout
    counters = re.findall(r"(\d+) done, (\d+) failed", proc.stdout)
    assert counters, proc.stdout
    assert counters[-1] == ("2", "1")
    assert "3 slides (2 done, 1 failed)" in proc.stdout


def test_a_moved_cohort_keeps_its_ids_and_results(cohort, tmp_path):
    """The cohort folder moved (or mounted elsewhere) after a run: the recorded paths are gone,
    the files get their ids back by the rules, and nothing is redone."""
    root, ckpt = cohort
    first, out = tmp_path / "first", tmp_path / "out"
    shutil.copytree(root / "slides", first / "slides", copy_function=shutil.copy2)
    assert run_here(first / "slides", out, ckpt).ok
    moved = tmp_path / "moved"
    first.rename(moved)
    report = run_here(moved / "slides", out, ckpt)
    assert report.ok and report.ran_stages == 0
    rows = pd.read_parquet(out / "manifest.parquet")
    assert sorted(rows["slide_id"]) == ["cmu_a", "cmu_b"]
    assert all(p.startswith(str(moved)) for p in rows["path"])
