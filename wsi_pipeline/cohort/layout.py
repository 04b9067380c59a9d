"""Where a slide's outputs live in OUT, and the rules that keep every slide id inside OUT.

A slide id becomes a folder name (OUT/<id>/) and a log name (OUT/logs/<id>.log), and a stage
that is redone deletes what it finds in that folder. An id such as ".." (from a file named
`...tif`) would make OUT/.. the slide folder, and a redo would delete files in OUT's parent.
So ids are made safe once, in discovery (`safe_id`), and the slide folder is built in one
place only (`slide_dir`), which refuses any id whose folder is not a direct child of OUT.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

#: Names OUT itself uses; a slide id equal to one of them would share it (OUT/logs/...).
RESERVED_NAMES: frozenset[str] = frozenset(
    {"logs", "manifest.parquet", "cohort_summary.parquet", "cohort_composition.png", "report.html"}
)
#: Longest id in bytes (UTF-8): leaves room in a 255-byte file name for "<id>.log" and temp names.
MAX_ID_BYTES = 160
LOCK_FILE = "slide.lock"

# Path separators, NUL and other control characters never belong in a folder name.
_UNSAFE_CHARS = re.compile(r"[/\\\x00-\x1f\x7f]")
_LEADING_DOTS = re.compile(r"^\.+")


class UnsafeSlideId(ValueError):
    """A slide id that would put a slide's outputs outside its own folder directly in OUT."""


def safe_id(raw: str) -> str:
    """`raw` made into a folder name that stays inside OUT; ids that were safe are unchanged.

    Separators and control characters become "_"; leading dots become "_" (no "", ".", ".."
    and no hidden folders); the names OUT uses itself get a trailing "_"; ids longer than
    MAX_ID_BYTES are cut and end in 8 hex digits of a hash of the whole name (still unique).
    """
    sid = _UNSAFE_CHARS.sub("_", raw)
    sid = _LEADING_DOTS.sub(lambda m: "_" * len(m.group()), sid) or "_"
    if sid in RESERVED_NAMES:
        sid += "_"
    if len(sid.encode()) > MAX_ID_BYTES:
        digest = hashlib.sha256(raw.encode("utf-8", "surrogateescape")).hexdigest()[:8]
        cut = sid.encode()[: MAX_ID_BYTES - 9].decode("utf-8", "ignore")
        sid = f"{cut}-{digest}"
    return sid


def slide_dir(out_dir: Path, slide_id: str) -> Path:
    """OUT/<slide_id>, after checking it is a folder directly inside OUT (symlinks resolved).

    This is the only place a slide folder path is built: whatever an id came from (discovery,
    an old manifest, a hand-edited list), nothing is ever written or deleted outside OUT.
    """
    out_dir = Path(out_dir)
    if not isinstance(slide_id, str) or safe_id(slide_id) != slide_id:
        raise UnsafeSlideId(
            f"slide id {slide_id!r} is not a safe folder name inside {out_dir} "
            f"(it would be {safe_id(str(slide_id))!r})"
        )
    folder = out_dir / slide_id
    real_out = out_dir.resolve()
    real = folder.resolve()
    if real.parent != real_out or real == real_out:
        raise UnsafeSlideId(
            f"{folder} resolves to {real}, which is not a folder directly inside {real_out}: "
            "refusing to write there (is it a symbolic link?)"
        )
    return folder


def slide_log(out_dir: Path, slide_id: str) -> Path:
    """OUT/logs/<slide_id>.log (the id is checked as for the slide folder)."""
    slide_dir(out_dir, slide_id)
    return Path(out_dir) / "logs" / f"{slide_id}.log"


def slide_lock(out_dir: Path, slide_id: str) -> Path:
    """OUT/<slide_id>/slide.lock: held by the run that is writing that slide (see locks.py)."""
    return slide_dir(out_dir, slide_id) / LOCK_FILE
