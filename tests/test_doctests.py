"""The Examples sections of the public seams' docstrings run, as a user would paste them
(the Python API's own are run in test_api.py)."""

from __future__ import annotations

import doctest
import importlib

import pytest


@pytest.mark.parametrize("module", ["wsi_pipeline", "wsi_pipeline.model.runtime",
                                    "wsi_pipeline.model.predictors", "wsi_pipeline.export.formats",
                                    "wsi_pipeline.export.formats.base"])
def test_examples_run(module):
    failed, tried = doctest.testmod(importlib.import_module(module), optionflags=doctest.ELLIPSIS)
    assert tried > 0 and failed == 0, module
