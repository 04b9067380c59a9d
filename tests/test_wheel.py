"""The wheel a user installs (not the editable checkout the suite runs in) ships what the
commands point to: `run --help` names configs/run_default.yaml (issue 25)."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_the_packaged_run_default_yaml_is_the_repository_one():
    """wsi_pipeline/configs/run_default.yaml (in the wheel) is configs/run_default.yaml (in the
    repository, regenerated from the defaults: tests/cli/test_run.py)."""
    from wsi_pipeline.cohort.config import default_config_path

    assert default_config_path() == ROOT / "wsi_pipeline" / "configs" / "run_default.yaml"
    assert default_config_path().read_text() == (ROOT / "configs" / "run_default.yaml").read_text()


def test_a_built_wheel_contains_run_default_yaml(tmp_path):
    """Build a wheel from the package sources (weights left out: they are large and their glob
    is not in question) and look inside it."""
    pytest.importorskip("setuptools")
    src = tmp_path / "src"
    shutil.copytree(ROOT / "wsi_pipeline", src / "wsi_pipeline",
                    ignore=shutil.ignore_patterns("__pycache__", "*.pt", "*.bin", "*.xml"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src / name)
    proc = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
                           "--no-index", "-w", str(tmp_path / "dist"), str(src)],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    wheel = next((tmp_path / "dist").glob("wsi_pipeline-*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    assert "wsi_pipeline/configs/run_default.yaml" in names, sorted(n for n in names if "config" in n)
