"""`run --slide-index N` (issue 27): one slide per SLURM array task, every task into one OUT,
then `summarize` — without SLURM here: two processes at once, as two array tasks would run."""

from __future__ import annotations

import pandas as pd
import pytest

from tests.helpers.cohort_fixtures import (
    assert_same_tables,
    cli,
    cmu_cohort,
    kill_group,
    result_tables,
    run_cli,
)


@pytest.mark.slow
def test_two_array_tasks_into_one_out_then_summarize(shared_data, tmp_path):
    root, ckpt = cmu_cohort(shared_data, tmp_path)
    slides = root / "slides"
    out = tmp_path / "out_array"
    tasks = [cli("run", str(slides), "-o", str(out), "--checkpoint", str(ckpt), "--slide-index", str(i))
             for i in (0, 1)]
    try:
        outputs = [p.communicate(timeout=240)[0] for p in tasks]
    finally:
        for p in tasks:
            kill_group(p)
    for p, text in zip(tasks, outputs, strict=True):
        assert p.returncode == 0, text
        assert "1 slide: 1 to run" in text, text
    # Each task ran its own slide only, and wrote no summary (it cannot know it is the last).
    manifest = pd.read_parquet(out / "manifest.parquet").set_index("slide_id")
    assert set(manifest.index) == {"cmu_a", "cmu_b"} and (manifest["status"] == "done").all()
    assert not (out / "cohort_summary.parquet").exists()
    summarize = run_cli("summarize", str(out), "--no-plot", "--no-report")
    assert summarize.returncode == 0, summarize.stdout
    assert set(pd.read_parquet(out / "cohort_summary.parquet")["slide_id"]) == {"cmu_a", "cmu_b"}

    whole = tmp_path / "out_whole"
    proc = run_cli("run", str(slides), "-o", str(whole), "--checkpoint", str(ckpt), "--workers", "0",
                   timeout=240)
    assert proc.returncode == 0, proc.stdout
    # The summary lists slides in manifest order, which for array tasks is the order they
    # finished in; its rows must be the whole run's.
    tables = [result_tables(o) for o in (out, whole)]
    for t in tables:
        t["summary"] = t["summary"].sort_values(["slide_id", "type_id"]).reset_index(drop=True)
    assert_same_tables(*tables)


def test_index_past_the_last_slide_is_a_clear_error(shared_data, tmp_path):
    root, ckpt = cmu_cohort(shared_data, tmp_path)
    proc = run_cli("run", str(root / "slides"), "-o", str(tmp_path / "out"), "--checkpoint", str(ckpt),
                   "--slide-index", "2")
    assert proc.returncode != 0
    assert f"--slide-index 2: {root / 'slides'} has 2 slide(s) (indices 0-1)" in proc.stdout
