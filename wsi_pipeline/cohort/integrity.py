"""Integrity of the stage outputs a later stage or a rerun trusts: recorded when a stage
finishes, checked before anything reads them again.

A stage marker says that its outputs were whole when it was written; bit rot, an interrupted
copy of OUT or a disk error can damage them afterwards, and then a rerun that trusts them gives
a table that looks finished and is wrong (or a decoder crash that takes the whole run down).
So each marker records, per output file, its size and crc32c, and per zarr array of maps.zarr
how many chunk files it has; maps.zarr's chunks carry zarr's crc32c codec (the checksum of the
compressed bytes, appended to each chunk file).

Checks, from cheap to thorough:

- `quick_problem`: size as recorded, and for Parquet the footer (magic bytes and metadata that
  parse): on every rerun, for every output a finished stage promises.
- `deep_problem`: every byte against its recorded crc32c; for maps.zarr every chunk file
  against the crc32c stored in it, by reading the file, never by decoding it (a damaged chunk
  can crash a decompressor with a segmentation fault); maps.zarr written before chunks carried
  checksums is decoded in a child process, so that a crash there is a finding, not the end of
  the run. Run for the outputs a stage that is about to run reads.

Each check returns None (whole) or one line that says what is wrong with which file.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import google_crc32c

#: Bytes read at a time when checksumming a file.
_BLOCK = 1 << 22
#: Seconds a child process may take to decode a maps.zarr written without chunk checksums.
LEGACY_DECODE_TIMEOUT_S = 1800.0


def file_crc32c(path: Path) -> str:
    """crc32c of the file's bytes, as 8 hex digits."""
    crc = google_crc32c.Checksum()
    with open(path, "rb") as fh:
        while block := fh.read(_BLOCK):
            crc.update(block)
    return crc.hexdigest().decode()


def record(path: Path) -> dict[str, Any] | None:
    """What to remember about the output at `path` to check it later; None for what is not
    checked (a folder other than a zarr store, e.g. the QC sheet's)."""
    path = Path(path)
    if path.is_file():
        return {"size": path.stat().st_size, "crc32c": file_crc32c(path)}
    if path.is_dir() and (path / "zarr.json").is_file():
        return {"chunks": {name: len(chunks) for name, chunks in _zarr_chunks(path).items()}}
    return None


def quick_problem(path: Path, rec: dict[str, Any] | None) -> str | None:
    """What is visibly wrong with the output at `path` (size, Parquet footer, a zarr array's
    metadata or chunk count); None if nothing is. `rec` is what `record` returned for it (None:
    an output of an older version, only its format is checked)."""
    path = Path(path)
    try:
        if path.is_dir():
            return _zarr_quick(path, rec) if _is_zarr(path, rec) else None
        size = path.stat().st_size
        if rec is not None and "size" in rec and size != rec["size"]:
            return f"{path} is {size} bytes, {rec['size']} when it was written (truncated or replaced)"
        if path.suffix == ".parquet":
            return _parquet_footer(path, size)
    except OSError as exc:
        return f"{path} cannot be read: {exc.strerror or exc}"
    return None


def deep_problem(path: Path, rec: dict[str, Any] | None) -> str | None:
    """`quick_problem`, then every byte: the recorded crc32c of a file, the crc32c of every
    chunk of a zarr store (decoding in a child process where the chunks carry none)."""
    problem = quick_problem(path, rec)
    if problem is not None:
        return problem
    path = Path(path)
    try:
        if path.is_dir():
            return _zarr_deep(path) if _is_zarr(path, rec) else None
        if rec is not None and "crc32c" in rec and file_crc32c(path) != rec["crc32c"]:
            return f"{path} does not match its checksum (crc32c {rec['crc32c']} when written): damaged"
    except OSError as exc:
        return f"{path} cannot be read: {exc.strerror or exc}"
    return None


