"""Shared fixtures: the real data in ../shared/data, and small synthetic helpers."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

# One intra-op thread per process: several test processes (Dask workers, CLI subprocesses) run
# torch at once, and OpenMP threads that outnumber the cores spin-wait each other into
# 10-50x slowdowns. Set before torch is imported so subprocesses inherit it.
os.environ.setdefault("OMP_NUM_THREADS", "1")

import torch  # noqa: E402

torch.set_num_threads(1)

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """Root of ../shared/data. Skips where absent (a user's clone); fails in CI, which always has it."""
    if not SHARED_DATA.is_dir():
        msg = f"real test data not found at {SHARED_DATA} (see README: Test data)"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(msg + "; CI must provide it")
        pytest.skip(msg)
    return SHARED_DATA
