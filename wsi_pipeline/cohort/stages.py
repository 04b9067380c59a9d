"""Per-slide stage bookkeeping: done-markers, the hashes they record, and what a rerun must redo.

A stage is done only when OUT/<slide>/stages/<stage>.json exists and records the hash that the
current run expects. The hash of a stage chains the hash of the stage before it, so a change in
inference settings (or model, or input file) invalidates post-processing and export as well.
Markers are written last and atomically, so an interrupted stage never looks finished.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from wsi_pipeline.atomic import write_text_atomic
from wsi_pipeline.model.checkpoint import file_sha256  # noqa: F401  (the runner imports it from here)

STAGES: tuple[str, ...] = ("infer", "postproc", "export")

#: Files and folders each stage writes in OUT/<slide>/ (removed before the stage is redone).
STAGE_OUTPUTS: dict[str, tuple[str, ...]] = {
    "infer": ("maps.zarr", "maps.zarr.partial", "tissue.png", "tissue.json"),
    "postproc": ("nuclei.parquet",),
    "export": ("nuclei.geojson.gz", "summary.json", "overlay.png"),
}
FAILURE_FILE = "failed.json"
#: The Dask key of the stage task running now; left behind only when its worker died.
ATTEMPT_FILE = "attempt.key"


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


def slide_fingerprint(path: Path) -> dict[str, Any]:
    """What identifies the input's content cheaply: its size and whole-second mtime."""
    st = Path(path).stat()
    return {"size": st.st_size, "mtime": int(st.st_mtime)}


@dataclass
class StageMarker:
    stage: str
    config_hash: str
    model_sha256: str
    version: str
    seconds: float
    finished_at: str = field(default_factory=lambda: time.strftime("%Y-%m-%dT%H:%M:%S%z"))
    result: dict[str, Any] = field(default_factory=dict)


class SlideStages:
    """The stage state of one slide's output folder."""

    def __init__(self, slide_dir: Path):
        self.slide_dir = Path(slide_dir)
        self.stages_dir = self.slide_dir / "stages"

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
        m = self.read(stage)
        return m is not None and m.config_hash == expected_hash and m.model_sha256 == model_sha256

    def pending(self, expected: dict[str, str], model_sha256: str) -> list[str]:
        """Stages to run: the first one not done with the expected hash, and every one after it."""
        for i, stage in enumerate(STAGES):
            if not self.is_done(stage, expected[stage], model_sha256):
                return list(STAGES[i:])
        return []

    def begin(self, stage: str) -> None:
        """Forget `stage` and all later stages, and remove what `stage` wrote before.

        Markers go first: if we are killed half-way through, nothing downstream still claims
        to be built from outputs that no longer exist. Temporary files that a killed attempt
        left mid-write (`.<name>.<pid>.<token>.tmp`, see wsi_pipeline.atomic) go as well.
        """
        for later in STAGES[STAGES.index(stage):]:
            self.marker_path(later).unlink(missing_ok=True)
        for name in STAGE_OUTPUTS[stage]:
            p = self.slide_dir / name
            if p.is_dir() and not p.is_symlink():
                shutil.rmtree(p)
            else:
                p.unlink(missing_ok=True)
            for tmp in self.slide_dir.glob(f".{name}.*.tmp"):
                tmp.unlink(missing_ok=True)

    def finish(self, marker: StageMarker) -> None:
        atomic_write_json(self.marker_path(marker.stage), asdict(marker))

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
