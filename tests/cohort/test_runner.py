"""A cohort on the embedded Dask cluster and on a real external one (`dask scheduler` + two
`dask worker` processes): broken inputs are recorded, good slides finish, tables agree."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import pandas as pd
import pytest

from tests.helpers.cohort_fixtures import (
    CMU_CROPS,
    assert_same_tables,
    cli,
    cmu_crop,
    kill_group,
    make_cohort,
    result_tables,
    run_cli,
    tiny_checkpoint,
    wait_for,
)

BROKEN = {"truncated", "text", "empty"}


@pytest.fixture(scope="module")
def cohort(shared_data, tmp_path_factory):
    root = tmp_path_factory.mktemp("cohort")
    make_cohort(shared_data, root / "slides", broken=True, blank=True)
    ckpt = tiny_checkpoint(root / "tiny.pt", fit_rgb=cmu_crop(shared_data, *CMU_CROPS["cmu_a"]))
    return root, ckpt


@pytest.fixture(scope="module")
def local_run(cohort):
    """The default: embedded cluster (inference worker + CPU worker, separate processes)."""
    root, ckpt = cohort
    out = root / "out_local"
    proc = run_cli("run", str(root / "slides"), "-o", str(out), "--checkpoint", str(ckpt), timeout=240)
    return out, proc


def test_broken_inputs_recorded_good_slides_finish(local_run):
    out, proc = local_run
    assert proc.returncode == 1, proc.stdout
    m = pd.read_parquet(out / "manifest.parquet").set_index("slide_id")
    assert set(m.index) == {"cmu_a", "cmu_b", "blank", *BROKEN}
    assert (m.loc[["cmu_a", "cmu_b"], "status"] == "done").all()
    assert (m.loc[["cmu_a", "cmu_b"], "n_nuclei"] > 0).all()
    assert m.loc["blank", "status"] == "no_tissue" and m.loc["blank", "n_nuclei"] == 0
    for slide in BROKEN:
        row = m.loc[slide]
        assert row["status"] == "failed" and row["failed_stage"] == "infer"
        assert row["error_type"] == "SlideReadError" and slide in row["error"]
        log = (out / "logs" / f"{slide}.log").read_text()
        assert "Traceback" in log and "SlideReadError" in log
        assert f"FAILED {slide}: infer: SlideReadError" in proc.stdout  # one line per failure
    assert (m["model_sha256"].str.len() == 64).all() and m["config_hash"].nunique() == 1
    for slide in ("cmu_a", "cmu_b"):
        assert (out / slide / "summary.json").is_file() and (out / slide / "overlay.png").is_file()
    assert (out / "logs" / "run.log").is_file()
    summary = pd.read_parquet(out / "cohort_summary.parquet")
    assert set(summary["slide_id"]) == {"cmu_a", "cmu_b", "blank"}
    assert (out / "cohort_composition.png").stat().st_size > 1000


@pytest.fixture
def dask_cluster(tmp_path):
    """`dask scheduler` and two `dask worker`s on 127.0.0.1, random ports; one offers GPU=1."""
    sched_file = tmp_path / "scheduler.json"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "DASK_LOGGING__DISTRIBUTED": "warning"}
    dask = [sys.executable, "-m", "distributed.cli.dask_scheduler"]
    worker = [sys.executable, "-m", "distributed.cli.dask_worker"]
    common = ["--no-dashboard", "--host", "127.0.0.1"]
    procs = [subprocess.Popen([*dask, *common, "--port", "0", "--scheduler-file", str(sched_file)],
                              env=env, start_new_session=True, stderr=subprocess.DEVNULL)]
    try:
        assert wait_for(lambda: sched_file.is_file() and sched_file.stat().st_size > 0, 60)
        for extra in (["--resources", "GPU=1", "--nthreads", "1"], ["--nthreads", "2"]):
            procs.append(subprocess.Popen([*worker, "--scheduler-file", str(sched_file), *common, *extra],
                                          env=env, start_new_session=True, stderr=subprocess.DEVNULL))
        address = json.loads(sched_file.read_text())["address"]
        from distributed import Client

        with Client(address, timeout=30) as client:
            client.wait_for_workers(2, timeout=60)
        yield address
    finally:
        for p in reversed(procs):
            try:
                os.killpg(p.pid, signal.SIGTERM)
                p.wait(timeout=10)
            except (ProcessLookupError, subprocess.TimeoutExpired):
                os.killpg(p.pid, signal.SIGKILL)
                p.wait()


def test_external_scheduler_gives_same_tables_despite_worker_death(cohort, local_run, dask_cluster):
    """Through --scheduler, with the inference worker SIGKILLed mid-slide once: its nanny
    restarts it, Dask reruns the task, and the tables equal the embedded cluster's."""
    from distributed import Client

    root, ckpt = cohort
    out = root / "out_sched"
    p = cli("run", str(root / "slides"), "-o", str(out), "--checkpoint", str(ckpt),
            "--scheduler", dask_cluster)
    try:
        assert wait_for(lambda: any("infer started" in f.read_text()
                                    for f in (out / "logs").glob("*.log") if f.name != "run.log"), 90)
        with Client(dask_cluster, timeout=30) as client:
            workers = client.scheduler_info(n_workers=-1)["workers"]
            gpu = [a for a, w in workers.items() if w.get("resources", {}).get("GPU")]
            pid = client.run(os.getpid, workers=gpu)[gpu[0]]
        os.kill(pid, signal.SIGKILL)
        stdout, _ = p.communicate(timeout=240)
    finally:
        kill_group(p)
    assert p.returncode == 1, stdout  # the broken inputs
    assert "external Dask cluster: 1 inference slot(s)" in stdout
    restarted = [f.stem for f in (out / "logs").glob("*.log") if f.read_text().count("infer started") > 1]
    assert restarted, "the killed inference should have been started again"
    assert_same_tables(result_tables(local_run[0]), result_tables(out))


def test_storage_workers_cannot_see_is_refused(cohort, dask_cluster):
    from distributed import Client

    from wsi_pipeline.cohort.cluster import ClusterError, check_shared_storage

    root, _ = cohort
    with Client(dask_cluster, timeout=30) as client:
        check_shared_storage(client, root, [root / "slides" / "cmu_a.tif"])  # shared: fine
        with pytest.raises(ClusterError, match="cannot read 1 input slide") as err:
            check_shared_storage(client, root, [root / "elsewhere" / "x.svs"])
    assert str(err.value).count("worker tcp://127.0.0.1") == 2
