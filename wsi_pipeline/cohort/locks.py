"""Lock files: at most one run writes a slide folder (or the manifest) at a time.

Two runs into one OUT used to interleave their writes into the same maps.zarr and leave
markers claiming work that was no longer there. A lock is a small JSON file created with
O_CREAT|O_EXCL, which is atomic on local file systems and on NFSv3+ (what clusters share OUT
over); fcntl/flock locks are not reliable there. The file says who holds it (host, pid,
process start time, when, a random token), so that

- a second run names the holder instead of failing in a confusing way;
- a lock whose holder is gone is taken over without asking when that can be known: the holder
  ran in this very kernel and PID namespace (same host name, boot id and
  /proc/self/ns/pid inode) and its pid is not running (or is running but is another process,
  started at another time);
- a lock held from another host, another boot of it, or another PID namespace on this host
  (a container sharing the host's name: docker `--network host`, Kubernetes `hostNetwork`,
  where "pid 1" is another process than ours) is taken over only when asked
  (`--break-locks`), since from here nobody can tell whether that run is alive;
- short-lived locks (the manifest's) also expire after `max_age_s`, counted on this host's
  own clock from when it first saw the lock unchanged as well as from the file's mtime: a lock
  written by a node whose clock runs ahead (an mtime in the future) still expires.

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
from dataclasses import asdict, dataclass, fields
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
    #: The kernel's boot id (/proc/sys/kernel/random/boot_id): a host name may be shared by
    #: other machines, and after a reboot every pid means another process.
    boot_id: str | None = None
    #: The PID namespace (inode of /proc/self/ns/pid): containers on one kernel that share its
    #: host name each number their processes from 1.
    pid_ns: int | None = None

    def describe(self) -> str:
        where = f"host {self.host}" + (f" (PID namespace {self.pid_ns})" if self._other_namespace() else "")
        return f"{where}, pid {self.pid}, since {self.started_at}"

    def _other_namespace(self) -> bool:
        ours = _pid_namespace()
        return self.pid_ns is not None and ours is not None and self.pid_ns != ours

    def seen_from_here(self) -> str | None:
        """Why this host cannot tell whether the holder is alive; None when it can (the holder
        ran in this kernel, this boot and this PID namespace, or is an older lock without
        those fields written on this host)."""
        if self.host != socket.gethostname():
            return "held from another host"
        boot = _boot_id()
        if self.boot_id is not None and boot is not None and self.boot_id != boot:
            return (f"held from host {self.host} under another boot (boot id {self.boot_id[:8]}: "
                    "this host before a reboot, or another machine with the same name)")
        if self._other_namespace():
            return (f"held from another PID namespace on this host ({self.pid_ns}: a container "
                    "sharing the host name), where pid numbers mean other processes")
        return None


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
                      pid_start=_pid_start(os.getpid()), command=command or " ".join(sys.argv[:1]),
                      boot_id=_boot_id(), pid_ns=_pid_namespace())


def read_holder(path: Path) -> LockHolder | None:
    """The holder recorded in `path`; None if absent, empty or unreadable."""
    try:
        data = json.loads(Path(path).read_text())
        known = {f.name for f in fields(LockHolder)}
        return LockHolder(**{k: v for k, v in data.items() if k in known})  # newer fields: ignored
    except (OSError, ValueError, TypeError, AttributeError):
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
            foreign = current.seen_from_here() if current is not None else None
            hint = f"{foreign}: if that run is dead, rerun with --break-locks to take over" if foreign else ""
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
def locked(path: Path, holder: LockHolder | None = None, *, timeout_s: float | None = None,
           max_age_s: float = 120.0, break_foreign: bool = False) -> Iterator[None]:
    """Hold a short-lived lock for the block, waiting for it up to `timeout_s` (default: a
    little over `max_age_s`, so that a lock left by a dead run expires while we wait, even one
    whose mtime another host's clock put in the future)."""
    holder = holder or me()
    deadline = time.monotonic() + (max_age_s + 30.0 if timeout_s is None else timeout_s)
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
    foreign = holder.seen_from_here()
    if foreign is None:
        if holder.pid == os.getpid() and holder.pid_start == _pid_start(os.getpid()):
            return None  # this very process (another part of it holds the lock)
        if not _alive(holder.pid, holder.pid_start):
            return f"its process {holder.pid} is no longer running on this host"
        return None
    if break_foreign:
        return f"{foreign}, taken over as asked (--break-locks)"
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


#: Seconds an mtime may lie ahead of this host's clock before it is said to come from another clock.
CLOCK_SLACK_S = 5.0
#: (path, mtime_ns, size) of each lock file seen -> when this process first saw it (monotonic):
#: the age of a lock whose mtime cannot be trusted (another host's clock ahead of ours).
_FIRST_SEEN: dict[tuple[str, int, int], float] = {}


def _age_s(path: Path) -> float:
    """How long the lock at `path` has existed: by its mtime, and at least as long as this
    process has seen it unchanged (an mtime in the future, written by a node whose clock is
    ahead, would otherwise keep it young for ever)."""
    try:
        st = path.stat()
    except OSError:
        return 0.0
    now = time.monotonic()
    seen = _FIRST_SEEN.setdefault((str(path), st.st_mtime_ns, st.st_size), now)
    ahead = st.st_mtime - time.time()
    if ahead > CLOCK_SLACK_S and seen == now:
        log.warning("lock %s was written %.0f s in the future by this host's clock (another "
                    "host's clock?): its age is counted from now", path, ahead)
    return max(0.0, time.time() - st.st_mtime, now - seen)


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


def _boot_id() -> str | None:
    """This kernel's boot id (Linux); None where unknown."""
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip() or None
    except OSError:
        return None


def _pid_namespace() -> int | None:
    """The inode of this process's PID namespace (Linux); None where unknown."""
    try:
        return os.stat("/proc/self/ns/pid").st_ino
    except OSError:
        return None


def _pid_start(pid: int) -> int | None:
    """Start time of `pid` in clock ticks since boot (Linux /proc); None where unknown."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        return int(stat.rsplit(")", 1)[1].split()[19])
    except (OSError, ValueError, IndexError):
        return None
