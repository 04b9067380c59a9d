"""Kill (SIGKILL) a run during inference and again during post-processing: the rerun finishes
and its tables equal an uninterrupted run's. A rerun of finished output does no model work."""

from __future__ import annotations

import json
import time

import pytest
from cohort_fixtures import (
    CMU_CROPS,
    assert_same_tables,
    cli,
    cmu_cohort,
    kill_group,
    result_tables,
    run_cli,
    wait_for,
)


@pytest.fixture(scope="module")
def cohort(shared_data, tmp_path_factory):
    return cmu_cohort(shared_data, tmp_path_factory.mktemp("resume"))


def _args(root, ckpt, out):
    # In-process (--workers 0): the kill hits the stage itself, not a cluster round-trip.
    return ("run", str(root / "slides"), "-o", str(out), "--checkpoint", str(ckpt), "--workers", "0")


def _log_has(out, text):
    def check():
        return any(text in p.read_text() for p in (out / "logs").glob("*.log")
                   if p.name != "run.log")
    return check


def test_kill_during_infer_and_postproc_then_resume(cohort):
    root, ckpt = cohort
    clean = root / "out_clean"
    assert run_cli(*_args(root, ckpt, clean)).returncode == 0

    out = root / "out_killed"
    # 1) killed while the first slide's tiles are being inferred into maps.zarr.partial
    p = cli(*_args(root, ckpt, out))
    assert wait_for(lambda: any(out.glob("*/maps.zarr.partial/ns")), 60), "inference never started"
    kill_group(p)
    assert not any(out.glob("*/stages/infer.json")), "interrupted inference must not be marked done"
    # 2) killed during post-processing of a slide whose inference finished
    p = cli(*_args(root, ckpt, out))
    assert wait_for(_log_has(out, "postproc started"), 60), "post-processing never started"
    kill_group(p)
    killed_in_postproc = [d.name for d in out.iterdir() if (d / "stages" / "infer.json").exists()
                          and not (d / "stages" / "postproc.json").exists()]
    assert killed_in_postproc, "the kill should have landed inside post-processing"
    # 3) the rerun finishes the rest and nothing differs from the clean run
    rerun = run_cli(*_args(root, ckpt, out))
    assert rerun.returncode == 0, rerun.stdout
    assert_same_tables(result_tables(clean), result_tables(out))
    assert not list(out.rglob("*.tmp")) and not list(out.glob("*/maps.zarr.partial"))


def test_rerun_of_finished_output_does_no_model_work(cohort):
    root, ckpt = cohort
    out = root / "out_rerun"
    assert run_cli(*_args(root, ckpt, out)).returncode == 0
    markers = {p: p.read_text() for p in out.glob("*/stages/*.json")}
    t0 = time.monotonic()
    again = run_cli(*_args(root, ckpt, out))
    seconds = time.monotonic() - t0
    assert again.returncode == 0, again.stdout
    assert "2 slides: 0 to run, 2 already finished" in again.stdout
    assert "loading model" not in again.stdout and "started on" not in again.stdout
    assert {p: p.read_text() for p in out.glob("*/stages/*.json")} == markers
    assert seconds < 15, f"rerun took {seconds:.1f} s"

    # A post-processing setting changed: post-processing and export are redone, inference is not.
    cfg = root / "changed.yaml"
    cfg.write_text("postproc:\n  ns_threshold: 0.6\n")
    redo = run_cli(*_args(root, ckpt, out), "--config", str(cfg))
    assert redo.returncode == 0, redo.stdout
    assert "loading model" not in redo.stdout
    for slide in CMU_CROPS:
        stages = out / slide / "stages"
        assert (stages / "infer.json").read_text() == markers[stages / "infer.json"]
        assert json.loads((stages / "postproc.json").read_text())["config_hash"] != json.loads(
            markers[stages / "postproc.json"])["config_hash"]
