"""`--dry-run`: what a run would do, with unreadable and tissue-free slides flagged.

Runs the run's preflight (every slide opened, pixel sizes resolved and judged, the checkpoint
loaded, free disk space estimated) and tissue detection on each thumbnail (seconds per slide,
no inference); writes nothing. What would stop a real run is reported, not raised.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from wsi_pipeline.cohort.runner import CohortRunner


@dataclass
class SlidePreview:
    slide_id: str
    path: Path
    todo: list[str]  # stages that would run
    state: str  # "to do", "finished", "failed before (skipped)", "locked by another run (...)"
    flag: str | None  # "unreadable: ...", "no tissue", "missing mpp: ...", "implausible mpp: ..."
    mpp: float | None = None
    mpp_source: str | None = None  # metadata, objective_power, fallback, override, csv
    tissue_mm2: float | None = None


def run_checks(runner: CohortRunner, items: list[SlidePreview]) -> list[str]:
    """The run-wide preflight verdicts a dry run prints: pixel-size refusal, checkpoint, disk."""
    from wsi_pipeline.cohort.preflight import (
        PreflightError,
        check_checkpoint,
        estimate_disk,
        mpp_refusal,
    )

    notes = []
    refusal = mpp_refusal(runner.slide_checks(), runner.cfg)
    if refusal is not None:
        notes.append(f"a run would refuse to start: {refusal}")
    try:
        model = check_checkpoint(runner.checkpoint)
    except PreflightError as exc:
        return [*notes, f"a run would refuse to start: {exc}"]
    notes.append(f"checkpoint {runner.checkpoint}: loads ({model.mpp:g} µm/px, "
                 f"{len(model.class_names) - 1} nucleus types)")
    checks = runner.slide_checks()
    to_infer = [checks[it.slide_id] for it in items
                if "infer" in it.todo and it.slide_id in checks and checks[it.slide_id].problem is None]
    disk = estimate_disk(runner.out_dir, to_infer, model.mpp, runner.cfg)
    notes.append(("a run would refuse to start: " if disk.verdict == "refuse" else "") + str(disk))
    return notes


def preview(runner: CohortRunner) -> list[SlidePreview]:
    out = []
    checks = runner.slide_checks()
    for plan in runner.plan():
        if plan.locked_by is not None:
            state = f"locked by another run ({plan.locked_by.describe()})"
        elif plan.skipped_failure is not None:
            state = "failed before (skipped; --retry-failed reruns it)"
        else:
            state = "to do" if plan.pending else "finished"
        item = SlidePreview(slide_id=plan.entry.slide_id, path=plan.entry.path,
                            todo=plan.pending, state=state, flag=None)
        check = checks.get(plan.entry.slide_id)
        if check is not None and check.mpp is not None:
            item.mpp, item.mpp_source = check.mpp.value, check.mpp.source
        if plan.pending:
            _inspect(item, runner, check)
        out.append(item)
    return out


_PROBLEM_LABEL = {"unreadable": "unreadable", "not_rgb": "not RGB", "missing_mpp": "missing mpp",
                  "implausible_mpp": "implausible mpp"}


def _inspect(item: SlidePreview, runner: CohortRunner, check: Any) -> None:
    from wsi_pipeline.cohort.preflight import greyscale_reason
    from wsi_pipeline.inference.tissue import detect_tissue
    from wsi_pipeline.io import open_slide

    if check is not None and check.problem is not None:
        reason = check.message or ""
        if check.problem == "unreadable":
            reason = f"{check.error_type}: {reason}"
        elif reason.startswith(f"{item.path}: "):
            reason = reason[len(f"{item.path}: "):]
        item.flag = f"{_PROBLEM_LABEL[check.problem]}: {reason}"
        return
    tissue_cfg = runner.cfg.infer.tissue
    try:
        with open_slide(item.path, mpp=item.mpp, reader=runner.cfg.discovery.reader) as slide:
            tissue = detect_tissue(slide.thumbnail_at_mpp(tissue_cfg.thumb_mpp), tissue_cfg.thumb_mpp,
                                   tissue_cfg)
            grey = greyscale_reason(slide) if "infer" in item.todo else None
    except Exception as exc:  # noqa: BLE001 - any failure to read is what the preview reports
        item.flag = f"unreadable: {type(exc).__name__}: {exc}"
        return
    if grey is not None:  # the run records it as failed (NotRGBError) before any inference
        item.flag = f"not RGB: {grey}"
        return
    item.tissue_mm2 = tissue.mm2
    if tissue.empty:
        item.flag = "no tissue"
