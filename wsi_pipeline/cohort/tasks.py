"""What runs on a worker: one stage of one slide, logged to the slide's own log file.

A stage function catches every exception of its slide, records it (failure record + traceback
in OUT/logs/<slide>.log) and returns it as a failed outcome: a broken file is a fact about the
slide, not about the worker, so it is not retried and never stops other slides. Only the
loss of a worker surfaces to the driver as an exception (Dask's KilledWorker after retries).

A full disk (or quota) is not a fact about the slide: the stage's partial outputs are removed at
once (the space goes back), the failure is recorded as DiskFull with one line naming the file
and the free space, and the outcome says `disk_full` so that the run schedules no more slides
(each would fail the same way). The next run retries such slides without --retry-failed.

The run that submitted a job holds the slide's lock (see locks.py). A stage checks that the
lock is still that run's before it deletes anything and again before it writes its marker:
if another run took the slide over meanwhile (`--break-locks`), the stage stops and leaves the
folder to it, writing neither a marker nor a failure record.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
import time
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from wsi_pipeline import __version__
from wsi_pipeline.cohort import locks
from wsi_pipeline.cohort.config import RunConfig
from wsi_pipeline.cohort.layout import slide_dir, slide_lock, slide_log
from wsi_pipeline.cohort.stages import SlideStages, StageMarker
from wsi_pipeline.contract import FORMAT_FILES, MAPS, MAPS_PARTIAL, NUCLEI
from wsi_pipeline.diskfull import DISK_FULL, describe, disk_full_error

log = logging.getLogger(__name__)

# Models stay loaded in a worker process between slides: (path, sha256, device) -> LoadedModel.
_MODELS: dict[tuple[str, str, str], Any] = {}
_MODELS_LOCK = threading.Lock()

#: Dask event topic on which stage tasks report to the driver: {"kind": "stage_started" |
#: "stage_progress", "slide_id", "stage", and for progress "done", "total", "unit"}. The driver
#: subscribes to it (cohort.runner) to show per-slide stage and tile progress.
PROGRESS_TOPIC = "wsi-pipeline-progress"
#: Seconds between two progress events of one stage (the last one is always sent).
PROGRESS_INTERVAL_S = 1.0


@dataclass(frozen=True)
class SlideJob:
    """Everything a worker needs for one slide; small and picklable."""

    slide_id: str
    path: Path
    out_dir: Path
    cfg: RunConfig
    checkpoint: Path
    model_sha256: str
    expected: dict[str, str]
    progress: bool = False
    mpp: float | None = None  # the slide's pixel size as resolved by the preflight (None: resolve here)
    mpp_source: str | None = None  # where it came from (wsi_pipeline.cohort.mpp)
    lock_token: str | None = None  # token of the slide lock the submitting run holds
    #: Name of the Dask Event the run sets when the disk is full: stages not yet started then
    #: return at once, leaving their slides pending (None: not run on a cluster).
    stop_event: str | None = None

    @property
    def slide_dir(self) -> Path:
        return slide_dir(self.out_dir, self.slide_id)

    @property
    def log_path(self) -> Path:
        return slide_log(self.out_dir, self.slide_id)

    def still_locked(self) -> bool:
        """Whether the slide's lock is still the submitting run's (True for a job without one)."""
        return self.lock_token is None or locks.holds(slide_lock(self.out_dir, self.slide_id),
                                                      self.lock_token)


Outcome = dict[str, Any]


def run_stage(job: SlideJob, stage: str, upstream: Outcome | None = None) -> Outcome:
    """Run `stage` of `job` unless an earlier stage failed; write its marker when it succeeds."""
    if upstream is not None and not upstream["ok"]:
        return upstream
    if job.stop_event is not None and _stop_requested(job.stop_event):
        return {"ok": False, "slide_id": job.slide_id, "stage": stage, "stopped": True}
    stages = SlideStages(job.slide_dir)
    with log_to_file(job.log_path):
        log.info("%s: %s started on %s (pid %d)", job.slide_id, stage, _host(), os.getpid())
        t0 = time.perf_counter()
        key = _task_key()
        if not job.still_locked():
            return _lock_lost(job, stage)
        if key:
            _report({"kind": "stage_started", "slide_id": job.slide_id, "stage": stage})
        try:
            if key:
                stages.record_attempt(key)
            for old, new in stages.begin(stage, set_aside=_not_written_now(job, stage)):
                log.warning("%s: kept %s, written by an earlier run, as %s: this run does not "
                            "write it (pass --geojson to replace it)", job.slide_id, old.name, new)
            result = STAGE_FUNCTIONS[stage](job)
            seconds = time.perf_counter() - t0
            if not job.still_locked():
                return _lock_lost(job, stage)
            # The marker is written inside the try: on a full disk it fails like the stage.
            stages.finish(StageMarker(stage=stage, config_hash=job.expected[stage],
                                      model_sha256=job.model_sha256, version=__version__,
                                      seconds=round(seconds, 3), result=result))
        except Exception as exc:  # noqa: BLE001 - any error of this slide is recorded, not raised
            if disk_full_error(exc) is not None:
                return _disk_full(job, stage, exc)
            log.error("%s: %s failed: %s (traceback in %s)", job.slide_id, stage, one_line(exc),
                      job.log_path, extra={DETAIL: traceback.format_exc()})
            if not job.still_locked():
                return _lock_lost(job, stage)
            stages.clear_attempt()
            return record_failure(job, stage, type(exc).__name__, str(exc))
        stages.clear_failure()
        stages.clear_attempt()
        log.info("%s: %s done in %.1f s: %s", job.slide_id, stage, seconds, result)
    return {"ok": True, "slide_id": job.slide_id, "stage": stage, "result": result}


def _not_written_now(job: SlideJob, stage: str) -> tuple[str, ...]:
    """Optional outputs of `stage` that an earlier run was asked for and this one is not: set
    aside, not deleted, when the stage is redone (cohort.stages.SlideStages.begin)."""
    if stage != "export":
        return ()
    wanted = job.cfg.export.file_formats()
    return tuple(file for name, file in FORMAT_FILES.items() if name not in wanted)


def _lock_lost(job: SlideJob, stage: str) -> Outcome:
    holder = locks.read_holder(slide_lock(job.out_dir, job.slide_id))
    who = holder.describe() if holder is not None else "nobody (the lock file is gone)"
    log.error("%s: %s stopped: the slide's lock is now held by %s; its folder is left to that run",
              job.slide_id, stage, who)
    return {"ok": False, "slide_id": job.slide_id, "stage": stage, "lock_lost": True,
            "error_type": "LockLost", "error": f"lock taken over by {who}"}


#: What a stage writes outside wsi_pipeline.atomic (which names its file itself), for a full
#: disk whose error names no file (a failed write() names none).
_WRITES = {"infer": MAPS_PARTIAL, "postproc": NUCLEI}


def _disk_full(job: SlideJob, stage: str, exc: BaseException) -> Outcome:
    """`stage` met a full disk: its partial outputs go (unless another run took the slide
    over), then one line names the file and the free space left, and the failure is recorded."""
    stages = SlideStages(job.slide_dir)
    if not job.still_locked():
        return _lock_lost(job, stage)
    full = disk_full_error(exc)
    assert full is not None
    try:
        stages.discard(stage)
    except OSError as cleanup:  # the message below still says what happened
        log.warning("%s: could not remove the partial outputs of %s: %s", job.slide_id, stage, cleanup)
    stages.clear_attempt()
    message = describe(full, job.slide_dir / _WRITES.get(stage, ""))
    message += " (after removing the partial outputs of this stage)"
    log.error("%s: %s failed: %s (traceback in %s)", job.slide_id, stage, message, job.log_path,
              extra={DETAIL: "".join(traceback.format_exception(exc))})
    outcome = {**record_failure(job, stage, DISK_FULL, message), "disk_full": True}
    if job.stop_event is not None:  # now, not when the driver hears of it: no slide starts meanwhile
        _request_stop(job.stop_event)
    return outcome


def record_failure(job: SlideJob, stage: str, error_type: str, error: str) -> Outcome:
    """Write the slide's failure record and return the failed outcome. On a disk too full even
    for the record, the outcome alone carries the failure (the runner puts it in the manifest)."""
    record = {"slide_id": job.slide_id, "stage": stage, "error_type": error_type,
              "error": error.strip().splitlines()[0] if error.strip() else error_type,
              "stage_hash": job.expected["export"],
              "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "host": _host()}
    try:
        SlideStages(job.slide_dir).record_failure(record)
    except OSError as exc:
        full = disk_full_error(exc)
        if full is None:  # a folder we may not write (a colleague's): the slide fails alone
            log.error("%s: the failure could not be recorded in %s: %s", job.slide_id,
                      SlideStages(job.slide_dir).failure_path(), exc.strerror or exc)
            return {"ok": False, **record, "unrecorded": True}
        log.error("%s: the failure could not be recorded in %s: %s", job.slide_id,
                  SlideStages(job.slide_dir).failure_path(), describe(full))
        return {"ok": False, **record, "unrecorded": True, "disk_full": True}
    return {"ok": False, **record}


def _stop_requested(name: str) -> bool:
    """Whether the run's stop Event (a full disk) is set; False where it cannot be asked."""
    try:
        from distributed import Event

        return bool(Event(name).is_set())
    except Exception:  # noqa: BLE001 - no scheduler to ask: run the stage
        return False


