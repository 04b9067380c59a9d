"""Checks made before any slide is processed: slides open and have a believable pixel size, the
checkpoint loads, and the output's disk can hold the maps.

Each of these used to surface late and expensively: a missing pixel size failed every such
slide at the start of its inference, a garbage checkpoint failed every slide separately, an
absurd `--mpp 100` started a 90-hour run on a 768 px crop. Here they are found in seconds, by
opening each slide once (no model, no tissue detection), and reported together:

- a slide that does not open, or whose tissue has no colour (a greyscale export: it would
  pass as no_tissue), is recorded as failed and skipped; the others go on;
- a slide without any pixel size, or with one outside `preflight.mpp_range`, stops the run
  before it starts (unless `allow_unusual_mpp`): its results would be wrong, not missing;
- a checkpoint that does not load is one error naming the file;
- free disk space is compared with an estimate of the maps (≈90 MB per mm² of tissue at
  0.25 µm/px, from each slide's scanned area, since tissue is not detected yet).
"""

from __future__ import annotations

import shutil
import traceback
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from wsi_pipeline.cohort.config import RunConfig
from wsi_pipeline.cohort.discover import SlideEntry
from wsi_pipeline.cohort.mpp import (
    ResolvedMpp,
    implausible_reason,
    missing_mpp_message,
    resolve_mpp,
)
from wsi_pipeline.io.base import TYPICAL_MPP_HINT

#: The model pixel size `disk_mb_per_mm2` is given for (the shipped model's).
REFERENCE_MODEL_MPP = 0.25
#: Slides listed by name in a refusal; the rest are counted.
MAX_LISTED = 20

MPP_ADVICE = (
    "Give each slide its level-0 pixel size: --mpp X for slides whose files carry none, an mpp "
    "column in a CSV slide list, or --mpp-override X where the metadata is wrong "
    f"({TYPICAL_MPP_HINT}); --allow-unusual-mpp if an unusual value is right."
)


class PreflightError(ValueError):
    """The run cannot start: the message says what is wrong, naming the files, and what to do."""


@dataclass
class SlideCheck:
    """What opening one slide told: its pixel size and size, or why it cannot be run."""

    entry: SlideEntry
    mpp: ResolvedMpp | None = None
    level0_wh: tuple[int, int] | None = None
    problem: str | None = None  # None, "unreadable", "not_rgb", "missing_mpp" or "implausible_mpp"
    message: str | None = None  # the problem, naming the file
    error_type: str | None = None
    traceback: str | None = None

    @property
    def area_mm2(self) -> float | None:
        """Scanned area (the whole level-0 image), an upper bound of the tissue."""
        if self.level0_wh is None or self.mpp is None or self.mpp.value is None:
            return None
        w, h = self.level0_wh
        return w * h * self.mpp.value**2 / 1e6


def check_slide(entry: SlideEntry, cfg: RunConfig) -> SlideCheck:
    """Open `entry` once and resolve its pixel size by the rules of wsi_pipeline.cohort.mpp."""
    from wsi_pipeline.io import open_slide

    if entry.path.is_dir():
        return SlideCheck(entry, problem="unreadable", message=f"{entry.path}: is a folder, not a slide file",
                          error_type="IsADirectoryError")
    try:
        with open_slide(entry.path, reader=cfg.discovery.reader) as slide:
            wh = slide.dimensions
            resolved = resolve_mpp(slide.native_mpp(), csv=entry.mpp, override=cfg.mpp_override,
                                   fallback=cfg.mpp, objective_power=slide.objective_power)
    except Exception as exc:  # noqa: BLE001 - any failure to open is what this check reports
        return SlideCheck(entry, problem="unreadable", message=str(exc), error_type=type(exc).__name__,
                          traceback=traceback.format_exc())
    check = SlideCheck(entry, mpp=resolved, level0_wh=(int(wh[0]), int(wh[1])))
    if resolved.value is None:
        check.problem = "missing_mpp"
        check.message = missing_mpp_message(entry.path, resolved.objective_power)
        return check
    reason = implausible_reason(resolved.value, cfg.preflight.mpp_range)
    if reason is not None and not cfg.preflight.allow_unusual_mpp:
        check.problem = "implausible_mpp"
        check.message = f"{entry.path}: pixel size {resolved.describe()}: {reason}"
    return check


#: Longest side (px) of the thumbnail the colour check reads.
COLOUR_THUMB_PX = 256
#: A pixel darker than this (mean of R, G, B) is stained tissue, not glass.
TISSUE_GREY_MAX = 215
#: Tissue whose channels never differ by more than this (of 255) has no colour.
GREY_SPREAD_MAX = 4


def check_colour(checks: list[SlideCheck], cfg: RunConfig) -> None:
    """Mark the slides of `checks` whose tissue has no colour (`greyscale_reason`) as
    problem "not_rgb", a few at once. Run for the slides about to be inferred only: it reads a
    thumbnail (under a second a slide), which a rerun of a finished cohort should not pay."""
    from wsi_pipeline.io import open_slide

    def one(check: SlideCheck) -> None:
        if check.problem is not None or check.mpp is None or check.mpp.value is None:
            return
        try:
            with open_slide(check.entry.path, reader=cfg.discovery.reader) as slide:
                slide.use_mpp(check.mpp.value, check.mpp.source or "given")
                grey = greyscale_reason(slide)
        except Exception as exc:  # noqa: BLE001 - it opened a moment ago: what fails now is reported
            check.problem, check.error_type = "unreadable", type(exc).__name__
            check.message, check.traceback = str(exc), traceback.format_exc()
            return
        if grey is not None:
            check.problem, check.error_type = "not_rgb", "NotRGBError"
            check.message = f"{check.entry.path}: {grey}"

    if not checks:
        return
    threads = max(1, min(cfg.preflight.open_threads, len(checks)))
    with ThreadPoolExecutor(threads, thread_name_prefix="colour") as pool:
        list(pool.map(one, checks))


