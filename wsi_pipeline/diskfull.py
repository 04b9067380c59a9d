"""A full disk (or an exhausted quota), recognised wherever it surfaces and said in one line.

Cohort runs write gigabytes of maps, so a full disk is an ordinary event, not a bug: it must end
as a per-slide failure that names the file being written and the space left, never as a long
traceback from whatever write happened to meet it. The error arrives in many shapes: a Python
OSError with errno ENOSPC from open() or write() (no file name when write() fails), pyarrow's
OSError "Error writing bytes to file" (errno set, no name), or another exception raised while
handling one (a writer's close() failing the same way). `disk_full_error` finds it in any of
them; `naming` attaches the file being written where the error does not say; `describe` turns
it into the message users read.
"""

from __future__ import annotations

import errno
import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

__all__ = ["DISK_FULL", "DISK_FULL_ERRNOS", "describe", "disk_full_error", "free_bytes",
           "human_bytes", "naming"]

#: The errnos that mean "no room to write": the disk is full, or the user's quota is.
DISK_FULL_ERRNOS: frozenset[int] = frozenset({errno.ENOSPC, errno.EDQUOT})
#: `error_type` of a failure record for a full disk: a fact about the disk, not the slide.
DISK_FULL = "DiskFull"


def disk_full_error(exc: BaseException | None) -> OSError | None:
    """The disk-full OSError in `exc`, its causes and contexts and the members of exception
    groups (nested errors), or None when `exc` has nothing to do with a full disk."""
    seen: set[int] = set()
    todo = [exc]
    while todo:
        e = todo.pop(0)
        if e is None or id(e) in seen:
            continue
        seen.add(id(e))
        if isinstance(e, OSError) and e.errno in DISK_FULL_ERRNOS:
            return e
        todo += [e.__cause__, e.__context__, *getattr(e, "exceptions", ())]
    return None


@contextmanager
def naming(path: str | os.PathLike[str],
           aliases: tuple[str | os.PathLike[str], ...] = ()) -> Iterator[None]:
    """Inside the block `path` is being written: a disk-full error that names no file (a failed
    write() does not), or names one of `aliases` (the temporary file standing for `path`), is
    given `path` as its file name."""
    try:
        yield
    except BaseException as exc:
        full = disk_full_error(exc)
        if full is not None and (not full.filename or str(full.filename) in map(str, aliases)):
            full.filename = str(path)
        raise


def free_bytes(path: str | os.PathLike[str]) -> tuple[int, int]:
    """(free, total) bytes of the file system holding `path` (or its nearest existing parent)."""
    p = Path(path).absolute()
    while not p.exists() and p != p.parent:
        p = p.parent
    usage = shutil.disk_usage(p)
    return usage.free, usage.total


def human_bytes(n: float) -> str:
    """'0 B', '812 kB', '7.9 MB', '1.2 TB' (decimal units, as df -H and file managers)."""
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if abs(n) < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit in ("B", "kB") else f"{n:.1f} {unit}"
        n /= 1000
    raise AssertionError("unreachable")


def describe(exc: OSError, fallback: str | os.PathLike[str] | None = None) -> str:
    """'disk full while writing FILE: free space F of T' (or 'disk quota exceeded ...'), with
    the free space measured now (after any clean-up the caller did first)."""
    target = exc.filename or fallback
    what = "disk quota exceeded" if exc.errno == errno.EDQUOT else "disk full"
    where = f" while writing {target}" if target else ""
    if target is None:
        return f"{what}{where}"
    try:
        free, total = free_bytes(target)
    except OSError:
        return f"{what}{where}: free space unknown"
    return f"{what}{where}: free space {human_bytes(free)} of {human_bytes(total)}"
