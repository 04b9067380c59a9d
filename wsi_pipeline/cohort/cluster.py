"""Dask for a cohort: an embedded cluster sized to this machine, or an existing scheduler.

Inference tasks ask for one unit of a worker resource (default "GPU"): only workers that
advertise it run them, one at a time each, so one GPU never holds two models and a CPU-only
machine does not run two all-core torch jobs against each other. Post-processing and export
need no resource and spread over every worker.

An inference worker runs the network on the cores it was given, whatever kind of cluster it
belongs to. Dask's nanny starts every worker with OMP_NUM_THREADS=1 and MKL_NUM_THREADS=1
(`distributed.nanny.pre-spawn-environ`), and torch takes its thread count from them, so
environment variables set by the caller lose. `InferThreads`, a worker plugin the run registers
on every cluster it uses, sets torch's thread count inside each inference worker process and
logs it once per worker; the inference stage applies it again in its own thread
(`apply_infer_threads`, OpenMP's count is per thread) before the network is prepared, so the
OpenVINO back end, which takes its streams from `torch.get_num_threads()`, follows too.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import sys
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from wsi_pipeline.cohort.config import ClusterConfig
from wsi_pipeline.postproc.pool import usable_cpus

log = logging.getLogger(__name__)


class ClusterError(RuntimeError):
    """The cluster cannot run this cohort (unreachable, no inference worker, storage not shared)."""


# -- threads of the inference workers ----------------------------------------------------------
#: Environment variable giving an inference worker its thread count (workflows/ scripts set it).
INFER_THREADS_ENV = "WSI_PIPELINE_INFER_THREADS"
#: Job allocations, in the order asked: SLURM's cores per task (dask-jobqueue's `cores`), PBS's.
_ALLOCATION_ENV = ("SLURM_CPUS_PER_TASK", "NCPUS")

# (threads, where the figure came from) set by InferThreads in this process; None elsewhere.
_INFER_THREADS: tuple[int, str] | None = None


def _positive_int(name: str, value: str) -> int:
    try:
        n = int(value)
    except ValueError:
        n = 0
    if n < 1:
        raise ClusterError(f"environment variable {name}={value!r} must be a whole number of "
                           f"threads >= 1")
    return n


def worker_infer_threads(configured: int | None = None,
                         configured_by: str = "cluster.infer_threads") -> tuple[int, str]:
    """The thread count this process should run the network with, and where it came from.

    `configured` (cluster.infer_threads, or the embedded cluster's plan: `configured_by`
    says which) wins; then
    WSI_PIPELINE_INFER_THREADS; then the job's allocation (SLURM_CPUS_PER_TASK, PBS's NCPUS),
    capped at the cores this process may use; then those cores (its CPU affinity).
    """
    if configured is not None:
        return max(1, int(configured)), configured_by
    value = os.environ.get(INFER_THREADS_ENV, "").strip()
    if value:
        return _positive_int(INFER_THREADS_ENV, value), INFER_THREADS_ENV
    cores = usable_cpus()
    for name in _ALLOCATION_ENV:
        value = os.environ.get(name, "").strip()
        if value:
            return min(cores, _positive_int(name, value)), f"job allocation {name}={value}"
    return cores, "CPU affinity of the worker"


def set_threads(threads: int) -> None:
    """Run torch (and the libraries it calls) on `threads` threads in this process.

    The environment variables reach processes started from here; `torch.set_num_threads`
    sets the count for this thread and every thread that first runs torch after it.
    """
    import torch

    for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ[name] = str(threads)
    torch.set_num_threads(threads)


def apply_infer_threads() -> tuple[int, str] | None:
    """In an inference worker's task: the thread count `InferThreads` gave this process, applied
    to the calling thread (OpenMP's count is per thread; a thread that ran torch before the
    plugin keeps its own). None outside such a worker, where nothing changes."""
    if _INFER_THREADS is None:
        return None
    import torch

    threads = _INFER_THREADS[0]
    if torch.get_num_threads() != threads:
        torch.set_num_threads(threads)
    return _INFER_THREADS


def infer_threads_plugin(resource: str, threads: int | None,
                         configured_by: str = "cluster.infer_threads", announce: bool = True) -> Any:
    """An `InferThreads` worker plugin (distributed is imported only here, on demand)."""
    from distributed.diagnostics.plugin import WorkerPlugin

    class InferThreads(WorkerPlugin):
        """Sets the torch thread count of every worker that offers `resource` (an inference
        worker), at its start and whenever it joins later (jobqueue jobs leave the queue late),
        and logs it once per worker. Post-processing workers keep Dask's one thread per task."""

        name = "wsi-pipeline-infer-threads"

        def __init__(self) -> None:
            self.resource = resource
            self.threads = threads
            self.configured_by = configured_by
            self.announce = announce
            self.driver_pid = os.getpid()

        def setup(self, worker: Any) -> None:
            if os.getpid() == self.driver_pid:  # a worker inside the caller's own process
                return  # (LocalCluster(processes=False)): its threads are the caller's to set
            setup_inference_worker(worker, self.resource, self.threads, self.configured_by,
                                   self.announce)

    return InferThreads()


