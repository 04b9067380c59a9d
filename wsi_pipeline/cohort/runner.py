"""Run a cohort: plan from the stage markers, schedule what is left, isolate failures.

Everything that can be checked cheaply is checked before any work starts (output folder,
config, checkpoint, input list, and each slide's file and pixel size: see preflight.py). Slides
whose stages are all done under the current settings cost an open, a stat and a JSON read each:
a rerun of a finished cohort loads no model and starts no cluster. Each slide's stages run as a
chain of Dask tasks; a slide that fails is recorded and the others go on.

Several runs may share one OUT (SLURM array jobs given different slides, two hosts on one
cohort): a run locks each slide it is going to write (OUT/<slide>/slide.lock) while it plans,
and skips, naming the holder, every slide another live run holds. The manifest is merged under
a short lock, never overwritten with one run's view only (manifest_merge.py).

A full disk fails the slide that meets it (tasks.py) and stops the run from starting any other
slide: every one would fail the same way. What finished stays finished; the slides not started
stay pending and the failed one is retried by the next run. A manifest write that meets a full
disk leaves the previous manifest whole (it is replaced atomically) and is said in one line.
"""

from __future__ import annotations

import logging
import os
import signal
import tempfile
import threading
import time
import traceback
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from wsi_pipeline.cohort import locks
from wsi_pipeline.cohort.config import RunConfig
from wsi_pipeline.cohort.discover import SlideEntry, discover
from wsi_pipeline.cohort.layout import UnsafeSlideId, slide_dir, slide_lock
from wsi_pipeline.cohort.manifest import known_ids, slide_row
from wsi_pipeline.cohort.manifest_merge import write_shared_manifest
from wsi_pipeline.cohort.preflight import (
    PreflightError,
    SlideCheck,
    check_checkpoint,
    check_colour,
    check_slides,
    estimate_disk,
    mpp_refusal,
)
from wsi_pipeline.cohort.stages import (
    STAGES,
    SlideStages,
    canonical_hash,
    legacy_fingerprint,
    slide_fingerprint,
    stage_hashes,
)
from wsi_pipeline.cohort.tasks import (
    DETAIL,
    PROGRESS_TOPIC,
    SlideJob,
    log_to_file,
    one_line,
    record_failure,
    run_stage,
)
from wsi_pipeline.diskfull import DISK_FULL, describe, disk_full_error
from wsi_pipeline.hashing import file_sha256

log = logging.getLogger(__name__)

#: Seconds between manifest rewrites while slides finish (always rewritten at the end).
MANIFEST_INTERVAL_S = 5.0

EventHandler = Callable[[str, dict[str, Any]], None]


#: Times a slide is resubmitted after Dask gave up on a task of it that had not even started.
REQUEUE_LIMIT = 3


class RunSetupError(ValueError):
    """The run cannot start; raised before any slide is touched."""


class RunInterrupted(KeyboardInterrupt):
    """SIGTERM (a SLURM time limit, `docker stop`, `kill`) or SIGINT stopped the run: the
    slide locks it held were released on the way out, finished stages are kept."""

    def __init__(self, signum: int):
        self.signum = signum
        super().__init__(f"stopped by {signal.Signals(signum).name}: the slide locks of this run were "
                         "released; finished stages are kept, rerun to resume")


class ManifestLocked(RunSetupError):
    """OUT/.manifest.lock stayed held past its expiry: one line naming the holder (and
    --break-locks where this host cannot see it), not a traceback."""


class DiskFullError(RunSetupError):
    """The disk filled outside any slide's stage (taking a slide lock while planning): the run
    stops; whatever finished before stays finished."""


@dataclass
class SlidePlan:
    entry: SlideEntry
    expected: dict[str, str] | None  # None when the file cannot even be stat'ed
    pending: list[str]
    skipped_failure: dict[str, Any] | None = None  # failed before and not retried
    locked_by: locks.LockHolder | None = None  # another run holds the slide: skipped


@dataclass
class _Chain:
    """One slide's stage tasks as submitted: stages in order, and the stage of each task key."""

    plan: SlidePlan
    index: int  # the slide's place in the run (task priority)
    stages: list[str]
    requeued: int = 0
    stage_of: dict[str, str] = field(default_factory=dict)


