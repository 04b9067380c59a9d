"""`--dry-run`: what a run would do, with unreadable and tissue-free slides flagged.

Opens each slide and runs tissue detection on its thumbnail (seconds per slide, no model);
writes nothing.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from wsi_pipeline.cohort.runner import CohortRunner


@dataclass
class SlidePreview:
    slide_id: str
    path: Path
    todo: list[str]  # stages that would run
    state: str  # "to do", "finished", "failed before (skipped)", "locked by another run (...)"
    flag: str | None  # "unreadable: ...", "no tissue", "missing mpp: ..." or None
    mpp: float | None = None
    tissue_mm2: float | None = None


def preview(runner: CohortRunner) -> list[SlidePreview]:
    out = []
    for plan in runner.plan():
        if plan.locked_by is not None:
            state = f"locked by another run ({plan.locked_by.describe()})"
        elif plan.skipped_failure is not None:
            state = "failed before (skipped; --retry-failed reruns it)"
        else:
            state = "to do" if plan.pending else "finished"
        item = SlidePreview(slide_id=plan.entry.slide_id, path=plan.entry.path,
                            todo=plan.pending, state=state, flag=None)
        if plan.pending:
            _inspect(item, runner)
        out.append(item)
    return out


def _inspect(item: SlidePreview, runner: CohortRunner) -> None:
    from wsi_pipeline.io import MissingMppError, open_slide
    from wsi_pipeline.tissue import detect_tissue

    tissue_cfg = runner.cfg.infer.tissue
    try:
        with open_slide(item.path, mpp=runner.cfg.mpp) as slide:
            item.mpp = slide.mpp
            tissue = detect_tissue(slide.thumbnail_at_mpp(tissue_cfg.thumb_mpp), tissue_cfg.thumb_mpp,
                                   tissue_cfg)
    except MissingMppError as exc:
        item.flag = f"missing mpp: {exc.reason}"
        return
    except Exception as exc:  # noqa: BLE001 - any failure to read is what the preview reports
        item.flag = f"unreadable: {type(exc).__name__}: {exc}"
        return
    item.tissue_mm2 = tissue.mm2
    if tissue.empty:
        item.flag = "no tissue"
