"""workflows/: the queue configs and example run config load, the shell recipes parse."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

from wsi_pipeline.cohort.config import load_run_config

WORKFLOWS = Path(__file__).resolve().parents[1] / "workflows"


def _launcher():
    spec = importlib.util.spec_from_file_location("jobqueue_run", WORKFLOWS / "jobqueue_run.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # pydantic resolves the annotations through it
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("name, system", [("slurm.yaml", "slurm"), ("pbs.yaml", "pbs"),
                                          ("slurm_cpu.yaml", "slurm")])
def test_queue_configs_load(name, system):
    jq = _launcher().load_jobqueue_config(WORKFLOWS / name)
    assert jq.system == system and jq.jobs >= 1
    assert jq.job["worker_extra_args"] == ["--resources", "GPU=1"] and jq.job["processes"] == 1


def test_queue_config_typo_is_named(tmp_path):
    from wsi_pipeline.config import ConfigError

    (tmp_path / "q.yaml").write_text("system: slurm\njobz: 3\n")
    with pytest.raises(ConfigError, match="jobz: unknown key"):
        _launcher().load_jobqueue_config(tmp_path / "q.yaml")


def test_example_run_config_loads():
    cfg = load_run_config(WORKFLOWS / "cohort_cluster.yaml")
    assert cfg.cluster.retries == 3 and cfg.export.geojson
    cpu = load_run_config(WORKFLOWS / "cohort_cpu.yaml")
    assert cpu.infer.device == "cpu" and cpu.cluster.retries == 3


def test_cpu_queue_config_documents_interface_and_prologue():
    """The two keys every site changes are in the CPU example, with their comments."""
    text = (WORKFLOWS / "slurm_cpu.yaml").read_text()
    jq = _launcher().load_jobqueue_config(WORKFLOWS / "slurm_cpu.yaml")
    assert "interface" in jq.job and jq.job["job_script_prologue"]
    assert "# Network interface" in text and "activate" in text


@pytest.mark.parametrize("script", sorted(p.name for p in [*WORKFLOWS.glob("*.sh"),
                                                            *WORKFLOWS.glob("*.sbatch")]))
def test_shell_recipes_parse(script):
    path = WORKFLOWS / script
    assert path.stat().st_mode & 0o111, f"{script} is not executable"
    subprocess.run(["bash", "-n", str(path)], check=True)
