"""Find the slides of a cohort: a folder searched recursively, a list file, or one slide.

Each slide gets a `slide_id`, the name of its output folder OUT/<slide_id>/. The rules, so that
a rerun always finds its earlier outputs:

- the file stem when that is unique in the cohort; stems that collide (a/x.svs, b/x.svs) fall
  back to the path below the cohort root joined with "__" (a__x, b__x), keeping the extension
  where even that clashes (x.svs, x.tif), so that no two slides ever share an output folder;
- names are taken as the paths are written, made absolute without resolving symbolic links: a
  link keeps its own name (not its target's), and `run .`, `run /abs/cohort` and `run
  /link/to/cohort` give the same ids (the root is the folder given, or the common folder of a
  list's paths);
- unsafe characters are replaced (`layout.safe_id`): an id never contains a path separator,
  never starts with a dot (a file named `...tif` gets `__`, not `..`) and never names one of
  OUT's own files;
- the same file listed twice, or reached through two links, is one slide (the first path in
  sorted order), with a warning naming both;
- an id once given is kept: `known_ids` (the paths and ids of OUT's manifest) wins over the
  rules above, and a new slide never gets an id the manifest gives another file, so slides
  added later (batch2/S1.tif beside batch1/S1.tif) never rename or double a finished one.

What real cohorts bring is taken as it comes, each surprise one warning naming the file, the
other slides going on: slide lists saved by spreadsheet programs (a byte-order mark, UTF-16 or
Windows-1252 text, CRLF line ends, quoted cells, `;` as separator, Windows `\\` separators in
relative paths), file names that are not UTF-8 (from Windows shares: the id replaces what does
not decode), folders linked from other disks (followed, each real folder once), links whose
target is gone and folders that cannot be read (named; a broken link's slide is recorded as
failed by the run, not dropped).
"""

from __future__ import annotations

import csv
import logging
import os
import re
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from wsi_pipeline.cohort.layout import safe_id

log = logging.getLogger(__name__)

#: Extensions of whole-slide formats that OpenSlide (or a plugged-in reader) opens.
SLIDE_EXTENSIONS: tuple[str, ...] = (
    ".svs", ".tif", ".tiff", ".ndpi", ".mrxs", ".scn", ".svslide", ".bif", ".vms", ".vmu",
)
LIST_EXTENSIONS = (".csv", ".tsv", ".txt")
#: Header names accepted for the path column of a list file (first column otherwise).
PATH_COLUMNS = ("path", "slide", "file", "filename", "slide_path")
#: Header names accepted for a list file's optional per-slide pixel size column (level-0 µm/px).
MPP_COLUMNS = ("mpp", "mpp_um", "um_per_px", "microns_per_pixel")


@dataclass(frozen=True)
class SlideEntry:
    """One input slide: where it is and what its outputs are called."""

    path: Path
    slide_id: str
    mpp: float | None = None  # level-0 µm/px from a slide list's mpp column (wins over metadata)


class DiscoveryError(ValueError):
    """The cohort input cannot be turned into a list of slides."""


def discover(
    source: Path,
    extensions: tuple[str, ...] = SLIDE_EXTENSIONS,
    probe_unknown: bool = False,
    known_ids: Mapping[str, str] | None = None,
) -> list[SlideEntry]:
    """Slides named by `source`: a slide file, a folder (recursive) or a CSV/TSV/TXT list.

    A list may give each slide its pixel size in a column named mpp (see MPP_COLUMNS); an
    empty cell leaves that slide to its file's metadata.

    `probe_unknown` also asks OpenSlide about files with other extensions (slow on big trees).
    Files are returned sorted so that the order, and hence the ids, are reproducible.
    `known_ids` maps paths (as recorded in OUT's manifest) to the ids they were given: those
    are kept, and no other file gets one of them.
    """
    source = _absolute(Path(source))
    if not source.exists():
        raise DiscoveryError(f"input not found: {source}")
    exts = tuple(e.lower() if e.startswith(".") else "." + e.lower() for e in extensions)
    list_mpp: dict[Path, float | None] = {}
    if source.is_dir():
        paths = _walk(source, exts, probe_unknown)
        root = source
    elif source.suffix.lower() in LIST_EXTENSIONS and source.suffix.lower() not in exts:
        paths, list_mpp = _read_list(source)
        root = _common_root(paths)
    else:
        paths = [source]
        root = source.parent
    if not paths:
        raise DiscoveryError(f"no slides found in {source} (extensions: {', '.join(exts)})")
    entries = _keep_known_ids(_assign_ids(paths, root), root, known_ids or {})
    return [replace(e, mpp=list_mpp.get(e.path)) for e in entries] if list_mpp else entries


