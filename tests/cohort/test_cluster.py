"""Sizing of the embedded cluster and the checks made on an external one before any work."""

from __future__ import annotations

import pytest

from wsi_pipeline.cohort.cluster import ClusterError, connect, infer_slots, plan_local_cluster
from wsi_pipeline.cohort.config import ClusterConfig

GiB = 1 << 30


def test_cpu_machine_gets_one_inference_worker_using_all_cores():
    p = plan_local_cluster(ClusterConfig(), cpus=16, memory_bytes=64 * GiB, gpus=0)
    assert (p.infer_workers, p.cpu_workers, p.threads_per_worker, p.infer_threads) == (1, 4, 4, 16)
    assert p.memory_limit == 64 * GiB // 5


def test_one_inference_worker_per_gpu():
    p = plan_local_cluster(ClusterConfig(), cpus=32, memory_bytes=256 * GiB, gpus=4)
    assert p.infer_workers == 4 and p.cpu_workers == 8 and p.gpus == 4


def test_small_machine_and_overrides():
    p = plan_local_cluster(ClusterConfig(), cpus=2, memory_bytes=4 * GiB, gpus=0)
    assert (p.infer_workers, p.cpu_workers, p.threads_per_worker) == (1, 1, 2)
    assert p.memory_limit == 2 * GiB
    p = plan_local_cluster(ClusterConfig(workers=3, threads_per_worker=1, memory_limit="3GiB"),
                           cpus=8, memory_bytes=64 * GiB, gpus=0)
    assert (p.cpu_workers, p.threads_per_worker, p.memory_limit) == (3, 1, "3GiB")


def test_unreachable_scheduler_is_a_clear_error():
    with pytest.raises(ClusterError, match="cannot reach Dask scheduler at tcp://127.0.0.1:9"):
        connect("tcp://127.0.0.1:9", "GPU", timeout=2)


def test_cluster_without_inference_resource_is_refused():
    from distributed import LocalCluster

    no_gpu = r"no worker .* offers the resource 'GPU'.*--resources GPU=1"
    with (LocalCluster(n_workers=1, threads_per_worker=1, processes=False, dashboard_address=None) as lc,
          pytest.raises(ClusterError, match=no_gpu)):
        connect(lc.scheduler_address, "GPU", timeout=10)
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=False, dashboard_address=None,
                      resources={"GPU": 1}) as lc:
        handle = connect(lc.scheduler_address, "GPU", timeout=10)
        try:
            assert handle.infer_slots == 2 == infer_slots(handle.client, "GPU")
            assert handle.cluster is None
        finally:
            handle.close()
