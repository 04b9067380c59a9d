"""Per-slide stage bookkeeping: done-markers, the hashes they record, and what a rerun must redo.

A stage is done only when OUT/<slide>/stages/<stage>.json exists, records the hash that the
current run expects, and the outputs it lists (what the stage wrote) still exist. The hash of a
stage chains the hash of the stage before it, so a change in inference settings (or model, or
input file) invalidates post-processing and export as well. Markers are written last and
atomically, so an interrupted stage never looks finished.

A deleted output is redone, and only what is needed for it: maps.zarr (large, about 90 MB per
mm² of tissue) may be deleted once a slide is finished; inference is redone only when a stage
that reads the maps has to run again.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from wsi_pipeline.atomic import write_text_atomic
from wsi_pipeline.cohort import integrity
from wsi_pipeline.contract import (
    FORMAT_FILES,
    MAPS,
    MAPS_PARTIAL,
    NUCLEI,
    OVERLAY,
    QC_DIR,
    STAGES_DIR,
    SUMMARY,
    TISSUE_JSON,
    TISSUE_PNG,
)

STAGES: tuple[str, ...] = ("infer", "postproc", "export")

#: Files and folders each stage writes in OUT/<slide>/ (removed before the stage is redone).
STAGE_OUTPUTS: dict[str, tuple[str, ...]] = {
    "infer": (MAPS, MAPS_PARTIAL, TISSUE_PNG, TISSUE_JSON),
    "postproc": (NUCLEI,),
    "export": (*FORMAT_FILES.values(), SUMMARY, OVERLAY, QC_DIR),  # qc/: the QC sheet
}
#: What each stage reads from the folder (written by an earlier stage). export takes class
#: names and colours, slide size, pixel sizes and provenance from nuclei.parquet's metadata
#: (copied there from maps.zarr's attributes), so a slide whose maps were deleted to save
#: space exports again (--geojson, a QC bound) without redoing inference.
STAGE_READS: dict[str, tuple[str, ...]] = {
    "infer": (),
    "postproc": (MAPS,),
    "export": (NUCLEI, TISSUE_PNG, TISSUE_JSON),
}
#: Outputs that only later stages need: their absence alone does not undo a finished slide.
INTERMEDIATE: frozenset[str] = frozenset({MAPS})
#: What a marker without a list of outputs (written by wsi-pipeline 0.1.0) promises.
DEFAULT_PROMISES: dict[str, tuple[str, ...]] = {
    "infer": (MAPS, TISSUE_PNG, TISSUE_JSON),
    "postproc": (NUCLEI,),
    "export": (SUMMARY, OVERLAY),
}
FAILURE_FILE = "failed.json"
#: The Dask key of the stage task running now; left behind only when its worker died.
ATTEMPT_FILE = "attempt.key"


def previous_name(name: str) -> str:
    """Where `begin` sets an output aside: `nuclei.geojson.gz` -> `nuclei.previous.geojson.gz`
    (still opened by what opened it: the extension is kept; no stage writes or deletes it)."""
    stem, dot, rest = name.partition(".")
    return f"{stem}.previous{dot}{rest}"


def canonical_hash(obj: Any) -> str:
    """Short sha256 of a JSON rendering that does not depend on key order."""
    text = json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def atomic_write_json(path: Path, obj: Any) -> None:
    """Markers are fsynced: a marker that survives a power loss must hold its full content."""
    text = json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n"
    write_text_atomic(path, text, fsync=True)


def stage_hashes(
    stage_configs: dict[str, Any], model_sha256: str, slide_fingerprint: dict[str, Any]
) -> dict[str, str]:
    """Chained hash per stage: each includes its own config and the hash of the stage before."""
    hashes: dict[str, str] = {}
    upstream: Any = {"model_sha256": model_sha256, "slide": slide_fingerprint}
    for stage in STAGES:
        hashes[stage] = canonical_hash({"stage": stage, "config": stage_configs[stage], "up": upstream})
        upstream = hashes[stage]
    return hashes


#: Bytes of a slide's start and end, and of each of SAMPLE_BLOCKS blocks spread between them,
#: that its content sample hashes: the header (TIFF directories, vendor metadata) and tiles
#: across the file, read in ~20 small reads whatever the slide's size.
SAMPLE_EDGE_BYTES = 64 * 1024
SAMPLE_BLOCKS = 16
SAMPLE_BLOCK_BYTES = 4096


def content_sample(path: Path) -> str:
    """sha256 (16 hex digits) of the slide's first and last 64 KiB and 16 blocks of 4 KiB
    spread evenly between: a different scan of the same size, copied with its mtime kept
    (`cp -p`, `rsync -a`), differs here in practice (its header's scan date and tile offsets,
    its compressed tiles)."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        size = os.fstat(fh.fileno()).st_size
        offsets = [0, max(0, size - SAMPLE_EDGE_BYTES)]
        lengths = [SAMPLE_EDGE_BYTES, SAMPLE_EDGE_BYTES]
        for i in range(1, SAMPLE_BLOCKS + 1):
            offsets.append(size * i // (SAMPLE_BLOCKS + 1))
            lengths.append(SAMPLE_BLOCK_BYTES)
        for offset, length in zip(offsets, lengths, strict=True):
            fh.seek(offset)
            h.update(fh.read(length))
    return h.hexdigest()[:16]


def legacy_fingerprint(path: Path) -> dict[str, Any]:
    """The fingerprint of versions before the content sample: size and whole-second mtime
    (markers written under it are upgraded once, `SlideStages.upgrade_hashes`)."""
    st = Path(path).stat()
    return {"size": st.st_size, "mtime": int(st.st_mtime)}


def slide_fingerprint(path: Path) -> dict[str, Any]:
    """What identifies the input's content: its size, whole-second mtime and a hash of its
    header and sampled blocks (`content_sample`), so that a slide replaced by another scan of
    the same size with its mtime kept is not taken for the one whose results are there."""
    fingerprint = legacy_fingerprint(path)  # raises OSError where the file cannot even be stat'ed
    try:
        content = content_sample(path)
    except OSError as exc:  # a folder, a file we may not read: the preflight names the problem
        content = f"unreadable: {type(exc).__name__}"
    return {**fingerprint, "content": content}


@dataclass
class StageMarker:
    stage: str
    config_hash: str
    model_sha256: str
    version: str
    seconds: float
    finished_at: str = field(default_factory=lambda: time.strftime("%Y-%m-%dT%H:%M:%S%z"))
    result: dict[str, Any] = field(default_factory=dict)
    #: Names in the slide folder this stage wrote (None: filled in by SlideStages.finish).
    outputs: list[str] | None = None
    #: Per output, what `integrity.record` noted when the stage finished (sizes, crc32c, zarr
    #: chunk counts); None in markers of versions before 0.3 (their outputs' format is checked).
    integrity: dict[str, Any] | None = None

    def promises(self) -> tuple[str, ...]:
        return tuple(self.outputs) if self.outputs is not None else DEFAULT_PROMISES[self.stage]


class SlideStages:
    """The stage state of one slide's output folder."""

    def __init__(self, slide_dir: Path):
        self.slide_dir = Path(slide_dir)
        self.stages_dir = self.slide_dir / STAGES_DIR
        #: Damaged outputs found by the last `pending` or `is_done`, one line each.
        self.problems: list[str] = []

    def marker_path(self, stage: str) -> Path:
        return self.stages_dir / f"{stage}.json"

    def read(self, stage: str) -> StageMarker | None:
        """The marker of `stage`, or None if absent or unreadable (then the stage is redone)."""
        try:
            data = json.loads(self.marker_path(stage).read_text())
            return StageMarker(**data)
        except (OSError, ValueError, TypeError):
            return None

    def is_done(self, stage: str, expected_hash: str, model_sha256: str) -> bool:
        """The marker records the expected hash and model, and what it promises still exists
        and looks whole (`integrity.quick_problem`: sizes, the Parquet footer; intermediate
        outputs aside: see `pending`). A damaged output is added to `problems`."""
        m = self.read(stage)
        if not (m is not None and m.config_hash == expected_hash and m.model_sha256 == model_sha256
                and not self.missing(m, include_intermediate=False)):
            return False
        for name in m.promises():
            if name in INTERMEDIATE:
                continue
            problem = integrity.quick_problem(self.slide_dir / name, (m.integrity or {}).get(name))
            if problem is not None:
                self._found(problem, stage)
                return False
        return True

    def _found(self, problem: str, stage: str) -> None:
        line = f"{problem}: {stage} is redone"
        if line not in self.problems:
            self.problems.append(line)

    def damaged(self, stage: str, name: str) -> str | None:
        """What `integrity.deep_problem` finds wrong with `name`, an output of `stage` that a
        stage about to run reads; None when it is whole (or `stage` has no marker)."""
        m = self.read(stage)
        if m is None or not (self.slide_dir / name).exists():
            return None
        return integrity.deep_problem(self.slide_dir / name, (m.integrity or {}).get(name))

    def missing(self, marker: StageMarker, *, include_intermediate: bool = True) -> list[str]:
        """The outputs `marker` promises that are not in the folder."""
        return [name for name in marker.promises()
                if (include_intermediate or name not in INTERMEDIATE)
                and not (self.slide_dir / name).exists()]

    def pending(self, expected: dict[str, str], model_sha256: str, *, verify: bool = True) -> list[str]:
        """Stages to run: the first one not done, every one after it, and, when a stage that
        runs reads an output an earlier stage made that is gone or damaged, that earlier stage
        as well. `verify` checks every byte of those outputs first (`integrity.deep_problem`:
        maps.zarr's chunk checksums); what is found damaged is in `problems`, one line each."""
        self.problems = []
        first = next((i for i, stage in enumerate(STAGES)
                      if not self.is_done(stage, expected[stage], model_sha256)), len(STAGES))
        checked: set[str] = set()
        while first > 0:
            needed = {name for stage in STAGES[first:] for name in STAGE_READS[stage]}
            gone = []
            for i, stage in enumerate(STAGES[:first]):
                for name in STAGE_OUTPUTS[stage]:
                    if name not in needed:
                        continue
                    if not (self.slide_dir / name).exists():
                        gone.append(i)
                    elif verify and name not in checked:
                        checked.add(name)
                        problem = self.damaged(stage, name)
                        if problem is not None:
                            self._found(problem, stage)
                            gone.append(i)
            if not gone:
                break
            first = min(gone)
        return list(STAGES[first:])

    def begin(self, stage: str, set_aside: tuple[str, ...] = ()) -> list[tuple[Path, Path]]:
        """Forget `stage` and all later stages, and remove what `stage` wrote before.

        Markers go first: if we are killed half-way through, nothing downstream still claims
        to be built from outputs that no longer exist. Temporary files that a killed attempt
        left mid-write (`.<name>.<pid>.<token>.tmp`, see wsi_pipeline.atomic) go as well.
        Outputs named in `set_aside` (a GeoJSON an earlier `--geojson` run wrote, which this
        run will not write again) are renamed to `previous_name` instead of deleted: what a
        user asked for is never lost by a rerun that did not ask. Returns (old, new) of each.
        """
        for later in STAGES[STAGES.index(stage):]:
            self.marker_path(later).unlink(missing_ok=True)
        moved = []
        for name in set_aside:
            src = self.slide_dir / name
            if src.is_file() and not src.is_symlink():
                dest = self.slide_dir / previous_name(name)
                os.replace(src, dest)
                moved.append((src, dest))
        self.discard(stage)
        return moved

    def discard(self, stage: str) -> None:
        """Remove what `stage` wrote and its temporary files: before it is redone, and after
        it failed on a full disk (the space goes back at once; a half-written maps.zarr.partial
        would otherwise sit on the full disk until the slide is run again)."""
        for name in STAGE_OUTPUTS[stage]:
            p = self.slide_dir / name
            if p.is_dir() and not p.is_symlink():
                shutil.rmtree(p)
            else:
                p.unlink(missing_ok=True)
            for tmp in self.slide_dir.glob(f".{name}.*.tmp"):
                tmp.unlink(missing_ok=True)

    def finish(self, marker: StageMarker) -> None:
        """Write the marker, listing the outputs the stage left (what it promises from now on)."""
        if marker.outputs is None:
            marker.outputs = [name for name in STAGE_OUTPUTS[marker.stage]
                              if not name.endswith(".partial") and (self.slide_dir / name).exists()]
        if marker.integrity is None:
            records = {name: integrity.record(self.slide_dir / name) for name in marker.outputs}
            marker.integrity = {name: rec for name, rec in records.items() if rec is not None}
        atomic_write_json(self.marker_path(marker.stage), asdict(marker))

    def as_upgraded(self, legacy: dict[str, str], expected: dict[str, str]) -> dict[str, str]:
        """The hashes to judge the markers by as if `upgrade_hashes` had run (the dry run,
        which writes nothing): `legacy` for stages whose marker carries it, else `expected`."""
        judged = dict(expected)
        for stage in STAGES:
            m = self.read(stage)
            if m is not None and m.config_hash == legacy[stage]:
                judged[stage] = legacy[stage]
        return judged

    def upgrade_hashes(self, legacy: dict[str, str], expected: dict[str, str]) -> list[str]:
        """Rewrite the markers (and the failure record) that carry `legacy` hashes, those of
        a version whose fingerprint had no content sample, to `expected`: finished work is
        kept across the upgrade, trusting size and mtime this one last time. The stages
        upgraded, in order."""
        upgraded = []
        for stage in STAGES:
            m = self.read(stage)
            if m is not None and m.config_hash == legacy[stage] and legacy[stage] != expected[stage]:
                m.config_hash = expected[stage]
                atomic_write_json(self.marker_path(stage), asdict(m))
                upgraded.append(stage)
        failure = self.read_failure()
        if failure is not None and failure.get("stage_hash") == legacy["export"]:
            self.record_failure({**failure, "stage_hash": expected["export"]})
        return upgraded

    # -- the running attempt (evidence that a task lost with its worker had started) --------------
    def record_attempt(self, key: str) -> None:
        self.stages_dir.mkdir(parents=True, exist_ok=True)
        write_text_atomic(self.stages_dir / ATTEMPT_FILE, key)

    def read_attempt(self) -> str | None:
        try:
            return (self.stages_dir / ATTEMPT_FILE).read_text()
        except OSError:
            return None

    def clear_attempt(self) -> None:
        (self.stages_dir / ATTEMPT_FILE).unlink(missing_ok=True)

    # -- failures -----------------------------------------------------------------------------
    def failure_path(self) -> Path:
        return self.stages_dir / FAILURE_FILE

    def read_failure(self) -> dict[str, Any] | None:
        try:
            return json.loads(self.failure_path().read_text())
        except (OSError, ValueError):
            return None

    def record_failure(self, record: dict[str, Any]) -> None:
        atomic_write_json(self.failure_path(), record)

    def clear_failure(self) -> None:
        self.failure_path().unlink(missing_ok=True)
