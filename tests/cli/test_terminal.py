"""What `wsi-pipeline run` shows on the terminal: defaults in --help, lines that never glue onto
a progress bar, "1 slide", one line per failed slide (its traceback in the slide log), and no
output folder left behind by a run that could not start."""

from __future__ import annotations

import io
import logging
from types import SimpleNamespace

import click
import pytest
from click.testing import CliRunner
from tqdm import tqdm

from tests.helpers.cohort_fixtures import tiny_checkpoint
from wsi_pipeline.cli import ConsoleHandler, main
from wsi_pipeline.cli.run import _print_report, _Progress
from wsi_pipeline.cli.run import command as run_command
from wsi_pipeline.cohort import tasks
from wsi_pipeline.cohort.config import RunConfig


def _last_segments(err: str, needle: str) -> list[str]:
    """What each line holding `needle` shows once the terminal has applied its carriage returns."""
    return [line.rsplit("\r", 1)[-1] for line in err.split("\n") if needle in line]


def test_run_help_shows_the_builtin_defaults():
    res = CliRunner().invoke(main, ["run", "--help"], terminal_width=200)
    assert res.exit_code == 0
    cfg = RunConfig()
    text = " ".join(res.output.split())
    assert f"(pixels). [default: {cfg.infer.chunk_size}]" in text
    assert f"Where the model runs. [default: {cfg.infer.device}]" in text
    assert "Also write nuclei.geojson.gz (QuPath). [default: off]" in text
    assert "Model checkpoint. [default: the shipped weights]" in text
    assert "[default: sized to the machine" in text
    assert "Also write the nuclei in these formats" in text
    assert "[default: none, nuclei.parquet alone]" in text
    options = [p for p in run_command.params if isinstance(p, click.Option)]
    assert text.count("[default:") == len(options) - 1  # every option but --out (required)


def test_progress_lines_are_not_glued_onto_the_bar(capsys):
    progress = _Progress()
    progress("planned", {"total": 2, "todo": 2, "skipped_failed": 0})
    progress("cluster", {"external": False, "dashboard": None, "infer_slots": 1})
    progress.close()
    err = capsys.readouterr().err
    assert _last_segments(err, "embedded Dask cluster") == [
        "embedded Dask cluster: 1 inference slot(s); dashboard: not available"]


def test_log_lines_are_not_glued_onto_the_bar(capsys):
    logger = logging.getLogger("test_terminal.console")
    handler = ConsoleHandler()
    logger.addHandler(handler)
    try:
        with tqdm(total=10, desc="tiles") as bar:
            bar.update(3)
            logger.warning("a warning while the bar runs")
    finally:
        logger.removeHandler(handler)
    assert _last_segments(capsys.readouterr().err, "a warning") == ["a warning while the bar runs"]


def test_one_slide_is_one_slide(capsys, tmp_path):
    progress = _Progress()
    progress("planned", {"total": 1, "todo": 0, "skipped_failed": 0})
    row = {"slide_id": "s", "status": "failed", "failed_stage": "infer", "error_type": "E",
           "error": "boom", "log": "logs/s.log"}
    report = SimpleNamespace(rows=[row], failures=[row], seconds=1.0, out_dir=tmp_path,
                             summary_path=None, locked=[], locked_lines=list,
                             failure_lines=lambda: ["s: infer: E: boom"])
    _print_report(report)
    err = capsys.readouterr().err
    assert "1 slide: 0 to run, 1 already finished" in err
    assert "1 slide (1 failed) in 1.0 s" in err and "1 slides" not in err
    assert f"FAILED s: infer: E: boom (traceback: {tmp_path / 'logs' / 's.log'})" in err


def test_failed_stage_is_one_console_line_and_a_traceback_in_the_slide_log(tmp_path, monkeypatch):
    def broken(job):
        raise ValueError("cannot decode tile 17\nsecond line of the message")

    monkeypatch.setitem(tasks.STAGE_FUNCTIONS, "infer", broken)
    job = tasks.SlideJob(slide_id="s1", path=tmp_path / "s1.svs", out_dir=tmp_path / "out",
                         cfg=RunConfig(), checkpoint=tmp_path / "m.pt", model_sha256="0" * 64,
                         expected={"infer": "a", "postproc": "b", "export": "c"})
    console = io.StringIO()
    handler = logging.StreamHandler(console)  # what the terminal gets (no file handler's detail)
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    pkg = logging.getLogger("wsi_pipeline")
    pkg.addHandler(handler)
    try:
        outcome = tasks.run_stage(job, "infer")
    finally:
        pkg.removeHandler(handler)
    assert not outcome["ok"] and outcome["error_type"] == "ValueError"
    errors = [line for line in console.getvalue().splitlines() if line.startswith("ERROR")]
    expected = (f"ERROR wsi_pipeline.cohort.tasks: s1: infer failed: ValueError: cannot decode "
                f"tile 17 (traceback in {job.log_path})")
    assert errors == [expected]
    assert "Traceback" not in console.getvalue()
    slide_log = job.log_path.read_text()
    assert "Traceback (most recent call last)" in slide_log and 'raise ValueError("cannot' in slide_log
    assert "second line of the message" in slide_log


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    return tiny_checkpoint(tmp_path_factory.mktemp("ckpt") / "tiny.pt")


def test_a_run_that_cannot_start_leaves_no_output_folder(ckpt, tmp_path):
    for args, message in [((tmp_path / "no-such-slides", "--checkpoint", ckpt), "input not found"),
                          ((ckpt, "--checkpoint", tmp_path / "nope.pt"), "checkpoint not found")]:
        out = tmp_path / "out"
        res = CliRunner().invoke(main, ["run", *map(str, args), "-o", str(out)])
        assert res.exit_code != 0 and message in res.output, res.output
        assert not out.exists()
    existing = tmp_path / "kept"
    existing.mkdir()
    res = CliRunner().invoke(main, ["run", str(tmp_path / "no-such-slides"), "-o", str(existing),
                                    "--checkpoint", str(ckpt)])
    assert res.exit_code != 0 and existing.is_dir() and not any(existing.iterdir())


def test_a_slide_that_does_not_open_is_one_line_on_the_console(ckpt, tmp_path):
    """End to end, in a process of its own (so the console handler of `main` is the one used)."""
    from tests.helpers.cohort_fixtures import run_cli

    slides = tmp_path / "slides"
    slides.mkdir()
    (slides / "broken.svs").write_text("this is not a slide\n")
    out = tmp_path / "out"
    proc = run_cli("run", str(slides), "-o", str(out), "--checkpoint", str(ckpt), "--workers", "0")
    assert proc.returncode == 1, proc.stdout
    assert "Traceback" not in proc.stdout, proc.stdout
    assert " INFO " not in proc.stdout  # slide logs get INFO lines, the console only warnings
    assert "1 slide: 0 to run" in proc.stdout and "1 slide (1 failed)" in proc.stdout
    lines = [line for line in proc.stdout.splitlines() if "broken" in line]
    assert len(lines) == 2, lines  # the error as it happens, and the FAILED line of the report
    assert lines[-1].startswith("FAILED broken: infer: SlideReadError")
    assert "Traceback (most recent call last)" in (out / "logs" / "broken.log").read_text()
