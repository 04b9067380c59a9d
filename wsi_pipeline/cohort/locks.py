"""Lock files: at most one run writes a slide folder (or the manifest) at a time.

Two runs into one OUT used to interleave their writes into the same maps.zarr and leave
markers claiming work that was no longer there. A lock is a small JSON file created with
O_CREAT|O_EXCL, which is atomic on local file systems and on NFSv3+ (what clusters share OUT
over); fcntl/flock locks are not reliable there. The file says who holds it (host, pid,
process start time, when, a random token), so that

- a second run names the holder instead of failing in a confusing way;
- a lock whose holder is gone is taken over without asking when that can be known: same host
  and the pid is not running (or is running but is another process, started at another time);
- a lock held from another host is taken over only when asked (`--break-locks`), since from
  here nobody can tell whether that run is alive;
- short-lived locks (the manifest's) also expire after `max_age_s`.

A takeover removes the old file only if it still holds what was judged stale; a second file
(`<lock>.break`, itself O_EXCL) makes that check-and-remove one step, so two runs that find
the same stale lock cannot both end up holding it.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import socket
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

from wsi_pipeline.diskfull import naming

log = logging.getLogger(__name__)

#: A `.break` file older than this belongs to a takeover that died half-way: removed.
BREAK_TIMEOUT_S = 30.0
#: A lock file that exists but is still empty this long after it was created is abandoned.
EMPTY_LOCK_TIMEOUT_S = 10.0


@dataclass(frozen=True)
class LockHolder:
    """Who holds a lock; written into the lock file."""

    host: str
    pid: int
    started_at: str
    token: str
    pid_start: int | None = None  # start time of the pid (Linux clock ticks), against pid reuse
    command: str = ""

    def describe(self) -> str:
        return f"host {self.host}, pid {self.pid}, since {self.started_at}"


class LockHeld(RuntimeError):
    """The lock belongs to another run that may be alive."""

    def __init__(self, path: Path, holder: LockHolder | None, hint: str = ""):
        self.path, self.holder = Path(path), holder
        who = holder.describe() if holder is not None else "a run that is still writing the lock"
        super().__init__(f"locked by another run ({who}): {path}" + (f"; {hint}" if hint else ""))


def me(command: str = "") -> LockHolder:
    """A holder record for this process, with a fresh token."""
    return LockHolder(host=socket.gethostname(), pid=os.getpid(),
                      started_at=time.strftime("%Y-%m-%dT%H:%M:%S%z"), token=secrets.token_hex(8),
                      pid_start=_pid_start(os.getpid()), command=command or " ".join(sys.argv[:1]))


def read_holder(path: Path) -> LockHolder | None:
    """The holder recorded in `path`; None if absent, empty or unreadable."""
    try:
        return LockHolder(**json.loads(Path(path).read_text()))
    except (OSError, ValueError, TypeError):
        return None


def acquire(path: Path, holder: LockHolder, *, break_foreign: bool = False,
            max_age_s: float | None = None) -> None:
    """Create the lock file `path` for `holder`, taking over a stale one; else raise LockHeld.

    `break_foreign` also takes over locks held from other hosts; `max_age_s` treats any lock
    older than that as stale (for locks held only for a moment).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    for _ in range(5):
        if _create(path, holder):
            return
        raw = _read_raw(path)
        if raw is None:
            continue  # released meanwhile: try again
        current = read_holder(path)
        why = _stale_reason(path, current, break_foreign, max_age_s)
        if why is None:
            hint = ("if it is dead, rerun with --break-locks to take over"
                    if current is not None and current.host != holder.host else "")
            raise LockHeld(path, current, hint)
        if _remove_if_unchanged(path, raw):
            who = current.describe() if current is not None else "an unreadable lock file"
            log.warning("took over the lock %s of %s: %s", path, who, why)
    raise LockHeld(path, read_holder(path))


def release(path: Path, holder: LockHolder) -> None:
    """Remove the lock if `holder` still holds it (a lock taken over from us is left alone)."""
    current = read_holder(path)
    if current is not None and current.token == holder.token:
        Path(path).unlink(missing_ok=True)
    elif current is not None:
        log.warning("lock %s was taken over by %s while this run held it", path, current.describe())