# -- Parquet ----------------------------------------------------------------------------------
def _parquet_footer(path: Path, size: int) -> str | None:
    """A Parquet file starts and ends with b"PAR1"; the 4 bytes before the last hold the
    footer's length, and the footer (Thrift metadata) must parse."""
    import pyarrow.parquet as pq

    if size < 12:
        return f"{path} is {size} bytes: not a Parquet file (truncated)"
    with open(path, "rb") as fh:
        head = fh.read(4)
        fh.seek(size - 8)
        tail = fh.read(8)
    footer = int.from_bytes(tail[:4], "little")
    if head != b"PAR1" or tail[4:] != b"PAR1" or footer > size - 12:
        return f"{path} has no valid Parquet footer (truncated or damaged)"
    try:
        pq.read_metadata(path)
    except Exception as exc:  # noqa: BLE001 - whatever pyarrow says, the footer is damaged
        return f"{path} has a damaged Parquet footer: {str(exc).splitlines()[0] if str(exc) else exc}"
    return None


# -- zarr -------------------------------------------------------------------------------------
def _is_zarr(path: Path, rec: dict[str, Any] | None) -> bool:
    """A zarr store (its metadata there, or recorded as one): the QC sheet's folder is not."""
    return (path / "zarr.json").exists() or path.suffix == ".zarr" or "chunks" in (rec or {})


def _arrays(store: Path) -> dict[str, dict[str, Any]]:
    """name -> zarr.json of every array directly in the group `store` (raises ValueError on
    metadata that does not parse)."""
    found: dict[str, dict[str, Any]] = {}
    for meta in sorted(store.glob("*/zarr.json")):
        data = json.loads(meta.read_text())
        if data.get("node_type") == "array":
            found[meta.parent.name] = data
    return found


def _zarr_chunks(store: Path) -> dict[str, list[Path]]:
    return {name: sorted(p for p in (store / name / "c").rglob("*") if p.is_file())
            for name in _arrays(store)}


def _checksummed(meta: dict[str, Any]) -> bool:
    return any(isinstance(c, dict) and c.get("name") == "crc32c" for c in meta.get("codecs", []))


def _zarr_quick(store: Path, rec: dict[str, Any] | None) -> str | None:
    try:
        json.loads((store / "zarr.json").read_text())
        arrays = _arrays(store)
    except (OSError, ValueError) as exc:
        return f"{store}: its zarr metadata does not read ({exc}): damaged"
    expected = (rec or {}).get("chunks", {})
    for name, n in expected.items():
        if name not in arrays:
            return f"{store}: array {name} is gone: damaged"
        have = sum(1 for p in (store / name / "c").rglob("*") if p.is_file())
        if have != n:
            return (f"{store}: array {name} has {have} chunk files, {n} when it was written "
                    "(an incomplete copy?)")
    return None


def _zarr_deep(store: Path) -> str | None:
    arrays = _arrays(store)
    legacy = [name for name, meta in arrays.items() if not _checksummed(meta)]
    for name, chunks in _zarr_chunks(store).items():
        if name in legacy:
            continue
        for chunk in chunks:
            data = chunk.read_bytes()
            if len(data) < 4 or google_crc32c.value(data[:-4]).to_bytes(4, "little") != data[-4:]:
                rel = chunk.relative_to(store)
                return f"{store}: chunk {rel} does not match its checksum (truncated or damaged)"
    if legacy:
        return _decode_in_child(store, legacy)
    return None


_DECODE = """
import itertools, sys, zarr
group = zarr.open_group(sys.argv[1], mode="r")
for name in sys.argv[2:]:
    array = group[name]
    ranges = [range(0, s, c) for s, c in zip(array.shape, array.chunks)]
    for start in itertools.product(*ranges):
        array[tuple(slice(a, a + c) for a, c in zip(start, array.chunks))]
"""


def _decode_in_child(store: Path, names: list[str]) -> str | None:
    """Decode every chunk of `names` (arrays without checksums) in a child process: a
    decompressor that crashes on a damaged chunk ends the child, not this run."""
    try:
        proc = subprocess.run([sys.executable, "-c", _DECODE, str(store), *names], capture_output=True,
                              text=True, timeout=LEGACY_DECODE_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        return f"{store}: decoding its chunks took over {LEGACY_DECODE_TIMEOUT_S:.0f} s (damaged?)"
    if proc.returncode < 0:
        return f"{store}: the decoder crashed (signal {-proc.returncode}) reading it: damaged"
    if proc.returncode != 0:
        last = (proc.stderr.strip().splitlines() or ["unknown error"])[-1]
        return f"{store}: does not decode ({last}): damaged"
    return None