def setup_inference_worker(worker: Any, resource: str, threads: int | None,
                           configured_by: str = "cluster.infer_threads",
                           announce: bool = True) -> tuple[int, str] | None:
    """What `InferThreads` does in each worker (a module function, so that the plugin, pickled
    by value, sets this module's state and not a copy): on a worker offering `resource`, set
    and log its thread count, with `announce` also on the worker's stderr (its log); None on
    other workers."""
    global _INFER_THREADS
    if not worker.state.total_resources.get(resource):
        return None
    n, source = worker_infer_threads(threads, configured_by)
    set_threads(n)
    _INFER_THREADS = (n, source)
    line = (f"wsi-pipeline inference worker {worker.name} (pid {os.getpid()}): network on {n} "
            f"thread(s) ({source})")
    log.info("%s", line)
    if announce:
        # A `dask worker` process shows Dask's own log lines only (at the level the run sets,
        # warning by default): its stderr is its log (a jobqueue job's .err file).
        print(line, file=sys.stderr, flush=True)
    return _INFER_THREADS


def register_infer_threads(client: Any, resource: str, threads: int | None,
                           configured_by: str = "cluster.infer_threads", announce: bool = True) -> None:
    """Register the `InferThreads` plugin on `client`'s cluster: its workers now and later.
    `announce`: also print the thread line on each worker's stderr (not for the embedded
    cluster, whose workers' stderr is the run's console; its plan is in the run log)."""
    client.register_plugin(infer_threads_plugin(resource, threads, configured_by, announce))


@dataclass
class ClusterHandle:
    client: Any
    cluster: Any | None  # None when connected to an external scheduler
    dashboard_link: str | None
    infer_slots: int
    dashboard_note: str | None = None  # why there is no dashboard, when there is none

    def close(self) -> None:
        self.client.close()
        if self.cluster is not None:
            self.cluster.close()


def open_cluster(cfg: ClusterConfig, device: str, out_dir: Path, slide_paths: list[Path]) -> ClusterHandle:
    """Start the embedded cluster or connect to `cfg.scheduler`, and check it can do the job.

    `cfg.retries` configures only the embedded cluster: an external scheduler applies its own
    `distributed.scheduler.allowed-failures`, set where that scheduler is started.
    """
    if cfg.scheduler:
        if "retries" in cfg.model_fields_set:
            log.warning(
                "cluster.retries=%d is ignored with an external scheduler (%s): set "
                "distributed.scheduler.allowed-failures where that scheduler is started",
                cfg.retries, cfg.scheduler,
            )
        handle = connect(cfg.scheduler, cfg.infer_resource, cfg.connect_timeout_s, cfg.infer_threads)
        try:
            if cfg.check_shared_storage:
                check_shared_storage(handle.client, out_dir, slide_paths)
        except BaseException:
            handle.close()
            raise
        return handle
    return start_local_cluster(cfg, device)


# -- embedded cluster ------------------------------------------------------------------------
@dataclass(frozen=True)
class LocalPlan:
    """The shape of the embedded cluster (pure data, so sizing is testable)."""

    infer_workers: int
    cpu_workers: int
    threads_per_worker: int
    infer_threads: int  # torch threads of an inference worker (whole machine on CPU)
    memory_limit: int | str
    gpus: int