@dataclass
class RunReport:
    out_dir: Path
    rows: list[dict[str, Any]]
    seconds: float
    ran_stages: int = 0
    dashboard_link: str | None = None
    summary_path: Path | None = None
    failures: list[dict[str, Any]] = field(default_factory=list)
    #: Slides skipped because another run holds them: (slide_id, holder, lock file).
    locked: list[tuple[str, locks.LockHolder | None, Path]] = field(default_factory=list)
    #: What a full disk stopped, one line each (the run, a manifest or summary write).
    disk_full: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.failures and not self.disk_full

    @property
    def blocked(self) -> bool:
        """Slides were left to do, this run ran none of them, and only because other runs
        hold their locks (a requeued job that finds its own dead run's locks from another node
        must not exit 0 with every slide pending)."""
        return bool(self.locked) and self.ran_stages == 0

    def blocked_line(self) -> str:
        """The line the CLI prints when `blocked` (it then exits with status 3)."""
        return (f"nothing was run: the {len(self.locked)} slide(s) left to do are locked by other runs "
                "(listed above); if those runs are dead, rerun with --break-locks")

    def failure_lines(self) -> list[str]:
        return [f"{r['slide_id']}: {r['failed_stage']}: {r['error_type']}: {r['error']}"
                for r in self.failures]

    def locked_lines(self) -> list[str]:
        return [f"{sid}: locked by another run ({h.describe() if h else 'unknown holder'}): {path}"
                for sid, h, path in self.locked]


def check_output_dir(out_dir: Path, create: bool = True) -> Path:
    """OUT may not exist yet but its parent must, and OUT must be writable: fail now, not later."""
    out_dir = Path(out_dir).expanduser().absolute()
    if out_dir.exists() and not out_dir.is_dir():
        raise RunSetupError(f"output path {out_dir} exists and is not a folder")
    if not out_dir.exists():
        if not out_dir.parent.is_dir():
            raise RunSetupError(f"parent folder of the output does not exist: {out_dir.parent}")
        if not os.access(out_dir.parent, os.W_OK | os.X_OK):
            raise RunSetupError(f"cannot create {out_dir}: parent folder {out_dir.parent} is not writable")
        if not create:
            return out_dir
        out_dir.mkdir()
    elif not create:
        if not os.access(out_dir, os.W_OK | os.X_OK):
            raise RunSetupError(f"output folder {out_dir} is not writable")
        return out_dir
    try:
        with tempfile.NamedTemporaryFile(dir=out_dir, prefix=".write-probe-"):
            pass
    except OSError as exc:
        raise RunSetupError(f"output folder {out_dir} is not writable: {exc.strerror}") from exc
    return out_dir


def resolve_checkpoint(cfg: RunConfig) -> Path:
    if cfg.checkpoint is not None:
        path = Path(cfg.checkpoint).expanduser().absolute()
        if not path.is_file():
            raise RunSetupError(f"checkpoint not found: {path}")
        return path
    from wsi_pipeline.model import CheckpointError, default_checkpoint_path

    try:
        return default_checkpoint_path()
    except CheckpointError as exc:
        raise RunSetupError(str(exc)) from exc


def _locked(lock: threading.Lock, handler: EventHandler, kind: str, info: dict[str, Any]) -> None:
    with lock:
        handler(kind, info)


@contextmanager
def _distributed_to_run_log() -> Iterator[None]:
    """Dask's own log lines and warnings (port in use, no bokeh, comms closing) while the cluster
    starts and stops go to the run log (the package's handlers), not to the console."""
    import warnings

    dist = logging.getLogger("distributed")
    relay = _Relay()
    saved = dist.propagate
    dist.addHandler(relay)
    dist.propagate = False
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            yield
    finally:
        dist.removeHandler(relay)
        dist.propagate = saved
    for w in caught:
        log.info("dask: %s", w.message)