def _request_stop(name: str) -> None:
    """Set the run's stop Event, so that no stage task starts after this one (the driver sets
    it as well when the outcome arrives)."""
    try:
        from distributed import Event

        Event(name).set()
    except Exception as exc:  # noqa: BLE001 - no scheduler: the driver stops the run itself
        log.debug("stop event %s not set here: %s", name, exc)


def _worker() -> Any:
    """The Dask worker running this task; None outside one."""
    distributed = sys.modules.get("distributed")  # a worker has it; a run in this process may not
    if distributed is None:
        return None
    try:
        return distributed.get_worker()
    except ValueError:
        return None


def _report(msg: dict[str, Any], worker: Any = None) -> None:
    """Send `msg` to the driver on PROGRESS_TOPIC; nothing outside a Dask worker. `worker`
    (found in the task's thread) lets other threads of the task send too: log_event hands a
    message from another thread to the worker's event loop."""
    worker = worker or _worker()
    if worker is None:
        return
    try:
        worker.log_event(PROGRESS_TOPIC, msg)
    except Exception as exc:  # noqa: BLE001 - progress is a courtesy, never a stage failure
        log.debug("progress event not sent: %s", exc)


def _progress_callback(job: SlideJob, stage: str, unit: str) -> Any:
    """A (done, total) callback for a stage: it calls the STAGE_PROGRESS observers registered
    now on every step, and in a Dask task reports the progress to the driver at most every
    PROGRESS_INTERVAL_S seconds (and always when done == total); None when neither applies.
    It may be called from any thread (infer counts tiles in its writer thread)."""
    worker = _worker()
    to_driver = worker is not None and bool(_task_key())
    observers = tuple(STAGE_PROGRESS)
    if not to_driver and not observers:
        return None
    last = [0.0]

    def report(done: int, total: int) -> None:
        for observer in observers:
            observer(job.slide_id, stage, int(done), int(total))
        now = time.monotonic()
        if not to_driver or (done < total and now - last[0] < PROGRESS_INTERVAL_S):
            return
        last[0] = now
        _report({"kind": "stage_progress", "slide_id": job.slide_id, "stage": stage,
                 "done": int(done), "total": int(total), "unit": unit}, worker)

    return report


