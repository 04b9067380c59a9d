"""Threads of the inference worker (issue 27): Dask's nanny starts every worker with
OMP_NUM_THREADS=1 and MKL_NUM_THREADS=1, which made a cohort infer on one core. The count seen
*inside* the inference worker must be the plan's, for torch and for OpenVINO's streams."""

from __future__ import annotations

import os

import pytest

from tests.helpers.cohort_fixtures import cmu_cohort, run_cli
from wsi_pipeline.cohort.cluster import (
    INFER_THREADS_ENV,
    ClusterError,
    plan_local_cluster,
    start_local_cluster,
    worker_infer_threads,
)
from wsi_pipeline.cohort.config import ClusterConfig
from wsi_pipeline.postproc.pool import usable_cpus


def _threads_in_task() -> dict:
    """Runs as a task on a worker: what the inference stage's thread would see."""
    import torch

    import wsi_pipeline.cohort.tasks  # noqa: F401 - the stage module, as a real task imports it
    from wsi_pipeline.cohort.cluster import apply_infer_threads

    before = torch.get_num_threads()
    applied = apply_infer_threads()
    return {"before": before, "after": torch.get_num_threads(), "applied": applied,
            "mkl_env": os.environ.get("MKL_NUM_THREADS")}


def test_embedded_inference_worker_runs_on_the_plan_threads_post_workers_on_one():
    cfg = ClusterConfig(workers=1, dashboard=False, infer_threads=3)
    plan = plan_local_cluster(cfg, usable_cpus(), 1 << 32, 0)
    assert plan.infer_threads == 3
    handle = start_local_cluster(cfg, "cpu")
    try:
        infer = handle.client.submit(_threads_in_task, resources={"GPU": 1}, pure=False).result(60)
        workers = handle.client.scheduler_info(n_workers=-1)["workers"]
        post = [a for a, w in workers.items() if not w.get("resources", {}).get("GPU")]
        other = handle.client.submit(_threads_in_task, workers=post, pure=False).result(60)
    finally:
        handle.close()
    # Set by the worker plugin before the task ran, not only in the stage itself.
    assert infer["before"] == infer["after"] == 3, infer
    assert infer["applied"][0] == 3 and infer["mkl_env"] == "3", infer
    assert other["applied"] is None and other["after"] == 1, other  # Dask's one thread per task


def test_thread_count_precedence(monkeypatch):
    for name in (INFER_THREADS_ENV, "SLURM_CPUS_PER_TASK", "NCPUS"):
        monkeypatch.delenv(name, raising=False)
    assert worker_infer_threads() == (usable_cpus(), "CPU affinity of the worker")
    monkeypatch.setenv("SLURM_CPUS_PER_TASK", "1")
    assert worker_infer_threads()[0] == 1
    monkeypatch.setenv(INFER_THREADS_ENV, "5")
    assert worker_infer_threads() == (5, INFER_THREADS_ENV)
    assert worker_infer_threads(7)[0] == 7
    monkeypatch.setenv(INFER_THREADS_ENV, "lots")
    with pytest.raises(ClusterError, match=f"{INFER_THREADS_ENV}='lots' must be a whole number"):
        worker_infer_threads()


@pytest.mark.slow
def test_default_cohort_run_infers_on_every_core(shared_data, tmp_path):
    """`wsi-pipeline run` of two slides (embedded cluster, the default): each slide's log says
    the network ran on all the machine's cores, OpenVINO with one stream per core."""
    root, ckpt = cmu_cohort(shared_data, tmp_path)
    out = tmp_path / "out"
    proc = run_cli("run", str(root / "slides"), "-o", str(out), "--checkpoint", str(ckpt), timeout=300)
    assert proc.returncode == 0, proc.stdout
    cores = usable_cpus()
    logs = {slide: (out / "logs" / f"{slide}.log").read_text() for slide in ("cmu_a", "cmu_b")}
    for slide, log in logs.items():
        assert f"{slide}: inference on {cores} thread(s)" in log, log
    compiled = [line for log in logs.values() for line in log.splitlines() if "stream(s)" in line]
    assert all(f"{cores} stream(s)" in line for line in compiled), compiled  # OpenVINO back end


def test_worker_in_the_callers_process_leaves_its_threads_alone():
    """A LocalCluster(processes=False) worker is the caller's own process (an embedding
    program's client, the test suite's one thread per process): nothing changes there."""
    import torch
    from distributed import LocalCluster

    from wsi_pipeline.cohort.cluster import connect

    before = torch.get_num_threads(), os.environ.get("OMP_NUM_THREADS")
    with LocalCluster(n_workers=1, threads_per_worker=1, processes=False, dashboard_address=None,
                      resources={"GPU": 1}) as lc:
        handle = connect(lc.scheduler_address, "GPU", timeout=10, infer_threads=3)
        try:
            seen = handle.client.submit(_threads_in_task, resources={"GPU": 1}, pure=False).result(30)
        finally:
            handle.close()
    assert seen["applied"] is None
    assert (torch.get_num_threads(), os.environ.get("OMP_NUM_THREADS")) == before
