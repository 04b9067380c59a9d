"""cohort.tasks.log_to_file: slide logs get INFO lines, and the package level is given back."""

from __future__ import annotations

import logging

from wsi_pipeline.cohort.tasks import log_to_file


def test_level_raised_inside_and_restored_after(tmp_path):
    pkg = logging.getLogger("wsi_pipeline")
    before = pkg.level
    pkg.setLevel(logging.WARNING)
    try:
        with log_to_file(tmp_path / "a.log"):
            assert pkg.getEffectiveLevel() == logging.INFO
            logging.getLogger("wsi_pipeline.x").info("hello from a slide")
        assert pkg.level == logging.WARNING
        assert "hello from a slide" in (tmp_path / "a.log").read_text()
    finally:
        pkg.setLevel(before)


def test_overlapping_blocks_keep_info_until_the_last_closes(tmp_path):
    pkg = logging.getLogger("wsi_pipeline")
    before = pkg.level
    pkg.setLevel(logging.ERROR)
    try:
        first = log_to_file(tmp_path / "1.log")
        second = log_to_file(tmp_path / "2.log")
        first.__enter__()
        second.__enter__()
        first.__exit__(None, None, None)  # slide 1 ends while slide 2 still runs
        assert pkg.getEffectiveLevel() == logging.INFO
        second.__exit__(None, None, None)
        assert pkg.level == logging.ERROR
    finally:
        pkg.setLevel(before)
