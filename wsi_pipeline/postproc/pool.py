"""Worker processes for the chunk tasks of a slide post-processed without a Dask cluster.

Threads do not make post-processing parallel: scikit-image's region properties, most of the
watershed and the polygon building hold the GIL, so two threads ran a slide's chunks hardly
faster than one (`benchmarks/postproc_slide_speed.py`). Processes do. The pool is made once
per process and kept (a cohort run in one process post-processes slide after slide; starting
workers costs a second or two of imports), with the `spawn` start method, since the parent may
hold OpenVINO/torch threads that a fork would copy in an unusable state. A worker exits when
its parent dies (kill -9 included), so an interrupted run leaves no orphans behind.
"""

from __future__ import annotations

import atexit
import multiprocessing
import os
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from typing import TypeVar

T = TypeVar("T")
R = TypeVar("R")

#: seconds between a worker's checks that its parent still lives
PARENT_POLL_S = 1.0

_pools: dict[int, ProcessPoolExecutor] = {}


def usable_cpus() -> int:
    """Cores this process may use (its CPU affinity where the OS has one, e.g. under SLURM)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def _exit_with_parent(parent_pid: int) -> None:
    """Worker initialiser: a daemon thread that ends the worker once its parent is gone (the
    worker is then re-parented, so its parent pid changes). A worker blocked on its task
    queue would otherwise wait forever, holding the dead run's pipes open."""

    def watch() -> None:
        while os.getppid() == parent_pid:
            time.sleep(PARENT_POLL_S)
        os._exit(1)

    threading.Thread(target=watch, name="exit-with-parent", daemon=True).start()


def worker_pool(workers: int) -> ProcessPoolExecutor:
    """This process's pool of `workers` worker processes, made at the first call."""
    pool = _pools.get(workers)
    if pool is None:
        pool = ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"),
                                   initializer=_exit_with_parent, initargs=(os.getpid(),))
        _pools[workers] = pool
    return pool


def shutdown_pools() -> None:
    """End every worker of this process's pools (at exit; tests call it to start afresh)."""
    while _pools:
        _, pool = _pools.popitem()
        pool.shutdown(wait=True, cancel_futures=True)


atexit.register(shutdown_pools)


def ordered_map(fn: Callable[[T], R], items: Iterable[T], workers: int) -> Iterator[R]:
    """`fn(item)` for every item, in the items' order, on `workers` processes (`fn` and the
    items must pickle); at most 2 × workers tasks in flight, so results never pile up.
    One worker, or one item, runs here in this process: no pool for nothing to share."""
    items = list(items)
    if workers <= 1 or len(items) <= 1:
        yield from map(fn, items)
        return
    pool = worker_pool(workers)
    pending: deque[Future[R]] = deque()
    try:
        for item in items:
            pending.append(pool.submit(fn, item))
            if len(pending) >= 2 * workers:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()
    finally:
        for fut in pending:
            fut.cancel()
