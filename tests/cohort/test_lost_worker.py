"""A slide whose stage kills its Dask worker every time: Dask gives up on it (KilledWorker after
`distributed.scheduler.allowed-failures` retries), the run records it as failed in that stage,
the other slides finish with the tables of an undisturbed run, and `--retry-failed` on a
healthy cluster finishes it."""

from __future__ import annotations

import contextlib

import pandas as pd
import pytest

from tests.helpers.cohort_fixtures import (
    CMU_CROPS,
    assert_same_tables,
    cmu_cohort,
    result_tables,
    run_cli,
)

DOOMED, INNOCENT = "cmu_a", "cmu_b"

# Imported in each worker process at its start (again after its nanny restarts it). The stage
# function dies inside run_stage, as an out-of-memory kill or a segfault in a reader would.
KILLER = '''
import os

import wsi_pipeline.cohort.tasks as tasks

DOOMED, STAGE = __doc__.split()


def _die(job, _stage_function=tasks.STAGE_FUNCTIONS[STAGE]):
    if job.slide_id == DOOMED:
        with open(job.out_dir / "deaths.txt", "a") as f:
            f.write(f"{STAGE} pid {os.getpid()}\\n")
        os._exit(1)
    return _stage_function(job)


# Distributed may import a preload more than once in one process: wrap the original only.
if not getattr(tasks.STAGE_FUNCTIONS[STAGE], "doomed", False):
    _die.doomed = True
    tasks.STAGE_FUNCTIONS[STAGE] = _die
'''


@contextlib.contextmanager
def local_cluster(allowed_failures: int | None = None, preload: list[str] | None = None):
    """An external cluster for `--scheduler`: one worker process with one thread and one GPU
    slot, so the other slide's tasks wait on the worker that the doomed one kills."""
    import dask
    from distributed import LocalCluster

    settings = ({} if allowed_failures is None
                else {"distributed.scheduler.allowed-failures": allowed_failures})
    with dask.config.set(settings):  # read once, when the scheduler is created
        cluster = LocalCluster(n_workers=1, threads_per_worker=1, processes=True, resources={"GPU": 1},
                               dashboard_address=None, host="127.0.0.1", preload=preload or [],
                               silence_logs=50)
    try:
        if allowed_failures is not None:
            assert cluster.scheduler.allowed_failures == allowed_failures
        yield cluster.scheduler_address
    finally:
        cluster.close()


@pytest.fixture(scope="module")
def cohort(shared_data, tmp_path_factory):
    return cmu_cohort(shared_data, tmp_path_factory.mktemp("lost_worker"))


@pytest.fixture(scope="module")
def healthy(cohort):
    """A cluster without the killer, and a run on it that nothing disturbed."""
    root, ckpt = cohort
    with local_cluster() as address:
        proc = _run(root, ckpt, root / "out_clean", address)
        assert proc.returncode == 0, proc.stdout
        yield address, root / "out_clean"


def _run(root, ckpt, out, scheduler, *extra):
    return run_cli("run", str(root / "slides"), "-o", str(out), "--checkpoint", str(ckpt),
                   "--scheduler", scheduler, *extra, timeout=120)


# The schedulers' HTTP servers (no dashboard) both ask for port 8787; the second takes another.
@pytest.mark.filterwarnings("ignore:Port 8787 is already in use")
# allowed-failures: the doomed task runs that many times more, each in a fresh worker process.
@pytest.mark.parametrize(("stage", "allowed_failures"), [("infer", 1), ("postproc", 0)])
def test_slide_that_kills_its_worker_is_recorded_and_retried(cohort, healthy, stage, allowed_failures):
    root, ckpt = cohort
    address, clean = healthy
    out = root / f"out_{stage}"
    killer = root / f"killer_{stage}.py"
    killer.write_text(f'"""{DOOMED} {stage}"""\n{KILLER}')
    with local_cluster(allowed_failures, preload=[str(killer)]) as killing:
        proc = _run(root, ckpt, out, killing)
    assert proc.returncode == 1, proc.stdout  # a slide failed: the run ends with exit status 1
    assert f"FAILED {DOOMED}: {stage}: KilledWorker" in proc.stdout
    deaths = (out / "deaths.txt").read_text().splitlines()
    assert len(deaths) == allowed_failures + 1 == len(set(deaths)), deaths  # a fresh worker each time

    m = pd.read_parquet(out / "manifest.parquet").set_index("slide_id")
    assert set(m.index) == set(CMU_CROPS)
    doomed = m.loc[DOOMED]
    assert (doomed["status"], doomed["failed_stage"], doomed["error_type"]) == (
        "failed", stage, "KilledWorker")
    assert f"{stage}-{DOOMED}-" in doomed["error"]  # the task Dask gave up on
    log = (out / "logs" / f"{DOOMED}.log").read_text()
    assert log.count(f"{DOOMED}: {stage} started") == allowed_failures + 1
    assert f"{DOOMED}: {stage} lost: KilledWorker" in log
    markers = {p.stem for p in (out / DOOMED / "stages").glob("*.json")} - {"failed"}
    assert markers == ({"infer"} if stage == "postproc" else set())  # what finished stays finished

    # The other slide's task waited on the dying worker, and Dask blamed it as well: it was
    # resubmitted, not recorded. Its tables equal the undisturbed run's.
    assert m.loc[INNOCENT, "status"] == "done", m.loc[INNOCENT].to_dict()
    innocent_log = (out / "logs" / f"{INNOCENT}.log").read_text()
    assert "lost: KilledWorker" not in innocent_log
    if stage == "infer":  # queued behind the doomed inference at every death
        assert f"{INNOCENT}: infer lost with a worker that died while it was not running it" in innocent_log
    pd.testing.assert_frame_equal(pd.read_parquet(out / INNOCENT / "nuclei.parquet"),
                                  pd.read_parquet(clean / INNOCENT / "nuclei.parquet"))

    # A rerun leaves the failure alone; with --retry-failed the slide finishes (only what is left).
    again = _run(root, ckpt, out, address)
    assert again.returncode == 1 and "1 failed before; --retry-failed reruns them" in again.stdout
    retry = _run(root, ckpt, out, address, "--retry-failed")
    assert retry.returncode == 0, retry.stdout
    assert "2 slides: 1 to run, 1 already finished" in retry.stdout
    log = (out / "logs" / f"{DOOMED}.log").read_text().split("lost: KilledWorker")[-1]
    assert f"{DOOMED}: {stage} started" in log and (f"{DOOMED}: infer started" in log) == (stage == "infer")
    m = pd.read_parquet(out / "manifest.parquet")
    assert (m["status"] == "done").all() and m["error_type"].isna().all()
    assert not list(out.glob("*/stages/failed.json")) and not list(out.glob("*/stages/attempt.key"))
    assert_same_tables(result_tables(clean), result_tables(out))