def _walk(folder: Path, exts: tuple[str, ...], probe_unknown: bool) -> list[Path]:
    """Slide files below `folder`, following links to folders (a cohort assembled from other
    disks), each real folder once; hidden names skipped. A folder that cannot be read and a
    link whose target is gone are one warning each; such a link with a slide's extension is
    kept (the run records it as failed, naming it, instead of losing it)."""
    found: list[Path] = []
    seen: set[str] = set()

    def unreadable(err: OSError) -> None:
        log.warning("%s: cannot be read (%s): the slides in it, if any, are not in this run",
                    err.filename, err.strerror)

    for top, dirs, files in os.walk(folder, onerror=unreadable, followlinks=True):
        real = os.path.realpath(top)
        if real in seen:  # a link back up the tree, or two links to one folder
            dirs[:] = []
            continue
        seen.add(real)
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in files:
            p = Path(top) / name
            if name.startswith(".") or _inside_mrxs_data_dir(p):
                continue
            if not p.exists():  # a link to a disk that is not mounted, or to a deleted file
                log.warning("%s: a link to %s, which does not exist (a disk not mounted?)", p,
                            os.readlink(p) if p.is_symlink() else "?")
                if p.suffix.lower() in exts:
                    found.append(p)
                continue
            if not p.is_file():
                continue
            if p.suffix.lower() in exts or (probe_unknown and _openslide_detects(p)):
                found.append(p)
    return sorted(found)


def _inside_mrxs_data_dir(p: Path) -> bool:
    """MIRAX slides keep their tiles in a sibling folder named like the .mrxs: skip its files."""
    parent = p.parent
    if not parent.name:  # the filesystem root
        return False
    return any(parent.with_name(parent.name + ext).is_file() for ext in (".mrxs", ".MRXS"))


def _openslide_detects(p: Path) -> bool:
    import openslide

    try:
        return openslide.OpenSlide.detect_format(str(p)) is not None
    except Exception:  # noqa: BLE001 - any failure to probe means "not a slide"
        return False


def _read_list(list_file: Path) -> tuple[list[Path], dict[Path, float | None]]:
    """Paths from a CSV/TSV/TXT list, relative ones taken relative to the list file, and each
    path's value in the optional mpp column ({} without one; None for an empty cell)."""
    text = _list_text(list_file)
    first = text.split("\n", 1)[0]
    dialect: Any = "excel-tab" if list_file.suffix.lower() == ".tsv" or "\t" in first else "excel"
    if dialect == "excel" and ";" in first and "," not in first:
        dialect = _Semicolons  # spreadsheets in locales whose decimal mark is a comma
    rows = [[c.strip() for c in r] for r in csv.reader(text.splitlines(), dialect=dialect)]
    rows = [r for r in rows if r and r[0]]
    if not rows:
        raise DiscoveryError(f"{list_file}: empty slide list")
    header = [c.strip().lower() for c in rows[0]]
    col, first_line = 0, 1
    named = [i for i, h in enumerate(header) if h in PATH_COLUMNS]
    mpp_col = next((i for i, h in enumerate(header) if h in MPP_COLUMNS), None)
    if named:
        col, rows, first_line = named[0], rows[1:], 2
    elif not _looks_like_path(rows[0][0], list_file):
        rows, first_line = rows[1:], 2  # an unnamed header line
    else:
        mpp_col = None  # no header at all: no column has a name
    paths = []
    mpps: dict[Path, float | None] = {}
    for line_no, row in enumerate(rows, start=first_line):
        if col >= len(row) or not row[col].strip():
            raise DiscoveryError(f"{list_file}: row {line_no} has no path in column {col + 1}")
        paths.append(_list_path(row[col].strip(), list_file, line_no))
        if mpp_col is not None:
            mpp = _list_mpp(row, mpp_col, list_file, line_no)
            if paths[-1] in mpps and mpps[paths[-1]] != mpp:
                raise DiscoveryError(f"{list_file}: row {line_no}: {paths[-1]} is listed twice with "
                                     f"different mpp ({mpps[paths[-1]]} and {mpp})")
            mpps.setdefault(paths[-1], mpp)
    return paths, mpps


