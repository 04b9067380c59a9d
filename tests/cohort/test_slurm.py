"""The cohort engine on a real SLURM (issue 27): a one-node slurmctld + slurmd + munged on
loopback (tests/helpers/slurm_local.sh), driven the ways users submit to it.

- `workflows/jobqueue_run.py` with `workflows/slurm_cpu.yaml` (dask-jobqueue worker jobs): the
  tables equal the embedded cluster's, the worker infers on the job's cores, no job is left.
- The worker job cancelled (`scancel`) mid-cohort: the run is stopped, releases its locks and
  cancels its jobs; the same command resumes, keeping what was finished, with the same tables.
- `workflows/slurm_array.sh` (one slide per array task, no Dask, then `summarize`).

Runs where the machine allows (root, SLURM installed or apt-get reachable: CI here); skips with
the reason elsewhere.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.helpers.cohort_fixtures import (
    assert_same_tables,
    cmu_cohort,
    kill_group,
    result_tables,
    run_cli,
    wait_for,
)

REPO = Path(__file__).resolve().parents[2]
HELPER = REPO / "tests" / "helpers" / "slurm_local.sh"
WORKFLOWS = REPO / "workflows"

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def slurm(tmp_path_factory):
    """The SLURM folder (its slurm.conf); the daemons are stopped by PID afterwards."""
    pytest.importorskip("dask_jobqueue", reason="dask-jobqueue (the cluster extra) is not installed")
    root = tmp_path_factory.mktemp("slurm")
    start = subprocess.run(["bash", str(HELPER), "start", str(root)], capture_output=True, text=True,
                           timeout=600)
    if start.returncode == 2:
        pytest.skip(start.stderr.strip().splitlines()[-1])
    try:
        assert start.returncode == 0, f"{start.stdout}\n{start.stderr}"
        yield root
    finally:
        subprocess.run(["bash", str(HELPER), "stop", str(root)], timeout=120)


def ns(slurm: Path, *cmd: str) -> list[str]:
    """`cmd` where the SLURM daemons are reachable (their network namespace)."""
    return ["bash", str(HELPER), "exec", str(slurm), *cmd]


def jobs(slurm: Path) -> list[str]:
    out = subprocess.run(ns(slurm, "squeue", "-h", "-o", "%i %T"), capture_output=True, text=True,
                         check=True, timeout=60).stdout
    return out.split()[::2]


def no_jobs_left(slurm: Path) -> bool:
    return wait_for(lambda: not jobs(slurm), 60, interval=0.5)


@pytest.fixture(scope="module")
def cohort(shared_data, tmp_path_factory):
    """Two CMU crops, a tiny checkpoint and the embedded cluster's tables of them."""
    root = tmp_path_factory.mktemp("cohort")
    root, ckpt = cmu_cohort(shared_data, root)
    proc = run_cli("run", str(root / "slides"), "-o", str(root / "out_local"), "--checkpoint", str(ckpt),
                   timeout=300)
    assert proc.returncode == 0, proc.stdout
    return root, ckpt, result_tables(root / "out_local")


def configs(slurm: Path, root: Path, ckpt: Path) -> tuple[Path, Path]:
    """workflows/slurm_cpu.yaml and cohort_cpu.yaml, with what this machine needs changed."""
    jq = yaml.safe_load((WORKFLOWS / "slurm_cpu.yaml").read_text())
    jq["jobs"] = 1
    jq["job"].update({
        "cores": os.cpu_count(), "memory": "3GiB", "walltime": "00:30:00",
        "interface": "lo",  # the only one in SLURM's namespace
        # what `source venv/bin/activate` does: this interpreter's bin first on PATH
        "job_script_prologue": [f"export PATH={Path(sys.executable).parent}:$PATH"],
        "local_directory": str(slurm / "dask-tmp"), "log_directory": str(slurm / "dask-logs"),
    })
    queue = root / "slurm_test.yaml"
    queue.write_text(yaml.safe_dump(jq))
    run = yaml.safe_load((WORKFLOWS / "cohort_cpu.yaml").read_text())
    run["checkpoint"] = str(ckpt)
    run["cluster"]["connect_timeout_s"] = 120
    run_cfg = root / "run_test.yaml"
    run_cfg.write_text(yaml.safe_dump(run))
    return queue, run_cfg