def plan_local_cluster(cfg: ClusterConfig, cpus: int, memory_bytes: int, gpus: int) -> LocalPlan:
    """One inference worker per GPU (one in all on CPU) plus CPU workers for post-processing.

    Default CPU workers: one per 4 cores with 4 threads each; a process per worker keeps the
    GIL-bound parts of post-processing parallel and lets a dying worker take one slide down,
    not the run.
    """
    infer_workers = max(1, gpus)
    cpu_workers = cfg.workers if cfg.workers is not None else max(1, cpus // 4)
    threads = cfg.threads_per_worker or max(1, min(4, cpus // max(1, cpu_workers)))
    if cfg.memory_limit == "auto":
        memory: int | str = max(1 << 30, memory_bytes // (infer_workers + cpu_workers))
    else:
        memory = cfg.memory_limit
    infer_threads = cfg.infer_threads or (cpus if gpus == 0 else max(1, threads))
    return LocalPlan(infer_workers=infer_workers, cpu_workers=cpu_workers,
                     threads_per_worker=threads, infer_threads=infer_threads,
                     memory_limit=memory, gpus=gpus)


def start_local_cluster(cfg: ClusterConfig, device: str) -> ClusterHandle:
    import dask
    from distributed import Client, Nanny, Scheduler, SpecCluster
    from distributed.system import MEMORY_LIMIT

    gpus = _visible_gpus() if device != "cpu" else 0
    if device == "cuda" and gpus == 0:
        raise ClusterError("--device cuda, but no GPU is visible on this machine")
    plan = plan_local_cluster(cfg, usable_cpus(), MEMORY_LIMIT, gpus)
    has_bokeh = importlib.util.find_spec("bokeh") is not None
    note = None
    if not cfg.dashboard:
        note = "off (cluster.dashboard)"
    elif not has_bokeh:
        note = "not available: install bokeh to get it"
        log.info("Dask dashboard %s", note)
    # ":0": a free port, never 8787 taken by another cluster (Dask's "port in use" warning).
    dashboard = ":0" if (cfg.dashboard and has_bokeh) else None
    workers: dict[str, dict[str, Any]] = {}
    for i in range(plan.infer_workers):
        # The nanny's pre-spawn-environ wins over some of these; InferThreads sets them again
        # inside the worker. They still reach what the worker process starts.
        env = {name: str(plan.infer_threads) for name in
               ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", INFER_THREADS_ENV)}
        if plan.gpus:
            env["CUDA_VISIBLE_DEVICES"] = _gpu_ids()[i]
        workers[f"infer-{i}"] = {"cls": Nanny, "options": {
            "nthreads": 1, "memory_limit": plan.memory_limit, "host": "127.0.0.1",
            "resources": {cfg.infer_resource: 1}, "env": env, "silence_logs": logging.WARNING}}
    for i in range(plan.cpu_workers):
        workers[f"cpu-{i}"] = {"cls": Nanny, "options": {
            "nthreads": plan.threads_per_worker, "memory_limit": plan.memory_limit,
            "host": "127.0.0.1", "silence_logs": logging.WARNING}}
    scheduler = {"cls": Scheduler, "options": {"host": "127.0.0.1", "dashboard_address": dashboard,
                                               "dashboard": dashboard is not None}}
    log.info("embedded Dask cluster: %s", plan)
    # A task whose worker died is retried this many times, then fails with KilledWorker.
    with dask.config.set({"distributed.scheduler.allowed-failures": cfg.retries}):
        cluster = SpecCluster(workers=workers, scheduler=scheduler, name="wsi-pipeline")
    client = Client(cluster)
    client.wait_for_workers(len(workers))
    register_infer_threads(client, cfg.infer_resource, plan.infer_threads,
                           "cluster.infer_threads" if cfg.infer_threads else
                           "the embedded cluster's plan", announce=False)
    return ClusterHandle(client=client, cluster=cluster,
                         dashboard_link=client.dashboard_link if dashboard else None,
                         infer_slots=plan.infer_workers, dashboard_note=note)




def _gpu_ids() -> list[str]:
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible:
        return [v.strip() for v in visible.split(",") if v.strip()]
    return [str(i) for i in range(_visible_gpus())]


def _visible_gpus() -> int:
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


# -- external scheduler ----------------------------------------------------------------------
def connect(address: str, infer_resource: str, timeout: float = 30.0,
            infer_threads: int | None = None) -> ClusterHandle:
    """A client of the scheduler at `address` that has at least one inference worker (one
    offering `infer_resource`); the `InferThreads` plugin is registered on its workers, now and
    later, with `infer_threads` (cluster.infer_threads; None = each worker's own cores)."""
    from distributed import Client

    _probe_scheduler(address, timeout)
    try:
        client = Client(address, timeout=timeout)
    except OSError as exc:
        raise ClusterError(f"cannot reach Dask scheduler at {address}: {exc}") from exc
    try:
        try:
            client.wait_for_workers(1, timeout=timeout)
        except TimeoutError as exc:
            raise ClusterError(f"no Dask workers connected to {address} within {timeout:.0f} s") from exc
        slots = infer_slots(client, infer_resource)
        if slots == 0:
            raise ClusterError(
                f"no worker of {address} offers the resource {infer_resource!r}, so inference "
                f"could never run: start at least one worker with "
                f"`dask worker {address} --resources {infer_resource}=1` (one per GPU)"
            )
        register_infer_threads(client, infer_resource, infer_threads)
    except BaseException:
        client.close()
        raise
    return ClusterHandle(client=client, cluster=None, dashboard_link=client.dashboard_link,
                         infer_slots=slots)


def _probe_scheduler(address: str, timeout: float) -> None:
    """Fail within `timeout` when `address` (tcp) is not a Dask scheduler. A scheduler sends its
    handshake as soon as a connection opens; an HTTP server (the dashboard's port, a web
    service) waits for a request, and distributed's Client then waited for ever, whatever its
    timeout. Other schemes (tls, ucx, inproc) are left to the Client."""
    import socket
    from urllib.parse import urlsplit

    scheme, _, rest = address.rpartition("://")
    if scheme not in ("", "tcp"):
        return
    try:
        parts = urlsplit(f"//{rest}")
        host, port = parts.hostname, parts.port
    except ValueError:
        return
    if host is None or port is None:
        return
    try:
        with socket.create_connection((host, port), timeout=timeout) as sock:
            sock.settimeout(timeout)
            first = sock.recv(16)
    except TimeoutError as exc:
        raise ClusterError(f"{address} accepted a connection but sent nothing within {timeout:.0f} s "
                           "(cluster.connect_timeout_s): not a Dask scheduler (an HTTP port? a "
                           "scheduler listens on 8786 by default, its dashboard on 8787)") from exc
    except OSError as exc:
        raise ClusterError(f"cannot reach Dask scheduler at {address}: {exc}") from exc
    if not first or first.startswith(b"HTTP"):
        what = "speaks HTTP" if first else "closed the connection"
        raise ClusterError(f"{address} is not a Dask scheduler (it {what}; a scheduler listens on "
                           "8786 by default, its dashboard on 8787)")


def infer_slots(client: Any, resource: str) -> int:
    workers = client.scheduler_info(n_workers=-1)["workers"]
    return int(sum(w.get("resources", {}).get(resource, 0) for w in workers.values()))


def check_shared_storage(client: Any, out_dir: Path, slide_paths: list[Path]) -> None:
    """Every worker must see the output folder (the same one: a probe file written here) and
    read every input slide; otherwise stop before any work with the workers and paths named."""
    probe = out_dir / f".storage-probe-{uuid.uuid4().hex}"
    probe.write_text("wsi-pipeline shared-storage probe\n")
    try:
        answers = client.run(_storage_probe, str(out_dir), probe.name, [str(p) for p in slide_paths])
    finally:
        probe.unlink(missing_ok=True)
    problems = [f"  worker {addr} ({ans['host']}): {msg}"
                for addr, ans in sorted(answers.items()) for msg in ans["problems"]]
    if problems:
        raise ClusterError(
            "input and output must be on storage every worker shares (same paths):\n"
            + "\n".join(problems)
        )
    log.info("shared storage ok on %d workers", len(answers))


def _storage_probe(out_dir: str, probe_name: str, paths: list[str]) -> dict[str, Any]:
    """Runs on each worker: what of the driver's paths it cannot see or use."""
    import socket
    import tempfile

    problems: list[str] = []
    out = Path(out_dir)
    if not (out / probe_name).is_file():
        problems.append(f"does not see the output folder {out} as the driver does "
                        f"(probe file {probe_name} missing)")
    else:
        try:
            with tempfile.NamedTemporaryFile(dir=out, prefix=".worker-write-probe-"):
                pass
        except OSError as exc:
            problems.append(f"cannot write to {out}: {exc.strerror}")
    unreadable = [p for p in paths if not os.access(p, os.R_OK)]
    if unreadable:
        more = f" and {len(unreadable) - 5} more" if len(unreadable) > 5 else ""
        shown = ", ".join(unreadable[:5]) + more
        problems.append(f"cannot read {len(unreadable)} input slide(s): {shown}")
    return {"host": socket.gethostname(), "problems": problems}