class _Semicolons(csv.excel):
    delimiter = ";"


def _list_text(list_file: Path) -> str:
    """A list file's text, however a spreadsheet program saved it: UTF-8 with or without a
    byte-order mark, UTF-16 ("Unicode text"), or else Windows-1252 (with a warning)."""
    try:
        data = list_file.read_bytes()
    except OSError as exc:
        raise DiscoveryError(f"{list_file}: cannot read the slide list: {exc.strerror}") from exc
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        return data.decode("utf-16")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError:
        log.warning("%s: not UTF-8 text: read as Windows-1252 (save it as CSV UTF-8 to be sure)",
                    list_file)
        return data.decode("cp1252", errors="replace")


def _list_path(cell: str, list_file: Path, line_no: int) -> Path:
    """A list cell as an absolute path: relative ones below the list's folder; Windows `\\`
    separators in a path that does not exist as written are read as `/`."""
    cell = cell.strip().strip('"').strip("'")
    p = Path(cell).expanduser()
    path = _absolute(p if p.is_absolute() else list_file.parent / p)
    if "\\" in cell and not path.exists():
        if re.match(r"^[A-Za-z]:[\\/]|^\\\\", cell):
            log.warning("%s: row %d: %s is a Windows path (drive or share): give the path where "
                        "this machine mounts it", list_file, line_no, cell)
            return path
        alt = Path(cell.replace("\\", "/")).expanduser()
        path = _absolute(alt if alt.is_absolute() else list_file.parent / alt)
    return path


def _list_mpp(row: list[str], col: int, list_file: Path, line_no: int) -> float | None:
    """A row's pixel size: a positive number, or None for an empty cell (the file's own then)."""
    cell = row[col].strip() if col < len(row) else ""
    if not cell:
        return None
    try:
        mpp = float(cell)
    except ValueError:
        mpp = float("nan")
    if not (mpp > 0 and mpp < float("inf")):
        raise DiscoveryError(f"{list_file}: row {line_no}: mpp {cell!r} is not a positive number "
                             "of µm per pixel")
    return mpp


def _absolute(p: Path) -> Path:
    """Absolute and normalised (no "." or ".." parts) without resolving symbolic links: ids
    come from the names the user wrote, whichever way the path to them was spelled."""
    return Path(os.path.abspath(os.path.expanduser(p)))


def _looks_like_path(cell: str, list_file: Path) -> bool:
    p = Path(cell.strip())
    return p.suffix.lower() in SLIDE_EXTENSIONS or (list_file.parent / p).exists() or p.exists()


def _common_root(paths: list[Path]) -> Path:
    if not paths:
        return Path("/")
    parts = [p.parent.parts for p in paths]
    common = []
    for level in zip(*parts, strict=False):  # the common prefix: stop at the shortest
        if len(set(level)) != 1:
            break
        common.append(level[0])
    return Path(*common) if common else Path("/")


def _assign_ids(paths: list[Path], root: Path) -> list[SlideEntry]:
    """The file stem where unique; else the path below `root` joined with "__" (x/s.svs -> x__s),
    keeping the extension where even that clashes (x.svs and x.tif in one folder -> x.svs, x.tif),
    so that two inputs never share an output folder."""
    unique = _one_per_file(paths)
    stems = Counter(_decodable(p.stem) for p in unique)
    by_path = {p: _path_id(p, root, keep_suffix=False) for p in unique if stems[_decodable(p.stem)] > 1}
    clashes = Counter(by_path.values())
    entries = []
    for p in unique:
        if stems[_decodable(p.stem)] == 1:
            slide_id = _decodable(p.stem)
        elif clashes[by_path[p]] == 1:
            slide_id = by_path[p]
        else:
            slide_id = _path_id(p, root, keep_suffix=True)
        entries.append(SlideEntry(path=p, slide_id=slide_id))
    _check_unique(entries)
    return entries