@contextmanager
def _signals_interrupt(on_signal: Callable[[], None] | None = None) -> Iterator[None]:
    """While the block runs in the main thread, SIGTERM and SIGINT raise RunInterrupted there
    (Python's default for SIGTERM is to die at once, skipping every `finally` that releases a
    lock), after calling `on_signal` (the runner releases its locks then, first thing).
    Elsewhere (a thread of an embedding program) signals are left as they are."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    owner = os.getpid()

    def interrupt(signum: int, _frame: Any) -> None:
        if os.getpid() != owner:
            # a process forked while the block ran (the post-processing pool's workers) inherits
            # this handler: it holds no lock, so it dies as it would have, without a traceback
            signal.signal(signum, signal.SIG_DFL)
            os.kill(os.getpid(), signum)
            return
        for sig in saved:  # a second signal must not interrupt the release of the locks
            signal.signal(sig, signal.SIG_IGN)
        log.warning("received %s: stopping, releasing this run's slide locks", signal.Signals(signum).name)
        if on_signal is not None:
            on_signal()
        raise RunInterrupted(signum)

    saved: dict[int, Any] = {}
    for caught in (signal.SIGTERM, signal.SIGINT):
        saved[caught] = signal.signal(caught, interrupt)
    try:
        yield
    finally:
        for sig, handler in saved.items():
            signal.signal(sig, handler)


class _Relay(logging.Handler):
    """Hands `distributed` records to this module's logger at INFO: they reach the run log (it
    takes INFO) and stay off the console (it shows warnings)."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            log.info("dask %s: %s", record.name, record.getMessage())
        except Exception:  # noqa: BLE001 - logging must never raise
            self.handleError(record)