def launcher(slurm: Path, root: Path, ckpt: Path, out: Path) -> subprocess.Popen:
    queue, run_cfg = configs(slurm, root, ckpt)
    cmd = ns(slurm, sys.executable, str(WORKFLOWS / "jobqueue_run.py"), str(queue), str(root / "slides"),
             "-o", str(out), "--config", str(run_cfg))
    env = {**os.environ, "DASK_LOGGING__DISTRIBUTED": "warning"}
    return subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True, cwd=slurm)


def test_jobqueue_cohort_same_tables_as_embedded_no_job_left(slurm, cohort):
    root, ckpt, local = cohort
    out = root / "out_slurm"
    p = launcher(slurm, root, ckpt, out)
    try:
        text, _ = p.communicate(timeout=400)
    finally:
        kill_group(p)
    assert p.returncode == 0, text
    assert "slurm: 1 job(s) submitted" in text
    assert_same_tables(result_tables(out), local)
    # The worker ran inside a SLURM job and inferred on the job's cores, not Dask's one thread.
    cores = os.cpu_count()
    for slide in ("cmu_a", "cmu_b"):
        log = (out / "logs" / f"{slide}.log").read_text()
        assert f"inference on {cores} thread(s) (job allocation SLURM_CPUS_PER_TASK={cores})" in log, log
    # ... and said so once in the worker job's own log.
    worker_logs = "".join(f.read_text() for f in (slurm / "dask-logs").glob("*.err"))
    assert f"network on {cores} thread(s) (job allocation SLURM_CPUS_PER_TASK={cores})" in worker_logs
    assert no_jobs_left(slurm), jobs(slurm)


def test_scancel_mid_cohort_then_resume(slurm, cohort):
    """The worker job is cancelled once a slide has finished inference; the launcher, stopped
    (SIGTERM), releases its locks and cancels its jobs; the same command finishes the cohort,
    without redoing the finished inference, with the embedded run's tables."""
    root, ckpt, local = cohort
    out = root / "out_cancel"
    logs = out / "logs"

    def inferred() -> list[str]:
        return [f.stem for f in logs.glob("cmu_*.log") if "infer done" in f.read_text()]

    p = launcher(slurm, root, ckpt, out)
    try:
        assert wait_for(lambda: logs.is_dir() and bool(inferred()), 300, interval=0.2), p.pid
        first = inferred()[0]
        running = jobs(slurm)
        assert len(running) == 1, running
        subprocess.run(ns(slurm, "scancel", running[0]), check=True, timeout=60)
        assert no_jobs_left(slurm)
        os.killpg(p.pid, signal.SIGTERM)  # the run has no worker left: stop it as a user would
        text, _ = p.communicate(timeout=120)
    finally:
        kill_group(p)
    assert p.returncode == 128 + signal.SIGTERM, text
    assert "the worker jobs were cancelled" in text, text
    assert not list(out.glob("*/slide.lock")), "a slide lock was left behind"
    assert no_jobs_left(slurm), jobs(slurm)

    p = launcher(slurm, root, ckpt, out)
    try:
        text, _ = p.communicate(timeout=400)
    finally:
        kill_group(p)
    assert p.returncode == 0, text
    assert_same_tables(result_tables(out), local)
    # Resumed, not redone: the slide whose inference finished before the cancel inferred once.
    assert (logs / f"{first}.log").read_text().count(f"{first}: infer started") == 1
    assert no_jobs_left(slurm), jobs(slurm)


def test_array_job_one_slide_per_task_then_summary(slurm, cohort):
    root, ckpt, local = cohort
    out = root / "out_array"
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",
           "SBATCH_ARGS": f"--cpus-per-task=1 --mem=2G --chdir={slurm}", "OMP_NUM_THREADS": "1"}
    submit = subprocess.run(ns(slurm, "bash", str(WORKFLOWS / "slurm_array.sh"), str(root / "slides"),
                               str(out), "--checkpoint", str(ckpt)),
                            env=env, capture_output=True, text=True, timeout=120)
    assert submit.returncode == 0, submit.stdout + submit.stderr
    assert "(2 slides)" in submit.stdout, submit.stdout
    assert wait_for(lambda: not jobs(slurm), 400, interval=1), jobs(slurm)
    assert (out / "cohort_summary.parquet").is_file(), sorted(p.name for p in out.iterdir())
    tables = [result_tables(o) for o in (out, root / "out_local")]
    for t in tables:  # summary rows in manifest order: the order the tasks finished in
        t["summary"] = t["summary"].sort_values(["slide_id", "type_id"]).reset_index(drop=True)
    assert_same_tables(*tables)
