"""A rerun of finished output does no model work; a changed post-processing setting redoes
post-processing and export, not inference. (A run killed inside a stage, then rerun:
tests/cohort/test_fault_matrix.py.)"""

from __future__ import annotations

import json
import time

import pytest

from tests.helpers.cohort_fixtures import CMU_CROPS, cmu_cohort, run_cli


@pytest.fixture(scope="module")
def cohort(shared_data, tmp_path_factory):
    return cmu_cohort(shared_data, tmp_path_factory.mktemp("resume"))


def _args(root, ckpt, out):
    return ("run", str(root / "slides"), "-o", str(out), "--checkpoint", str(ckpt), "--workers", "0")


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
