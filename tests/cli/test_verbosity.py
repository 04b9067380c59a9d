"""-v counts: none = WARNING, -v = INFO, -vv (or more) = DEBUG, as the help says."""

from __future__ import annotations

import logging

import pytest

from wsi_pipeline.cli import log_level


@pytest.mark.parametrize(("verbose", "level"), [(0, logging.WARNING), (1, logging.INFO),
                                                 (2, logging.DEBUG), (5, logging.DEBUG)])
def test_log_level(verbose, level):
    assert log_level(verbose) == level
