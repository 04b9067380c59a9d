"""Run a cohort on a SLURM or PBS cluster: submit Dask worker jobs, run, release the jobs.

    python workflows/jobqueue_run.py workflows/slurm.yaml COHORT -o OUT [--config RUN.yaml]
    python workflows/jobqueue_run.py workflows/slurm.yaml --print-job-script

Needs the optional extra `cluster` (dask-jobqueue). The scheduler runs in this process (run it
on a login or service node that compute nodes can reach); input and output must be on shared
storage, which the run checks before any work.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, Literal

import click
from pydantic import BaseModel, ConfigDict, Field


class JobqueueConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    system: Literal["slurm", "pbs"]
    jobs: int = Field(1, ge=1, description="worker jobs to submit")
    job: dict[str, Any] = Field(default_factory=dict, description="keyword arguments of the jobqueue cluster")


def load_jobqueue_config(path: Path) -> JobqueueConfig:
    from wsi_pipeline.config import load_config

    return load_config(path, JobqueueConfig)


def make_cluster(jq: JobqueueConfig, retries: int) -> Any:
    import dask

    try:
        from dask_jobqueue import PBSCluster, SLURMCluster
    except ImportError as exc:
        raise click.ClickException('dask-jobqueue is missing: pip install "wsi-pipeline[cluster]"') from exc
    cls = {"slurm": SLURMCluster, "pbs": PBSCluster}[jq.system]
    job = {k: v for k, v in jq.job.items() if v is not None}
    with dask.config.set({"distributed.scheduler.allowed-failures": retries}):
        return cls(**job)


@click.command()
@click.argument("queue_config", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.argument("source", required=False, type=click.Path(path_type=Path))
@click.option("-o", "--out", "out_dir", type=click.Path(path_type=Path))
@click.option("--config", "run_config", type=click.Path(path_type=Path), help="wsi-pipeline run config")
@click.option("--print-job-script", is_flag=True, help="Show the job script and exit (submits nothing).")
def main(queue_config: Path, source: Path | None, out_dir: Path | None, run_config: Path | None,
         print_job_script: bool) -> None:
    from wsi_pipeline.cohort.cluster import ClusterError
    from wsi_pipeline.cohort.config import ConfigError, load_run_config
    from wsi_pipeline.cohort.runner import CohortRunner, RunInterrupted, RunSetupError

    try:
        jq = load_jobqueue_config(queue_config)
        cfg = load_run_config(run_config)
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from exc
    if print_job_script:
        with make_cluster(jq, cfg.cluster.retries) as cluster:
            click.echo(cluster.job_script())
        return
    if source is None or out_dir is None:
        raise click.UsageError("SOURCE and -o OUT are required unless --print-job-script")
    with make_cluster(jq, cfg.cluster.retries) as cluster:
        cluster.scale(jobs=jq.jobs)
        click.echo(f"{jq.system}: {jq.jobs} job(s) submitted; dashboard: {cluster.dashboard_link}", err=True)
        cfg = cfg.model_copy(update={"cluster": cfg.cluster.model_copy(
            update={"scheduler": cluster.scheduler_address})})
        try:
            report = CohortRunner(source, out_dir, cfg).run()
        except (RunSetupError, ClusterError) as exc:
            raise click.ClickException(str(exc)) from exc
        except RunInterrupted as exc:  # SIGTERM/SIGINT: the run released its slide locks
            interrupted: RunInterrupted | None = exc
        else:
            interrupted = None
    # Leaving the `with` block cancelled the worker jobs (scancel/qdel): none is left behind.
    if interrupted is not None:
        click.echo(f"{interrupted}; the worker jobs were cancelled", err=True)
        sys.exit(128 + interrupted.signum)
    for line in report.failure_lines():
        click.echo(f"FAILED {line}", err=True)
    click.echo(f"{len(report.rows)} slides, {len(report.failures)} failed; manifest in {out_dir}", err=True)
    sys.exit(0 if report.ok else 1)


if __name__ == "__main__":
    main()