def stale_reason(path: Path, *, break_foreign: bool = False, max_age_s: float | None = None) -> str | None:
    """Why `acquire` would take the lock at `path` over now; None if it would not (or no lock)."""
    path = Path(path)
    if not path.exists():
        return None
    return _stale_reason(path, read_holder(path), break_foreign, max_age_s)


def holds(path: Path, token: str) -> bool:
    """Whether the lock at `path` is still the one with `token` (checked before each write)."""
    current = read_holder(path)
    return current is not None and current.token == token


@contextmanager
def locked(path: Path, holder: LockHolder | None = None, *, timeout_s: float = 60.0,
           max_age_s: float = 120.0, break_foreign: bool = False) -> Iterator[None]:
    """Hold a short-lived lock for the block, waiting up to `timeout_s` for it."""
    holder = holder or me()
    deadline = time.monotonic() + timeout_s
    delay = 0.01
    while True:
        try:
            acquire(path, holder, break_foreign=break_foreign, max_age_s=max_age_s)
            break
        except LockHeld:
            if time.monotonic() >= deadline:
                raise
            time.sleep(delay)
            delay = min(delay * 2, 0.5)
    try:
        yield
    finally:
        release(path, holder)


# -- internals --------------------------------------------------------------------------------
def _create(path: Path, holder: LockHolder) -> bool:
    try:
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    except FileExistsError:
        return False
    try:
        with naming(path):
            os.write(fd, (json.dumps(asdict(holder), sort_keys=True) + "\n").encode())
            os.fsync(fd)
    except BaseException:  # a full disk: an empty lock left behind would hold off every run
        os.close(fd)
        path.unlink(missing_ok=True)
        raise
    os.close(fd)
    return True


def _read_raw(path: Path) -> bytes | None:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        return None


def _stale_reason(path: Path, holder: LockHolder | None, break_foreign: bool,
                  max_age_s: float | None) -> str | None:
    """Why the lock may be taken over, or None while its holder may be alive."""
    age = _age_s(path)
    if holder is None:
        # Between its O_EXCL create and its write, a lock is empty for microseconds.
        return f"empty or unreadable for {age:.0f} s" if age > EMPTY_LOCK_TIMEOUT_S else None
    if max_age_s is not None and age > max_age_s:
        return f"older than {max_age_s:.0f} s"
    if holder.host == socket.gethostname():
        if holder.pid == os.getpid() and holder.pid_start == _pid_start(os.getpid()):
            return None  # this very process (another part of it holds the lock)
        if not _alive(holder.pid, holder.pid_start):
            return f"its process {holder.pid} is no longer running on this host"
        return None
    if break_foreign:
        return "held from another host, taken over as asked (--break-locks)"
    return None


def _remove_if_unchanged(path: Path, raw: bytes) -> bool:
    """Remove `path` if it still holds `raw`; at most one process does this at a time."""
    breaker = path.with_name(path.name + ".break")
    try:
        fd = os.open(breaker, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    except FileExistsError:
        if _age_s(breaker) > BREAK_TIMEOUT_S:
            breaker.unlink(missing_ok=True)
        else:
            time.sleep(0.05)
        return False
    os.close(fd)
    try:
        if _read_raw(path) == raw:
            path.unlink(missing_ok=True)
            return True
        return False
    finally:
        breaker.unlink(missing_ok=True)


def _age_s(path: Path) -> float:
    try:
        return max(0.0, time.time() - path.stat().st_mtime)
    except OSError:
        return 0.0


def _alive(pid: int, pid_start: int | None) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # exists, owned by another user
    except OSError:
        return False
    if pid_start is not None:
        now = _pid_start(pid)
        if now is not None and now != pid_start:
            return False  # the pid was reused by a later process
    return True


def _pid_start(pid: int) -> int | None:
    """Start time of `pid` in clock ticks since boot (Linux /proc); None where unknown."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        return int(stat.rsplit(")", 1)[1].split()[19])
    except (OSError, ValueError, IndexError):
        return None
