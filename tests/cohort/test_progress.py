"""Cohort (Dask) mode on the console (#12 item 8): stage tasks report their start and their
tiles/chunks to the driver, which shows a bar per running slide stage with an ETA and counters
of done and failed slides; Dask's own log lines and warnings go to the run log."""

from __future__ import annotations

import logging
import re
import warnings

import pytest

from tests.helpers.cohort_fixtures import cmu_cohort
from wsi_pipeline.cli import ConsoleHandler
from wsi_pipeline.cli.run import _Progress
from wsi_pipeline.cohort.config import load_run_config
from wsi_pipeline.cohort.runner import CohortRunner, _distributed_to_run_log
from wsi_pipeline.cohort.tasks import log_to_file


def _row(slide_id: str, status: str) -> dict:
    return {"slide_id": slide_id, "status": status}


def test_stage_progress_is_a_bar_with_eta_and_counters(capsys):
    progress = _Progress()
    progress("planned", {"total": 2, "todo": 2, "skipped_failed": 0})
    progress("stage_started", {"slide_id": "a", "stage": "infer"})
    progress("stage_progress", {"slide_id": "a", "stage": "infer", "done": 3, "total": 40,
                                "unit": "tile"})
    progress("stage_progress", {"slide_id": "a", "stage": "infer", "done": 9, "total": 40,
                                "unit": "tile"})
    assert progress.stage_bars["a"].n == 9 and progress.stage_bars["a"].total == 40
    progress("stage_progress", {"slide_id": "b", "stage": "postproc", "done": 1, "total": 4,
                                "unit": "chunk"})
    progress("slide_done", {"row": _row("a", "failed"), "ran": True})
    assert "a" not in progress.stage_bars
    # a late event of a finished slide draws no bar again
    progress("stage_progress", {"slide_id": "a", "stage": "infer", "done": 40, "total": 40,
                                "unit": "tile"})
    assert "a" not in progress.stage_bars
    assert progress.bar.postfix.startswith("0 done, 1 failed")
    progress("slide_done", {"row": _row("b", "done"), "ran": True})
    assert progress.bar is None  # all slides reported: the bars are gone
    err = capsys.readouterr().err
    assert "a: infer" in err and "9/40" in err and "tile" in err
    assert re.search(r"9/40 \[[0-9:]+<[0-9:?]+", err)  # elapsed<remaining: the ETA
    assert "b: postproc" in err and "chunk" in err
    assert "1 done, 1 failed" in err


def test_cluster_line_says_why_there_is_no_dashboard(capsys):
    progress = _Progress()
    progress("cluster", {"external": False, "dashboard": None, "infer_slots": 1,
                         "dashboard_note": "not available: install bokeh to get it"})
    assert "dashboard: not available: install bokeh to get it" in capsys.readouterr().err


def test_dask_warnings_go_to_the_run_log_not_the_console(tmp_path, capsys):
    root = logging.getLogger()
    console = ConsoleHandler(level=logging.WARNING)
    root.addHandler(console)
    run_log = tmp_path / "run.log"
    try:
        with log_to_file(run_log, this_thread_only=False), _distributed_to_run_log():
            logging.getLogger("distributed.scheduler").warning(
                "Port 8787 is already in use. Hosting the HTTP server on port 40001 instead")
            warnings.warn("Dask needs bokeh>=3.1.0 for the dashboard", UserWarning, stacklevel=1)
    finally:
        root.removeHandler(console)
    err = capsys.readouterr().err
    assert "Port 8787" not in err and "bokeh" not in err
    text = run_log.read_text()
    assert "Port 8787 is already in use" in text and "bokeh" in text
    assert logging.getLogger("distributed").propagate  # restored


@pytest.fixture(scope="module")
def cohort(shared_data, tmp_path_factory):
    return cmu_cohort(shared_data, tmp_path_factory.mktemp("progress"))


def test_a_cluster_run_reports_stages_and_tiles_to_the_driver(cohort, tmp_path):
    from distributed import LocalCluster

    root, ckpt = cohort
    events: list[tuple[str, dict]] = []
    with LocalCluster(n_workers=1, threads_per_worker=2, processes=False, resources={"GPU": 1},
                      dashboard_address=None) as cluster:
        cfg = load_run_config(None, {"checkpoint": str(ckpt),
                                     "cluster": {"scheduler": cluster.scheduler_address}})
        report = CohortRunner(root / "slides", tmp_path / "out", cfg,
                              on_event=lambda kind, info: events.append((kind, info))).run()
    assert report.ok, report.failure_lines()
    slides = {r["slide_id"] for r in report.rows}
    started = {(i["slide_id"], i["stage"]) for k, i in events if k == "stage_started"}
    assert started == {(s, st) for s in slides for st in ("infer", "postproc", "export")}
    final = {(i["slide_id"], i["stage"], i["unit"]) for k, i in events
             if k == "stage_progress" and i["done"] == i["total"]}
    assert final == {(s, st, u) for s in slides for st, u in (("infer", "tile"), ("postproc", "chunk"))}
    tiles = {i["slide_id"]: i["total"] for k, i in events if k == "stage_progress" and i["stage"] == "infer"}
    for r in report.rows:
        assert tiles[r["slide_id"]] == r["n_tiles"]
    order = [k for k, i in events if i.get("slide_id", i.get("row", {}).get("slide_id")) == "cmu_a"]
    assert order.index("stage_started") < order.index("stage_progress") < order.index("slide_done")


def test_stage_progress_observers_watch_a_run_in_this_process(cohort, tmp_path, monkeypatch):
    """tasks.STAGE_PROGRESS: every step of infer and postproc, in the run's own process too
    (no Dask worker), ending at done == total; an observer's error is the stage's failure."""
    from wsi_pipeline.cohort import tasks

    root, ckpt = cohort
    seen: list[tuple[str, str, int, int]] = []
    monkeypatch.setattr(tasks, "STAGE_PROGRESS", [lambda *step: seen.append(step)])
    cfg = load_run_config(None, {"checkpoint": str(ckpt), "cluster": {"workers": 0}})
    report = CohortRunner(root / "slides", tmp_path / "out", cfg).run()
    assert report.ok, report.failure_lines()
    last = {(s, st): (d, t) for s, st, d, t in seen}
    slides = {r["slide_id"] for r in report.rows}
    assert set(last) == {(s, st) for s in slides for st in ("infer", "postproc")}
    assert all(done == total > 0 for done, total in last.values())
    tiles = {s: t for (s, st), (_, t) in last.items() if st == "infer"}
    assert tiles == {r["slide_id"]: r["n_tiles"] for r in report.rows}

    def refuse(slide_id, stage, done, total):
        if stage == "postproc":
            raise RuntimeError("observer says no")

    monkeypatch.setattr(tasks, "STAGE_PROGRESS", [refuse])
    report = CohortRunner(root / "slides", tmp_path / "out2", cfg).run()
    assert not report.ok
    assert {r["failed_stage"] for r in report.rows} == {"postproc"}
    assert all("observer says no" in r["error"] for r in report.rows)
