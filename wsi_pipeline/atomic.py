"""Files that appear whole or not at all.

Every output is written under a temporary name in its own folder and renamed over the final name
only once complete, so a crash, a full disk or a concurrent reader never sees half a file, and a
rerun never mistakes a torn file for a finished one. Same folder => same filesystem => os.replace
is atomic.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from wsi_pipeline.diskfull import naming

__all__ = ["atomic_path", "write_bytes_atomic", "write_text_atomic"]


def _temp_name(path: Path) -> Path:
    # Hidden (slide discovery skips dot files) and ending in .tmp so leftovers are easy to spot.
    # Not created in advance (unlike mkstemp), so the final file gets the usual umask permissions.
    return path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")


@contextmanager
def atomic_path(path: str | os.PathLike[str], *, fsync: bool = False) -> Iterator[Path]:
    """Yield a temporary path next to `path`; on success rename it over `path`, on error delete it.

    The caller writes the whole file to the yielded path with whatever writer it likes (the folder
    of `path` is created if missing). Writers
    that pick a format from the file suffix must be told the format explicitly (the temp name ends
    in .tmp). `fsync=True` flushes the data to disk before the rename, for markers whose presence
    must imply their content survived a power loss. A full disk met on the way names `path`
    (wsi_pipeline.diskfull), since a failed write() names no file.
    """
    final = Path(path)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = _temp_name(final)
    try:
        with naming(final, aliases=(tmp,)):
            yield tmp
            if fsync:
                with open(tmp, "rb+") as f:
                    os.fsync(f.fileno())
            os.replace(tmp, final)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_bytes_atomic(path: str | os.PathLike[str], data: bytes, *, fsync: bool = False) -> None:
    with atomic_path(path, fsync=fsync) as tmp:
        tmp.write_bytes(data)


def write_text_atomic(
    path: str | os.PathLike[str], text: str, *, encoding: str = "utf-8", fsync: bool = False
) -> None:
    with atomic_path(path, fsync=fsync) as tmp:
        tmp.write_text(text, encoding=encoding)
