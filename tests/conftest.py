"""Shared fixtures: the real data in ../shared/data, and small synthetic helpers."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"

# Tests share two cores with everything else: keep torch from oversubscribing them.
torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """Root of ../shared/data. Skips where absent (a user's clone); fails in CI, which always has it."""
    if not SHARED_DATA.is_dir():
        msg = f"real test data not found at {SHARED_DATA} (see README: Test data)"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(msg + "; CI must provide it")
        pytest.skip(msg)
    return SHARED_DATA