def _keep_known_ids(entries: list[SlideEntry], root: Path, known: Mapping[str, str]) -> list[SlideEntry]:
    """`entries` with the ids `known` (path -> id, from OUT's manifest) gave their files, and
    ids that no other known file has for the rest: an id once given never changes, whatever
    slides are added later."""
    if not known:
        return entries
    real_known = {os.path.realpath(p): sid for p, sid in known.items()}
    kept: dict[Path, str] = {}
    for e in entries:
        prior = known.get(printable_path(e.path)) or real_known.get(os.path.realpath(e.path))
        if prior is not None and safe_id(prior) == prior:
            kept[e.path] = prior
    # An id is taken while the file it was given to is still there; a recorded path that is
    # gone (the cohort moved, or was mounted elsewhere) leaves its id to the rules, which give
    # the moved file the same id again (its fingerprint decides whether its results stand).
    taken = {sid for p, sid in known.items() if os.path.lexists(p)} | set(kept.values())
    out = []
    for e in entries:
        sid = kept.get(e.path)
        if sid is None:
            options = [e.slide_id, _path_id(e.path, root, keep_suffix=False),
                       _path_id(e.path, root, keep_suffix=True)]
            sid = next((o for o in options if o not in taken), None)
            n = 2
            while sid is None:
                sid = f"{options[-1]}_{n}" if f"{options[-1]}_{n}" not in taken else None
                n += 1
            taken.add(sid)
            if sid != e.slide_id:
                log.info("%s: id %s (%s is the id OUT's manifest gives another file)", e.path, sid,
                         e.slide_id)
        elif sid != e.slide_id:
            log.info("%s: keeps its id %s from OUT's manifest (the rules alone would now give %s)",
                     e.path, sid, e.slide_id)
        out.append(replace(e, slide_id=sid))
    _check_unique(out)
    return out


def _one_per_file(paths: list[Path]) -> list[Path]:
    """`paths` without repeats of one file (same path, or two links to it): the first is kept."""
    seen: dict[object, Path] = {}
    unique = []
    for p in paths:
        try:
            st = p.stat()
            key: object = (st.st_dev, st.st_ino)
        except OSError:  # missing or unreadable: recorded as a failed slide later, by its path
            key = p
        if key in seen:
            if seen[key] != p:
                log.warning("%s is the same file as %s: it is run once, as %s", p, seen[key], seen[key])
            continue
        seen[key] = p
        unique.append(p)
    return unique


def printable_path(path: Path) -> str:
    """`path` as text any table or log can store: bytes of a file name that is not UTF-8 are
    written as backslash escapes (`\\xe9`), the way the manifest records the path."""
    return os.fsencode(path).decode("utf-8", "backslashreplace")


def _decodable(sid: str) -> str:
    """An id without the undecodable bytes of a file name that is not UTF-8 (Windows shares,
    old archives: Python keeps them as surrogates, which no table or log can store): each
    becomes "_"."""
    return safe_id(sid.encode("utf-8", "surrogateescape").decode("utf-8", "replace").replace("\ufffd", "_"))


def _path_id(p: Path, root: Path, *, keep_suffix: bool) -> str:
    try:
        rel = p.relative_to(root)
    except ValueError:
        rel = Path(*p.parts[1:])
    parts = (rel if keep_suffix else rel.with_suffix("")).parts
    return _decodable("__".join(parts))


def _check_unique(entries: list[SlideEntry]) -> None:
    by_id: dict[str, list[Path]] = {}
    for e in entries:
        by_id.setdefault(e.slide_id, []).append(e.path)
    dupes = {k: v for k, v in by_id.items() if len(v) > 1}
    if dupes:
        sid, clash = next(iter(dupes.items()))
        raise DiscoveryError(
            f"{len(dupes)} slide id(s) would share an output folder, e.g. {sid!r} for "
            f"{', '.join(map(str, clash))}: rename one of the files"
        )
