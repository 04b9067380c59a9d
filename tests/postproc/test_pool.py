"""Worker processes for local post-processing: order kept, errors raised, no orphans."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time

import pytest

from wsi_pipeline.postproc.pool import ordered_map, shutdown_pools


def _slow_square(x: int) -> tuple[int, int]:
    time.sleep(0.05 * (x % 3))  # later items finish first now and then
    return x * x, os.getpid()


def _fail_on_three(x: int) -> int:
    if x == 3:
        raise ValueError(f"item {x} is bad")
    return x


@pytest.fixture(autouse=True)
def _fresh_pools():
    yield
    shutdown_pools()


def test_results_come_in_item_order_from_worker_processes():
    out = list(ordered_map(_slow_square, range(12), workers=2))
    assert [v for v, _ in out] == [x * x for x in range(12)]
    pids = {pid for _, pid in out}
    assert os.getpid() not in pids and 1 <= len(pids) <= 2


def test_one_worker_or_one_item_runs_in_this_process():
    assert [pid for _, pid in ordered_map(_slow_square, range(3), workers=1)] == [os.getpid()] * 3
    assert [pid for _, pid in ordered_map(_slow_square, [5], workers=4)] == [os.getpid()]


def test_a_failing_task_raises_its_error_here():
    with pytest.raises(ValueError, match="item 3 is bad"):
        list(ordered_map(_fail_on_three, range(8), workers=2))


def test_workers_exit_when_their_parent_is_killed(tmp_path):
    """kill -9 of the run must not leave workers blocked on their queue for ever."""
    script = textwrap.dedent("""
        import os, signal
        from wsi_pipeline.postproc.pool import ordered_map
        from tests.postproc.test_pool import _slow_square
        pids = {pid for _, pid in ordered_map(_slow_square, range(6), 2)}
        print(" ".join(map(str, sorted(pids))), flush=True)
        os.kill(os.getpid(), signal.SIGKILL)
    """)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=120, cwd=os.getcwd(), env={**os.environ, "PYTHONPATH": os.getcwd()})
    assert proc.returncode == -9, proc.stderr
    pids = [int(p) for p in proc.stdout.split()]
    assert pids
    deadline = time.monotonic() + 10
    alive = pids
    while alive and time.monotonic() < deadline:
        time.sleep(0.2)
        alive = [p for p in pids if _alive(p)]
    assert not alive, f"workers {alive} outlived their killed parent"


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except FileNotFoundError:
        return False
