"""Output names of tile mode: one set per input image, never an input's own name.

`predict-tiles D D --overlay` once wrote t1.png's overlay over t1.png itself, and x.png and
x.jpg in one folder both wrote x.mat (the second over the first, while 2 were reported). So the
names are planned for the whole folder before any image is processed:

- <stem><suffix> for each output format (<stem>.mat, <stem>.geojson.gz, <stem>.csv ...) and
  <stem>.png (overlay) where the stem is unique among the inputs (compared ignoring case, as
  macOS and Windows file systems do);
- <name><suffix>, <name>.png (extension kept: x.png.mat, x.jpg.mat) where stems clash;
- an output that would be an input image (or the same file as one), or that two inputs would
  share, is an error before any work, naming the files.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path


class OutputClash(ValueError):
    """Planned outputs would overwrite an input or each other."""


@dataclass(frozen=True)
class TileOutputs:
    """Where one image's results go: a file per output format (`export.formats`) and the
    overlay (None: not asked for)."""

    files: dict[str, Path]
    overlay: Path | None = None

    def paths(self) -> list[Path]:
        return [*self.files.values(), *([self.overlay] if self.overlay is not None else [])]


def plan_outputs(images: list[Path], output_dir: Path, *, formats: Sequence[str], overlay: bool,
                 protected: Iterable[Path] = ()) -> dict[Path, TileOutputs]:
    """Output paths for every image, one per format in `formats` (names of
    `export.formats.FORMATS`) and the overlay; `protected` are files never to be written over
    (the input images and every other image in the input folder)."""
    from wsi_pipeline.export.formats.base import output_format

    suffixes = {name: output_format(name).suffix for name in formats}
    stems = Counter(p.stem.casefold() for p in images)
    plan: dict[Path, TileOutputs] = {}
    for image in images:
        base = image.stem if stems[image.stem.casefold()] == 1 else image.name
        plan[image] = TileOutputs(
            files={name: output_dir / f"{base}{suffix}" for name, suffix in suffixes.items()},
            overlay=output_dir / f"{base}.png" if overlay else None,
        )
    _check(plan, [*images, *protected])
    return plan


def _check(plan: dict[Path, TileOutputs], protected: list[Path]) -> None:
    owners: dict[str, Path] = {}
    for image, outputs in plan.items():
        for out in outputs.paths():
            key = os.path.normcase(os.path.abspath(out)).casefold()
            if key in owners:
                raise OutputClash(f"{owners[key].name} and {image.name} would both write {out}: "
                                  "rename one of them")
            owners[key] = image
    inputs = {}
    for p in protected:
        try:
            st = p.stat()
        except OSError:
            continue
        inputs[(st.st_dev, st.st_ino)] = p
    for image, outputs in plan.items():
        for out in outputs.paths():
            try:
                st = out.stat()
            except OSError:
                continue
            victim = inputs.get((st.st_dev, st.st_ino))
            if victim is not None:
                raise OutputClash(
                    f"the output {out} of {image.name} would overwrite the input image {victim}: "
                    "write to another OUTPUT_DIR"
                )