class CohortRunner:
    """Plan and run one cohort into one output folder."""

    def __init__(self, source: Path, out_dir: Path, cfg: RunConfig,
                 on_event: EventHandler | None = None, dry_run: bool = False,
                 break_locks: bool = False):
        """`break_locks` takes over slide locks held from other hosts (whose runs this host
        cannot see); locks of dead runs on this host are always taken over."""
        self.cfg = cfg
        self.break_locks = break_locks
        self.holder = locks.me("wsi-pipeline run")
        self._held: set[str] = set()  # slides this run has locked
        self._foreign: set[str] = set()  # slides other runs hold: their manifest rows are kept
        self.on_event = on_event or (lambda kind, info: None)
        # OUT is checked now but created only once the checkpoint and the input are known to be
        # there: a run on a mistyped input leaves no empty output folder behind.
        self.out_dir = check_output_dir(out_dir, create=False)
        self.checkpoint = resolve_checkpoint(cfg)
        self.model_sha256 = file_sha256(self.checkpoint)
        self.config_hash = canonical_hash(cfg.stage_configs())
        try:
            self.entries = discover(Path(source), tuple(cfg.discovery.extensions),
                                    cfg.discovery.probe_unknown, known_ids=known_ids(self.out_dir))
        except ValueError as exc:
            raise RunSetupError(str(exc)) from exc
        for entry in self.entries:
            try:
                slide_dir(self.out_dir, entry.slide_id)
            except UnsafeSlideId as exc:
                raise RunSetupError(str(exc)) from exc
        if not dry_run:
            check_output_dir(self.out_dir, create=True)
        self._last_manifest = 0.0
        self._checks: dict[str, SlideCheck] | None = None
        self._n_unreadable = 0  # slides the preflight found unopenable and recorded as failed
        self._full: str | None = None  # what met a full disk first: the run starts no more slides
        self._full_writes: dict[str, str] = {}  # run-level files not replaced, and why
        self._unrecorded: dict[str, dict[str, Any]] = {}  # failures the disk had no room for
        self._stop_event: str | None = None  # Dask Event name the stage tasks check
        self._client: Any = None

    # -- planning --------------------------------------------------------------------------
    def plan(self, lock: bool = False) -> list[SlidePlan]:
        """What each slide needs. With `lock`, every slide that will run is locked for this run
        first and then planned again from disk (the run that held it before may have finished
        it); without (the dry run), slides other runs hold are only reported."""
        self.slide_checks()  # every slide opened once (the preflight), before any is planned
        threads = max(1, min(self.cfg.preflight.open_threads, len(self.entries)))
        if threads == 1:
            return [self._plan_slide(entry, self._stage_configs(entry), lock) for entry in self.entries]
        # A few slides at once: verifying the outputs a pending stage reads (maps.zarr's chunk
        # checksums) reads them whole, which is I/O-bound, like opening slides on network storage.
        pool = ThreadPoolExecutor(threads, thread_name_prefix="plan")
        try:
            return list(pool.map(lambda e: self._plan_slide(e, self._stage_configs(e), lock), self.entries))
        finally:  # on SIGTERM: start no other slide's plan; those running finish (their locks are held)
            pool.shutdown(wait=True, cancel_futures=True)

    def _plan_slide(self, entry: SlideEntry, stage_cfgs: dict[str, Any], lock: bool) -> SlidePlan:
        expected: dict[str, str] | None
        legacy: dict[str, str] | None
        try:
            expected = stage_hashes(stage_cfgs, self.model_sha256, slide_fingerprint(entry.path))
            legacy = stage_hashes(stage_cfgs, self.model_sha256, legacy_fingerprint(entry.path))
        except OSError:
            expected = legacy = None
        judge = None
        if not lock and expected is not None and legacy is not None:  # the dry run writes nothing:
            # markers of the fingerprint without content count as the upgrade a run makes of them
            judge = SlideStages(slide_dir(self.out_dir, entry.slide_id)).as_upgraded(legacy, expected)
        plan = self._plan_from_disk(entry, expected, verify=not lock, judge=judge)
        if not plan.pending:
            return plan
        if not lock:  # the dry run: report a holder that a run would not take over
            path = slide_lock(self.out_dir, entry.slide_id)
            holder = locks.read_holder(path)
            if holder is None or locks.stale_reason(path, break_foreign=self.break_locks) is not None:
                return plan
            return SlidePlan(entry, expected, [], locked_by=holder)
        try:
            locks.acquire(slide_lock(self.out_dir, entry.slide_id), self.holder,
                          break_foreign=self.break_locks)
        except locks.LockHeld as exc:
            log.warning("%s: skipped: %s", entry.slide_id, exc)
            return SlidePlan(entry, expected, [], locked_by=exc.holder)
        except OSError as exc:
            if disk_full_error(exc) is not None:
                raise
            # A slide folder this user may not write (a colleague's, read-only storage): the
            # slide fails alone, in the manifest only (nothing can be written in its folder).
            folder = slide_dir(self.out_dir, entry.slide_id)
            error = (f"{folder}: cannot write the slide's folder ({exc.strerror or exc}): check its "
                     "owner and permissions, or give this run another output folder")
            log.error("%s: %s", entry.slide_id, error)
            self._unrecorded[entry.slide_id] = {"stage": plan.pending[0], "error_type": type(exc).__name__,
                                                "error": error}
            return SlidePlan(entry, expected, [])
        self._held.add(entry.slide_id)
        if expected is not None and legacy is not None:
            upgraded = SlideStages(slide_dir(self.out_dir, entry.slide_id)).upgrade_hashes(legacy, expected)
            if upgraded:
                log.info("%s: markers of %s upgraded to the fingerprint with a content sample",
                         entry.slide_id, ", ".join(upgraded))
        plan = self._plan_from_disk(entry, expected)
        if not plan.pending:
            self._unlock(entry.slide_id)
        return plan

    def _plan_from_disk(self, entry: SlideEntry, expected: dict[str, str] | None,
                        verify: bool = True, judge: dict[str, str] | None = None) -> SlidePlan:
        """The slide's plan from its markers (judged against `judge` where given, else
        `expected`). With `verify`, the outputs a pending stage reads are checked byte for byte
        first; a damaged one is one warning and is redone."""
        if expected is None:
            return SlidePlan(entry, None, list(STAGES))
        stages = SlideStages(slide_dir(self.out_dir, entry.slide_id))
        pending = stages.pending(judge or expected, self.model_sha256, verify=verify)
        if verify:
            for problem in stages.problems:
                log.warning("%s: %s", entry.slide_id, problem)
        failure = stages.read_failure()
        if (pending and failure is not None and not self.cfg.retry_failed
                and failure.get("stage_hash") == expected["export"]
                and failure.get("error_type") != DISK_FULL):  # the disk's fault: retried
            return SlidePlan(entry, expected, [], skipped_failure=failure)
        return SlidePlan(entry, expected, pending)

    def _unlock(self, slide_id: str) -> None:
        if slide_id in self._held:
            self._held.discard(slide_id)
            locks.release(slide_lock(self.out_dir, slide_id), self.holder)

    def job(self, plan: SlidePlan, progress: bool) -> SlideJob:
        expected = plan.expected or {s: "unreadable" for s in STAGES}
        return SlideJob(slide_id=plan.entry.slide_id, path=plan.entry.path, out_dir=self.out_dir,
                        cfg=self.cfg, checkpoint=self.checkpoint, model_sha256=self.model_sha256,
                        expected=expected, progress=progress, lock_token=self.holder.token,
                        stop_event=self._stop_event, **self._job_mpp(plan.entry))

    # -- running ---------------------------------------------------------------------------
    def run(self) -> RunReport:
        """Run the plan. SIGTERM and SIGINT stop it as RunInterrupted, releasing every slide
        lock it holds first (within SLURM's grace period: no slide is left locked for the
        requeued job to skip)."""
        with log_to_file(self.out_dir / "logs" / "run.log", this_thread_only=False), \
                _signals_interrupt(on_signal=self._release_all):
            try:
                return self._run()
            except OSError as exc:  # met outside the stages, which handle their own
                full = disk_full_error(exc)
                if full is None:
                    raise
                raise DiskFullError(f"{describe(full)}; the run stopped (nothing finished is lost: "
                                    "free space and rerun)") from exc
            finally:  # also on Ctrl-C and errors: a lock left behind would hold off other runs
                self._release_all()

    def _release_all(self) -> None:
        """Release every slide lock this run holds (at its end, and at once on SIGTERM, before
        the cluster is closed: SLURM's grace period may not wait for that)."""
        for slide_id in list(self._held):
            self._unlock(slide_id)

    def _run(self) -> RunReport:
        t0 = time.perf_counter()
        self._refuse_bad_mpp()
        plans = self.plan(lock=True)
        log.info("run: %d slides into %s, model %s (sha256 %s)", len(plans), self.out_dir,
                 self.checkpoint, self.model_sha256[:12])
        todo = [p for p in plans if p.pending]
        todo = self._preflight(todo)
        self._foreign = {p.entry.slide_id for p in plans if p.locked_by is not None}
        self.on_event("planned", {"total": len(plans), "todo": len(todo),
                                  "skipped_failed": sum(p.skipped_failure is not None for p in plans),
                                  "locked": len(self._foreign),
                                  "unreadable": self._n_unreadable})
        rows = {p.entry.slide_id: self._row(p) for p in plans}
        for p in plans:
            if not p.pending and p.locked_by is None:
                self.on_event("slide_done", {"row": rows[p.entry.slide_id], "ran": False})
        self._write_manifest(rows, force=True)
        dashboard = None
        ran = sum(len(p.pending) for p in todo)
        try:
            if todo:
                if self._in_process(len(todo)):
                    self._run_in_process(todo, rows)
                else:
                    dashboard = self._run_on_cluster(todo, rows)
        finally:
            for p in todo:
                rows[p.entry.slide_id] = self._row(p)
            self._write_manifest(rows, force=True)
        report = RunReport(out_dir=self.out_dir, rows=list(rows.values()),
                           seconds=time.perf_counter() - t0, ran_stages=ran, dashboard_link=dashboard,
                           failures=[r for r in rows.values() if r["status"] == "failed"],
                           locked=[(p.entry.slide_id, p.locked_by,
                                    slide_lock(self.out_dir, p.entry.slide_id))
                                   for p in plans if p.locked_by is not None])
        if self.cfg.summarize:
            from wsi_pipeline.cohort.summarize import summarize_cohort

            try:
                report.summary_path = summarize_cohort(self.out_dir).table_path
            except OSError as exc:
                if disk_full_error(exc) is None:
                    raise
                self._disk_full_write("the cohort summary", exc)
        left = sum(rows[p.entry.slide_id]["status"] == "pending" for p in todo)
        if self._full is not None and left:
            report.disk_full.append(f"disk full: no slide was started after {self._full}; {left} "
                                    "left pending, finished stages kept: free space and rerun "
                                    "(slides that failed on the full disk are retried too)")
        report.disk_full += self._full_writes.values()
        log.info("run finished in %.1f s: %d stages scheduled, %d slides failed", report.seconds, ran,
                 len(report.failures))
        return report

    def _in_process(self, n_todo: int) -> bool:
        c = self.cfg.cluster
        if c.scheduler:
            return False
        return c.workers == 0 or (c.workers is None and n_todo == 1)

    def _run_in_process(self, todo: list[SlidePlan], rows: dict[str, dict]) -> None:
        for plan in todo:
            if self._full is not None:
                break  # a full disk: every next slide would fail too
            job = self.job(plan, progress=True)
            outcome = None
            for stage in plan.pending:
                self.on_event("stage_started", {"slide_id": job.slide_id, "stage": stage})
                outcome = run_stage(job, stage, outcome)
                if not outcome["ok"]:
                    break
            self._slide_finished(plan, rows, outcome)

    def _run_on_cluster(self, todo: list[SlidePlan], rows: dict[str, dict]) -> str | None:
        with _distributed_to_run_log():
            return self._cluster_run(todo, rows)

    def _cluster_run(self, todo: list[SlidePlan], rows: dict[str, dict]) -> str | None:
        from distributed import as_completed

        from wsi_pipeline.cohort.cluster import open_cluster

        existing = [p.entry.path for p in todo if p.entry.path.exists()]
        handle = open_cluster(self.cfg.cluster, self.cfg.infer.device, self.out_dir, existing)
        self.on_event("cluster", {"dashboard": handle.dashboard_link, "infer_slots": handle.infer_slots,
                                  "external": handle.cluster is None,
                                  "dashboard_note": handle.dashboard_note})
        # Stage tasks report their start and their tiles/chunks on PROGRESS_TOPIC (tasks.py);
        # the handler runs in the client's event-loop thread, so events reach on_event one at
        # a time, under a lock shared with the driver's own events.
        emit_lock = threading.Lock()
        on_event = self.on_event

        def on_progress(event: tuple[float, Any]) -> None:
            msg = event[1]
            try:
                _locked(emit_lock, on_event, msg["kind"], msg)
            except Exception as exc:  # noqa: BLE001 - a progress line must never stop the run
                log.debug("progress event %r not shown: %s", msg, exc)

        self.on_event = lambda kind, info: _locked(emit_lock, on_event, kind, info)
        try:
            client = handle.client
            self._client = client
            client.subscribe_topic(PROGRESS_TOPIC, on_progress)
            # Set on a full disk: stage tasks that have not started return at once.
            self._stop_event = f"wsi-pipeline-stop-{self.holder.token}"
            # Only each chain's last future is held. A future the driver holds is a result Dask
            # keeps wanted: when a worker holding it dies, Dask recomputes it, and a recomputed
            # stage redoes its side effects (deletes and rewrites the slide's outputs, clears its
            # failure record), even after the slide was reported. Intermediate results stay
            # alive only while the next stage needs them.
            chains: dict[str, _Chain] = {}

            def submit(chain: _Chain) -> Any:
                job = self.job(chain.plan, progress=False)
                prev: Any = None  # the last stage's Future (a chain has at least one stage)
                for stage in chain.stages:
                    resources = {self.cfg.cluster.infer_resource: 1} if stage == "infer" else None
                    # Later stages first, earlier slides first: finished slides pile up early.
                    priority = STAGES.index(stage) * 1_000_000 - chain.index
                    prev = client.submit(run_stage, job, stage, prev, resources=resources,
                                         priority=priority, pure=False,
                                         key=f"{stage}-{job.slide_id}-{os.urandom(4).hex()}")
                    chain.stage_of[prev.key] = stage
                chains[prev.key] = chain
                return prev

            done = as_completed([submit(_Chain(plan, i, list(plan.pending))) for i, plan in enumerate(todo)])
            for last in done:
                chain = chains.pop(last.key)
                if last.status != "finished":
                    again = self._lost(chain, last.exception())
                    if again is not None:
                        done.add(submit(again))
                        continue
                outcome = last.result() if last.status == "finished" else None
                self._slide_finished(chain.plan, rows, outcome)
                del last  # released: a later worker death does not recompute this slide
        finally:
            self.on_event = on_event
            self._client = None
            try:
                handle.client.unsubscribe_topic(PROGRESS_TOPIC)
            except Exception as exc:  # noqa: BLE001 - the client may be gone already
                log.debug("progress topic not unsubscribed: %s", exc)
            handle.close()
        return handle.dashboard_link

    def _lost(self, chain: _Chain, exc: BaseException) -> _Chain | None:
        """A chain that ended in an exception lost its worker (stage errors are outcomes).

        A dependent fails with its failed dependency's exception, so KilledWorker names the task
        whose workers died. Dask blames every task assigned to a dying worker, also those only
        waiting there behind the one that killed it: a slide whose lost task never started
        (its attempt record holds another key) is resubmitted, up to REQUEUE_LIMIT times:
        the chain to submit is returned. Otherwise the failure is recorded for the lost stage.
        """
        from distributed import KilledWorker

        job = self.job(chain.plan, progress=False)
        slide = SlideStages(job.slide_dir)
        task = getattr(exc, "task", None)
        stage = chain.stage_of.get(task) if isinstance(task, str) else None
        if stage is None:  # not a KilledWorker: the first stage not done on disk
            stage = next((s for s in chain.stages
                          if not slide.is_done(s, job.expected[s], job.model_sha256)), chain.stages[-1])
        started = slide.read_attempt() == exc.task if isinstance(exc, KilledWorker) else True
        with log_to_file(job.log_path):
            rest = slide.pending(job.expected, job.model_sha256, verify=False)
            if not started and rest and chain.requeued < REQUEUE_LIMIT:
                log.warning("%s: %s lost with a worker that died while it was not running it: "
                            "resubmitted from %s", job.slide_id, stage, rest[0])
                return _Chain(chain.plan, chain.index, rest, requeued=chain.requeued + 1)
            log.error("%s: %s lost: %s (traceback in %s)", job.slide_id, stage, one_line(exc),
                      job.log_path, extra={DETAIL: "".join(traceback.format_exception(exc))})
        if job.still_locked():
            record_failure(job, stage, type(exc).__name__, str(exc))
        return None

    def _slide_finished(self, plan: SlidePlan, rows: dict[str, dict],
                        outcome: dict[str, Any] | None = None) -> None:
        if outcome is not None and outcome.get("unrecorded"):
            self._unrecorded[plan.entry.slide_id] = outcome
        if outcome is not None and outcome.get("disk_full"):
            self._stop(f"{plan.entry.slide_id}'s {outcome['stage']}")
        row = self._row(plan)
        rows[plan.entry.slide_id] = row
        self._unlock(plan.entry.slide_id)
        self.on_event("slide_done", {"row": row, "ran": True})
        self._write_manifest(rows)

    def _row(self, plan: SlidePlan) -> dict[str, Any]:
        row = slide_row(self.out_dir, plan.entry, plan.expected, self.model_sha256, self.config_hash,
                        mpp=self._row_mpp(plan.entry))
        if plan.expected is None and row["status"] == "pending":
            row.update(status="failed", failed_stage="infer", error_type="FileNotFoundError",
                       error=f"{plan.entry.path}: cannot read the file")
        elif row["status"] in ("done", "no_tissue") and plan.expected is not None:
            stages = SlideStages(slide_dir(self.out_dir, plan.entry.slide_id))
            if stages.pending(plan.expected, self.model_sha256, verify=False):
                row["status"] = "pending"  # its markers are there, an output they promise is not
        lost = self._unrecorded.get(plan.entry.slide_id)
        if lost is not None and row["status"] == "pending":  # no room for its failed.json
            row.update(status="failed", failed_stage=lost["stage"], error_type=lost["error_type"],
                       error=lost["error"])
        return row

    # -- a full disk ----------------------------------------------------------------------------
    def _stop(self, what: str) -> None:
        """`what` met a full disk: start no more slides (on a cluster, stage tasks not yet
        running return at once)."""
        if self._full is not None:
            return
        self._full = what
        log.info("disk full (%s): no more slides are started; what finished is kept", what)
        if self._client is not None and self._stop_event is not None:
            from distributed import Event

            Event(self._stop_event, client=self._client).set()

    def _disk_full_write(self, what: str, exc: OSError) -> None:
        """A run-level write (the manifest, the cohort summary) met a full disk: one line, and
        the run starts no more slides. The file it would have replaced is left whole."""
        full = disk_full_error(exc)
        assert full is not None
        line = f"{describe(full)}; {what} was not replaced (the previous one, if any, is whole)"
        log.error("%s", line, extra={DETAIL: "".join(traceback.format_exception(exc))})
        self._full_writes[what] = line
        self._stop(f"a write of {what}")

    # -- preflight (preflight.py) -------------------------------------------------------------
    def slide_checks(self) -> dict[str, SlideCheck]:
        """Every slide opened once, its pixel size resolved; cached (plan and run share it)."""
        if self._checks is None:
            self._checks = check_slides(self.entries, self.cfg)
            sources = Counter(c.mpp.source for c in self._checks.values() if c.mpp and c.mpp.value)
            log.info("preflight: %d slides opened; pixel size from %s", len(self._checks),
                     ", ".join(f"{k}: {n}" for k, n in sorted(sources.items())) or "nowhere")
        return self._checks

    def _stage_configs(self, entry: SlideEntry) -> dict[str, Any]:
        """The slide's stage settings: the run's, with the pixel size the user chose for it."""
        check = self.slide_checks().get(entry.slide_id)
        if check is not None and check.mpp is not None:
            return self.cfg.stage_configs(mpp=check.mpp.hash_value)
        return self.cfg.stage_configs(mpp=entry.mpp or self.cfg.mpp_override)

    def _job_mpp(self, entry: SlideEntry) -> dict[str, Any]:
        check = self.slide_checks().get(entry.slide_id)
        if check is None or check.mpp is None or check.mpp.value is None:
            return {}
        return {"mpp": check.mpp.value, "mpp_source": check.mpp.source}

    def _row_mpp(self, entry: SlideEntry) -> tuple[float | None, str | None]:
        check = (self._checks or {}).get(entry.slide_id)
        if check is None or check.mpp is None:
            return None, None
        return check.mpp.value, check.mpp.source

    def _refuse_bad_mpp(self) -> None:
        """Stop before anything is written when a slide has no believable pixel size."""
        message = mpp_refusal(self.slide_checks(), self.cfg)
        if message is not None:
            raise RunSetupError(message)

    def _preflight(self, todo: list[SlidePlan]) -> list[SlidePlan]:
        """The slides of `todo` that can run. The checkpoint is loaded once and the disk
        estimated first (either may stop the run); then slides that do not open are recorded
        as failed and left out, and the others go on."""
        checks = self.slide_checks()
        check_colour([checks[p.entry.slide_id] for p in todo
                      if "infer" in p.pending and p.entry.slide_id in checks], self.cfg)
        unreadable = {p.entry.slide_id for p in todo if p.entry.slide_id in checks
                      and checks[p.entry.slide_id].problem in ("unreadable", "not_rgb")}
        runnable = [p for p in todo if p.entry.slide_id not in unreadable]
        if runnable:
            try:
                model = check_checkpoint(self.checkpoint)
            except PreflightError as exc:
                raise RunSetupError(str(exc)) from exc
            to_infer = [checks[p.entry.slide_id] for p in runnable
                        if "infer" in p.pending and p.entry.slide_id in checks]
            disk = estimate_disk(self.out_dir, to_infer, model.mpp, self.cfg)
            if disk.verdict == "refuse":
                raise RunSetupError(str(disk))
            (log.warning if disk.verdict == "warn" else log.info)("preflight: %s", disk)
        for plan in todo:
            if plan.entry.slide_id in unreadable:
                self._record_unreadable(plan, checks[plan.entry.slide_id])
        self._n_unreadable = len(unreadable)
        return runnable

    def _record_unreadable(self, plan: SlidePlan, check: SlideCheck) -> None:
        job = self.job(plan, progress=False)
        with log_to_file(job.log_path):
            first = (check.message or "").strip().splitlines()[:1]
            what = "is not an RGB scan" if check.problem == "not_rgb" else "does not open"
            log.error("%s: infer failed: the slide %s (found before any work): %s: %s "
                      "(details in %s)", job.slide_id, what, check.error_type or "SlideReadError",
                      first[0] if first else "", job.log_path,
                      extra={DETAIL: check.traceback or check.message})
        if plan.expected is not None:  # else the row says "cannot read the file" by itself
            record_failure(job, "infer", check.error_type or "SlideReadError", check.message or "")
        self._unlock(plan.entry.slide_id)

    def _write_manifest(self, rows: dict[str, dict], force: bool = False) -> None:
        now = time.monotonic()
        if force or now - self._last_manifest >= MANIFEST_INTERVAL_S:
            try:
                write_shared_manifest(self.out_dir, list(rows.values()), keep_theirs=self._foreign,
                                      holder=self.holder, break_foreign=self.break_locks)
                self._full_writes.pop("the manifest", None)  # replaced after all
            except locks.LockHeld as exc:
                raise ManifestLocked(f"the manifest cannot be written: {exc}") from exc
            except OSError as exc:
                if disk_full_error(exc) is None:
                    raise
                self._disk_full_write("the manifest", exc)
            self._last_manifest = now