def greyscale_reason(slide: Any) -> str | None:
    """Why `slide` (its pixel size set) is not an RGB H&E scan: its tissue has no colour (an
    8-bit greyscale export, read as R = G = B), so tissue detection would find none and the
    slide would pass as `no_tissue`, or the network would see stains it was never trained on.
    None when it has colour, or no tissue-dark pixels to judge."""
    import numpy as np

    w0, h0 = slide.dimensions
    mpp = slide.mpp * max(w0, h0) / COLOUR_THUMB_PX
    thumb = np.asarray(slide.thumbnail_at_mpp(mpp), dtype=np.int16)
    dark = thumb.mean(axis=2) < TISSUE_GREY_MAX
    if dark.sum() < max(16, dark.size // 200):
        return None
    spread = thumb.max(axis=2) - thumb.min(axis=2)
    if int(np.percentile(spread[dark], 99)) > GREY_SPREAD_MAX:
        return None
    return ("greyscale: its tissue has no colour (R, G and B equal), so it is not an RGB H&E scan "
            "(an 8-bit greyscale export?); the model needs the colour scan: run the original file")


def check_slides(entries: list[SlideEntry], cfg: RunConfig) -> dict[str, SlideCheck]:
    """`check_slide` for every entry, a few at once (opening is I/O: network storage)."""
    threads = max(1, min(cfg.preflight.open_threads, len(entries)))
    with ThreadPoolExecutor(threads, thread_name_prefix="preflight") as pool:
        checks = list(pool.map(lambda e: check_slide(e, cfg), entries))
    return {c.entry.slide_id: c for c in checks}


def mpp_refusal(checks: dict[str, SlideCheck], cfg: RunConfig) -> str | None:
    """The message that stops a run over pixel sizes (None: every slide has a believable one).

    The flags' own values are checked too: `--mpp 100` is a typo even while no slide needs it.
    """
    lines = []
    if not cfg.preflight.allow_unusual_mpp:
        for flag, value in (("--mpp", cfg.mpp), ("--mpp-override", cfg.mpp_override)):
            reason = None if value is None else implausible_reason(value, cfg.preflight.mpp_range)
            if reason is not None:
                lines.append(f"{flag} {value:g}: {reason}")
    bad = [c for c in checks.values() if c.problem in ("missing_mpp", "implausible_mpp")]
    lines += [c.message or "" for c in bad[:MAX_LISTED]]
    if len(bad) > MAX_LISTED:
        lines.append(f"... and {len(bad) - MAX_LISTED} more slides")
    if not lines:
        return None
    head = (f"{len(bad)} slide(s) without a trustworthy pixel size (mpp)" if bad
            else "implausible pixel size (mpp)")
    return "\n  ".join([f"{head}; nothing was run:", *lines]) + "\n" + MPP_ADVICE


def check_checkpoint(path: Path) -> Any:
    """Load the checkpoint once, on the CPU: one clear error naming the file, not one per slide."""
    from wsi_pipeline.model import CheckpointError, load_checkpoint

    try:
        return load_checkpoint(path, map_location="cpu")
    except CheckpointError as exc:
        raise PreflightError(f"checkpoint unusable: {exc}") from exc


@dataclass
class DiskEstimate:
    """Free space on the output's disk against what the maps of the slides to infer may take."""

    n_slides: int
    area_mm2: float  # scanned area of those slides
    need_bytes: float  # if all of it were tissue
    free_bytes: int
    verdict: str  # "ok", "warn" or "refuse"
    message: str

    def __str__(self) -> str:
        return self.message


def estimate_disk(out_dir: Path, checks: list[SlideCheck], model_mpp: float, cfg: RunConfig) -> DiskEstimate:
    """Judge free space under `cfg.preflight` for inferring `checks`' slides with a model at
    `model_mpp` (map pixels per mm² grow with the square of 1 / model_mpp)."""
    pf = cfg.preflight
    area = sum(c.area_mm2 or 0.0 for c in checks)
    per_mm2 = pf.disk_mb_per_mm2 * 1e6 * (REFERENCE_MODEL_MPP / model_mpp) ** 2
    need = area * per_mm2
    free = shutil.disk_usage(_existing(out_dir)).free
    gb = 1e9
    what = (f"{len(checks)} slide(s) to infer, {area:.1f} mm² scanned: maps up to {need / gb:.1f} GB "
            f"if all of it is tissue (≈{per_mm2 / 1e6:.0f} MB per mm²); {free / gb:.1f} GB free in {out_dir}")
    if pf.disk_check == "off" or need <= free:
        return DiskEstimate(len(checks), area, need, free, "ok", what)
    if need * pf.disk_min_tissue_fraction > free:
        verdict = "refuse" if pf.disk_check == "refuse" else "warn"
        msg = (f"not enough disk space: {what}; even {pf.disk_min_tissue_fraction:.0%} tissue would "
               f"need {need * pf.disk_min_tissue_fraction / gb:.1f} GB. Free space, write elsewhere, or "
               "set preflight.disk_check: warn to try anyway")
        return DiskEstimate(len(checks), area, need, free, verdict, msg)
    return DiskEstimate(len(checks), area, need, free, "warn",
                        f"disk space may run short: {what}; the run goes on (tissue is usually a part "
                        "of the scanned area)")


def _existing(path: Path) -> Path:
    """`path` or its nearest existing parent (a dry run's output folder does not exist yet)."""
    path = Path(path).absolute()
    while not path.exists() and path != path.parent:
        path = path.parent
    return path