# -- the stages ------------------------------------------------------------------------------
def _infer(job: SlideJob) -> dict[str, Any]:
    from wsi_pipeline.cohort.cluster import apply_infer_threads
    from wsi_pipeline.inference.slide import infer_slide
    from wsi_pipeline.io import open_slide

    if job.path.is_dir():
        raise IsADirectoryError(f"{job.path}: is a folder, not a slide file")
    # In a Dask inference worker: the cores it was given, in this thread too (cohort.cluster).
    threads = apply_infer_threads()
    if threads is not None:
        log.info("%s: inference on %d thread(s) (%s)", job.slide_id, *threads)
    with open_slide(job.path, mpp=job.mpp, reader=job.cfg.discovery.reader) as slide:
        _slide_mpp(job, slide)
        model = _model(job)
        res = infer_slide(slide, job.slide_dir, job.cfg.infer, model, progress=job.progress,
                          on_tiles=_progress_callback(job, "infer", "tile"))
    return {"tissue_mm2": float(res.tissue_mm2), "n_tiles": int(res.n_tiles),
            "no_tissue": bool(res.no_tissue), "infer_seconds": round(float(res.seconds), 3),
            "mpp": slide.mpp, "mpp_source": slide.mpp_source}


def _slide_mpp(job: SlideJob, slide: Any) -> None:
    """Give `slide` its pixel size by the run's rules and log where it came from (the slide
    log is where a user looks when a slide's nuclei are all the wrong size)."""
    from wsi_pipeline.cohort.mpp import ResolvedMpp, resolve_mpp

    native = slide.native_mpp()
    if job.mpp is not None:
        resolved = ResolvedMpp(job.mpp, job.mpp_source or "given",
                               native=native[0] if native else None,
                               native_source=native[1] if native else None)
    else:  # a job made without the preflight: the same rules, applied here
        resolved = resolve_mpp(native, override=job.cfg.mpp_override, fallback=job.cfg.mpp,
                               objective_power=slide.objective_power)
    if resolved.value is not None:
        slide.use_mpp(resolved.value, resolved.source or "given")
    log.info("%s: pixel size %s", job.slide_id, resolved.describe())


