"""Writing OUT/manifest.parquet when several runs share OUT: merged, under a short lock.

Runs into one OUT (SLURM array jobs given different slides, or two hosts on one cohort) each
know only their own slides. Written as one run's rows alone, the manifest of the run that
finished last would drop every slide of the others. So each write happens under
OUT/.manifest.lock (held for the read-merge-write, well under a second) and starts from the
manifest on disk: rows of slides this run does not list are kept while their folders exist, and
so are the rows of slides another run holds the lock of (that run writes them when it is done).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq

from wsi_pipeline.cohort import locks
from wsi_pipeline.cohort.layout import UnsafeSlideId, slide_dir
from wsi_pipeline.cohort.manifest import MANIFEST, write_manifest

log = logging.getLogger(__name__)

MANIFEST_LOCK = ".manifest.lock"


def merge_rows(existing: list[dict[str, Any]], ours: list[dict[str, Any]],
               keep_theirs: set[str] | frozenset[str] = frozenset()) -> list[dict[str, Any]]:
    """This run's rows (in its order), except those in `keep_theirs` that `existing` has,
    followed by the rows of `existing` for slides this run does not list."""
    old = {r["slide_id"]: r for r in existing}
    mine = {r["slide_id"] for r in ours}
    merged = [old[r["slide_id"]] if r["slide_id"] in keep_theirs and r["slide_id"] in old else r
              for r in ours]
    return merged + [r for r in existing if r["slide_id"] not in mine]


def write_shared_manifest(out_dir: Path, rows: list[dict[str, Any]],
                          keep_theirs: set[str] | frozenset[str] = frozenset(),
                          holder: locks.LockHolder | None = None, break_foreign: bool = False) -> Path:
    """Merge `rows` into OUT/manifest.parquet (see `merge_rows`) and write it atomically.
    `break_foreign` (`run --break-locks`) takes over a manifest lock that another host, boot or
    PID namespace left behind at once instead of waiting for it to expire."""
    out_dir = Path(out_dir)
    with locks.locked(out_dir / MANIFEST_LOCK, holder, break_foreign=break_foreign):
        existing = [r for r in _read_rows(out_dir) if _folder_exists(out_dir, r.get("slide_id"))]
        return write_manifest(out_dir, merge_rows(existing, rows, keep_theirs))


def _read_rows(out_dir: Path) -> list[dict[str, Any]]:
    path = out_dir / MANIFEST
    if not path.is_file():
        return []
    try:
        return pq.read_table(path).to_pylist()
    except Exception as exc:  # noqa: BLE001 - a torn or foreign file is rebuilt, never fatal
        log.warning("%s is unreadable (%s: %s): rewritten from this run's slides only",
                    path, type(exc).__name__, exc)
        return []


def _folder_exists(out_dir: Path, slide_id: Any) -> bool:
    """Rows of slides whose folder was deleted (or whose id is unsafe) are dropped."""
    try:
        return slide_dir(out_dir, slide_id).is_dir()
    except UnsafeSlideId:
        return False