def _postproc(job: SlideJob) -> dict[str, Any]:
    from wsi_pipeline.postproc.slide import postprocess_slide

    maps, out = job.slide_dir / MAPS, job.slide_dir / NUCLEI
    with _cluster_client() as client:
        res = postprocess_slide(maps, out, job.cfg.postproc, client=client, progress=job.progress,
                                chunking=job.cfg.chunking,
                                on_chunks=_progress_callback(job, "postproc", "chunk"),
                                slide_path=job.path, reader=job.cfg.discovery.reader)
    return {"n_nuclei": int(res.n_nuclei)}


def _export(job: SlideJob) -> dict[str, Any]:
    from wsi_pipeline.export.stage import export_slide

    summary = export_slide(job.slide_dir, job.cfg.export)
    return {"n_nuclei": summary.get("n_nuclei"), "qc": ";".join(summary["qc"]["flags"])}


#: The function `run_stage` calls for each stage, looked up by name at every call: the seam where a
#: test (or a worker preload) puts a stage that fails, pauses or dies in its place, e.g.
#: ``monkeypatch.setitem(tasks.STAGE_FUNCTIONS, "infer", broken)``. Each takes the SlideJob and
#: returns the result its marker records.
STAGE_FUNCTIONS: dict[str, Callable[[SlideJob], dict[str, Any]]] = {
    "infer": _infer, "postproc": _postproc, "export": _export,
}

#: Observers of the stages that report progress (infer: tiles, postproc: chunks), called as
#: ``observer(slide_id, stage, done, total)`` on every step, in the process and thread that
#: runs the stage (a Dask worker's, or the run's own with ``--workers 0``; infer calls from its
#: writer thread); those in the list when a stage starts are the ones it calls. This is how a
#: program that embeds the runner watches its slides without a Dask dashboard. The last call
#: (done == total) comes when the stage has written its bulk output but not yet committed it
#: (`inference.slide.infer_slide`'s `on_tiles`, `postproc.slide.postprocess_slide`'s
#: `on_chunks` promise it): every tile is in maps.zarr.partial, whose attributes are not yet
#: written nor the folder renamed; every chunk but the last has gone to the table writer (its
#: full row groups in the table's temporary file), which is neither closed nor renamed.
#: An observer's exception is the stage's own (it fails there, as a write error would), so
#: the fault tests pause or fail a stage mid-way through this seam, as they replace a stage
#: through STAGE_FUNCTIONS: ``monkeypatch.setattr(tasks, "STAGE_PROGRESS", [fail_when_done])``.
#: Export reports no progress and calls none.
STAGE_PROGRESS: list[Callable[[str, str, int, int], None]] = []


def _model(job: SlideJob) -> Any:
    """The checkpoint loaded once per worker process and device."""
    from wsi_pipeline.model import load_checkpoint
    from wsi_pipeline.model.runtime import RuntimeUnavailable, choose_runtime

    infer = job.cfg.infer
    try:
        device = str(choose_runtime(infer.device, infer.precision, infer.backend).device)
    except RuntimeUnavailable as exc:
        raise RuntimeError(f"{exc}, on {_host()}") from exc
    key = (str(job.checkpoint), job.model_sha256, device)
    with _MODELS_LOCK:
        if key not in _MODELS:
            log.info("loading model %s on %s", job.checkpoint, device)
            loaded = load_checkpoint(job.checkpoint, map_location=device)
            if loaded.sha256 != job.model_sha256:
                raise RuntimeError(
                    f"{job.checkpoint} changed during the run (sha256 {loaded.sha256[:12]}, "
                    f"expected {job.model_sha256[:12]})"
                )
            _MODELS[key] = loaded
        return _MODELS[key]


@contextmanager
def _cluster_client() -> Iterator[Any]:
    """Inside a Dask task: a client that may submit sub-tasks (the thread secedes meanwhile)."""
    try:
        from distributed import get_worker, worker_client

        get_worker()
    except (ImportError, ValueError):
        yield None
        return
    with worker_client() as client:
        yield client


def _task_key() -> str:
    """The Dask key of the task running this code; "" outside a Dask worker."""
    distributed = sys.modules.get("distributed")  # a worker has it; a run in this process may not
    if distributed is None:
        return ""
    try:
        return str(distributed.get_worker().get_current_task() or "")
    except ValueError:
        return ""


def _host() -> str:
    import socket

    return socket.gethostname()


# -- per-slide log files ----------------------------------------------------------------------
#: `log.error(..., extra={DETAIL: text})`: `text` (a traceback) goes to the slide and run log
#: files only; the console shows the one-line message.
DETAIL = "detail"


def one_line(exc: BaseException) -> str:
    """'Type: first line of the message', for the console."""
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text.splitlines()[0]}" if text else type(exc).__name__


class _DetailFormatter(logging.Formatter):
    """Log-file lines, followed by the record's DETAIL (a traceback) where it has one."""

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        detail = getattr(record, DETAIL, None)
        return f"{text}\n{str(detail).rstrip()}" if detail else text


class _LogFileHandler(logging.FileHandler):
    """A log file that, on a full disk, drops lines quietly: logging's default is a traceback
    on stderr for every line (dozens per failed slide), burying the one line that says the disk
    is full. The console still shows every line."""

    def handleError(self, record: logging.LogRecord) -> None:
        if disk_full_error(sys.exc_info()[1]) is None:
            super().handleError(record)

    def flush(self) -> None:
        try:
            super().flush()
        except OSError as exc:
            if disk_full_error(exc) is None:
                raise

    def close(self) -> None:  # closing flushes: on a full disk that raises out of `finally`
        try:
            super().close()
        except OSError as exc:
            if disk_full_error(exc) is None:
                raise


class _ThreadFilter(logging.Filter):
    def __init__(self, thread_id: int):
        super().__init__()
        self.thread_id = thread_id

    def filter(self, record: logging.LogRecord) -> bool:
        return record.thread == self.thread_id


@contextmanager
def log_to_file(path: Path, *, this_thread_only: bool = True) -> Iterator[None]:
    """Append `wsi_pipeline` log records to `path` while the block runs.

    For a slide log, other slides' tasks in the same worker process run in other threads;
    `this_thread_only` keeps their lines out. The run log takes every thread.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    handler = _LogFileHandler(path, encoding="utf-8")
    handler.setFormatter(_DetailFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    if this_thread_only:
        handler.addFilter(_ThreadFilter(threading.get_ident()))
    pkg = logging.getLogger("wsi_pipeline")
    _raise_to_info(pkg)
    pkg.addHandler(handler)
    try:
        yield
    finally:
        pkg.removeHandler(handler)
        handler.close()
        _restore_level(pkg)


# Slide logs keep INFO whatever the console shows. Several slides' blocks overlap in one worker
# process, so the package level is raised by the first block to open and restored by the last.
_LEVEL_LOCK = threading.Lock()
_LEVEL_USERS = 0
_SAVED_LEVEL = logging.NOTSET


def _raise_to_info(pkg: logging.Logger) -> None:
    global _LEVEL_USERS, _SAVED_LEVEL
    with _LEVEL_LOCK:
        if _LEVEL_USERS == 0:
            _SAVED_LEVEL = pkg.level
            if pkg.getEffectiveLevel() > logging.INFO:
                pkg.setLevel(logging.INFO)
        _LEVEL_USERS += 1


def _restore_level(pkg: logging.Logger) -> None:
    global _LEVEL_USERS
    with _LEVEL_LOCK:
        _LEVEL_USERS -= 1
        if _LEVEL_USERS == 0:
            pkg.setLevel(_SAVED_LEVEL)
