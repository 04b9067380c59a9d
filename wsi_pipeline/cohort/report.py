"""OUT/report.html: one page a pathologist opens from disk to judge a whole cohort.

A row per slide of the manifest (failed and pending ones too, so that none goes unnoticed):
a thumbnail of its density heat map, links to its QC sheet and overlay, its status (with the
error of a failed slide), its QC flags, its level-0 pixel size and where that came from (a
guessed one in bold), nuclei, tissue mm², nuclei per mm² and the density of each nucleus type;
under the table the cohort plots of `summarize` and the tissue rules used.

No server, no script, no network: the thumbnails and plots are embedded as data URIs (small,
so the page stays a few MB for hundreds of slides), the full-resolution QC sheets are linked
relative to the page, so they open while the page stays inside OUT. Written atomically.
"""

from __future__ import annotations

import base64
import html
import io
import json
import logging
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any
from urllib.parse import quote

import numpy as np
import pandas as pd
from PIL import Image

from wsi_pipeline import __version__
from wsi_pipeline.atomic import write_text_atomic
from wsi_pipeline.cohort.layout import slide_dir
from wsi_pipeline.cohort.manifest import read_manifest
from wsi_pipeline.contract import OVERLAY, QC_DIR, SUMMARY

log = logging.getLogger(__name__)

__all__ = ["REPORT", "write_report"]

REPORT = "report.html"
THUMB_PX = 220  # longest side of an embedded thumbnail
_SHEET = f"{QC_DIR}/sheet.png"
_THUMBS = (f"{QC_DIR}/density.png", OVERLAY)  # the first that exists is the row's thumbnail

_CSS = """
body { font-family: sans-serif; margin: 1.5em; color: #222; }
table { border-collapse: collapse; font-size: 13px; }
th, td { border: 1px solid #ccc; padding: 4px 6px; vertical-align: middle; }
th { background: #f0f0f0; position: sticky; top: 0; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
tr.failed td { background: #fde8e8; }
tr.pending td { background: #f4f4f4; color: #777; }
tr.flagged td.qc { background: #fff3cd; font-weight: bold; }
img.thumb { max-width: 220px; max-height: 220px; display: block; }
.swatch { display: inline-block; width: 10px; height: 10px; border: 1px solid #555;
          margin-right: 3px; }
.small { color: #666; font-size: 12px; }
"""


def _data_uri(path: Path, max_px: int | None = None) -> str | None:
    """The image as a data URI (shrunk to `max_px`, as PNG); None if it cannot be read."""
    try:
        with Image.open(path) as src:
            im = src.convert("RGB")
            if max_px is not None:
                im.thumbnail((max_px, max_px), Image.Resampling.LANCZOS)
            buf = io.BytesIO()
            im.save(buf, format="PNG", optimize=True)
    except OSError as err:
        log.warning("report: %s left out: %s", path, err)
        return None
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _href(out_dir: Path, path: Path) -> str:
    """A link relative to the page, each part URL-quoted (slide ids may hold spaces or #)."""
    return "/".join(quote(part) for part in path.relative_to(out_dir).parts)


def _num(value: Any, fmt: str) -> str:
    try:
        if value is None or pd.isna(value):
            return "—"
    except (TypeError, ValueError):
        return "—"
    return format(value, fmt)


def _summary(folder: Path) -> dict:
    try:
        return json.loads((folder / SUMMARY).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return {}


def _densities(table: pd.DataFrame | None) -> tuple[list[str], dict[Any, dict[Any, float]]]:
    """Type names in class order and slide_id -> type_name -> nuclei per mm² (cohort summary)."""
    if table is None or table.empty:
        return [], {}
    order = table.sort_values("type_id")["type_name"].drop_duplicates().tolist()
    wide = table.pivot_table(index="slide_id", columns="type_name", values="density_per_mm2",
                             aggfunc="sum", dropna=False)
    return order, {sid: {k: v for k, v in row.items()} for sid, row in wide.iterrows()}


def _type_confidence(table: pd.DataFrame | None) -> dict[Any, str]:
    """slide_id -> its nuclei's mean type probability (given nucleus) and share below the QC
    threshold, from the cohort summary's per-type rows (count-weighted)."""
    if table is None or table.empty or "low_type_fraction" not in table.columns:
        return {}
    out = {}
    for sid, rows in table.groupby("slide_id"):
        n = rows["count"].to_numpy(dtype=float)
        if n.sum() <= 0:
            continue
        mean_p = float(np.nansum(rows["mean_type_prob"].to_numpy(dtype=float) * n) / n.sum())
        low = float(np.nansum(rows["low_type_fraction"].to_numpy(dtype=float) * n) / n.sum())
        out[sid] = f"{mean_p:.2f} <div class=\"small\">{low:.0%} low</div>"
    return out


def _colors(summaries: dict[str, dict]) -> dict[str, str]:
    """Type name -> colour of the QC sheets (the model's class colours), from any slide."""
    for s in summaries.values():
        colors = (s.get("qc_sheet") or {}).get("class_colors")
        if colors:
            return colors
    return {}


def _row(out_dir: Path, r: pd.Series, summary: dict, types: list[str],
         density: dict[str, float], has_qc: bool, confidence: str = "—") -> str:
    sid = str(r["slide_id"])
    folder = slide_dir(out_dir, sid)
    status = str(r.get("status") or "")
    flags = r.get("qc") if has_qc else None
    flags = flags if isinstance(flags, str) else ""
    classes = [status] + (["flagged"] if flags else [])
    cells = [f'<td class="id">{html.escape(sid)}</td>']

    thumb = next((folder / name for name in _THUMBS if (folder / name).is_file()), None)
    uri = _data_uri(thumb, THUMB_PX) if thumb is not None else None
    cells.append(f'<td><img class="thumb" alt="{html.escape(sid)}" src="{uri}"></td>' if uri
                 else "<td>—</td>")
    links = []
    for label, name in (("QC sheet", _SHEET), ("overlay", OVERLAY)):
        if (folder / name).is_file():
            links.append(f'<a href="{_href(out_dir, folder / name)}">{label}</a>')
    cells.append(f'<td>{"<br>".join(links) or "—"}</td>')

    text = html.escape(status)
    if status == "failed":
        stage, error = r.get("failed_stage"), r.get("error")
        text += (f'<div class="small">{html.escape(str(stage))}: '
                 f'{html.escape(str(error))[:300]}</div>') if isinstance(error, str) else ""
    cells.append(f'<td class="status">{text}</td>')
    if has_qc:
        cells.append(f'<td class="qc">{html.escape(flags.replace(";", "; ")) or "—"}</td>')
    cells.append(_mpp_cell(r))
    n, mm2 = r.get("n_nuclei"), r.get("tissue_mm2")
    per_mm2 = summary.get("nuclei_per_mm2")
    cells.append(f'<td class="num">{_num(n, ",.0f")}</td>')
    cells.append(f'<td class="num">{_num(mm2, ".3f")}</td>')
    cells.append(f'<td class="num">{_num(per_mm2, ",.0f")}</td>')
    cells.append(f'<td class="num type-confidence">{confidence}</td>')
    cells.extend(f'<td class="num">{_num(density.get(t), ",.0f")}</td>' for t in types)
    return (f'<tr class="slide {" ".join(classes)}" data-slide-id="{html.escape(sid)}">'
            + "".join(cells) + "</tr>")


#: Pixel-size sources that are a guess rather than the slide's own record: shown in bold.
_GUESSED_MPP = frozenset({"objective_power", "fallback"})


def _mpp_cell(r: pd.Series) -> str:
    """The slide's level-0 µm/px and where it came from (metadata, csv, override,
    objective_power, fallback): a wrong pixel size is the most common cause of wrong results,
    and nothing downstream shows it."""
    mpp, source = r.get("mpp"), r.get("mpp_source")
    if mpp is None or pd.isna(mpp):
        return '<td class="mpp">—</td>'
    src = str(source) if isinstance(source, str) and source else "unknown"
    text = f'{_num(mpp, ".4g")} <div class="small">{html.escape(src)}</div>'
    if src in _GUESSED_MPP:
        text = f"<b>{text}</b>"
    return f'<td class="mpp mpp-{html.escape(src)}">{text}</td>'


def write_report(out_dir: Path, table: pd.DataFrame | None = None,
                 plots: Sequence[Path] = ()) -> Path:
    """Write OUT/report.html from the manifest, each slide's folder, the cohort summary
    `table` (cohort_summary.parquet's rows: per-type densities) and the `plots`; return its path."""
    out_dir = Path(out_dir)
    manifest = read_manifest(out_dir)
    has_qc = "qc" in manifest.columns
    types, densities = _densities(table)
    summaries = {str(sid): _summary(slide_dir(out_dir, str(sid))) for sid in manifest["slide_id"]}
    colors = _colors(summaries)

    head = ["slide", "heat map", "pictures", "status"] + (["QC flags"] if has_qc else [])
    head += ["µm/px (source)", "nuclei", "tissue mm²", "nuclei / mm²", "type probability"]
    header = "".join(f"<th>{html.escape(h)}</th>" for h in head)
    for t in types:
        swatch = (f'<span class="swatch" style="background:{html.escape(colors[t])}"></span>'
                  if t in colors else "")
        header += f"<th>{swatch}{html.escape(t)} / mm²</th>"
    confidence = _type_confidence(table)
    rows = [_row(out_dir, r, summaries[str(r["slide_id"])], types,
                 densities.get(str(r["slide_id"]), {}), has_qc,
                 confidence.get(str(r["slide_id"]), "—")) for _, r in manifest.iterrows()]

    counts = manifest["status"].value_counts()
    status_line = ", ".join(f"{int(v)} {html.escape(str(k))}" for k, v in counts.items())
    flagged = int((manifest["qc"].fillna("") != "").sum()) if has_qc else 0
    figures = []
    for plot in plots:
        uri = _data_uri(Path(plot))
        if uri:
            figures.append(f'<figure><img class="plot" alt="{html.escape(Path(plot).name)}" '
                           f'src="{uri}"><figcaption class="small">{html.escape(Path(plot).name)}'
                           "</figcaption></figure>")
    no_figures = ('<p class="small">none (run <code>wsi-pipeline summarize</code> '
                  'without --no-plot)</p>')
    rules = sorted({rule for s in summaries.values()
                    if (rule := ((s.get("tissue") or {}).get("holes") or {}).get("rule")) is not None})
    page = f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<title>wsi-pipeline cohort report: {html.escape(out_dir.name)}</title>
<style>{_CSS}</style></head>
<body>
<h1>Cohort report: {html.escape(out_dir.name)}</h1>
<p>{len(manifest)} slides ({status_line}){f"; {flagged} flagged by QC" if has_qc else ""}.
Written {time.strftime("%Y-%m-%d %H:%M")} by wsi-pipeline {html.escape(__version__)}.
Densities are nuclei per mm² of detected tissue. Click a QC sheet for full-resolution crops
with nucleus outlines coloured by type.</p>
<table>
<thead><tr>{header}</tr></thead>
<tbody>
{chr(10).join(rows)}
</tbody></table>
<h2>Cohort plots</h2>
{chr(10).join(figures) or no_figures}
<h2>Tissue area rule</h2>
<ul class="small">{"".join(f"<li>{html.escape(rule)}</li>" for rule in rules) or "<li>not recorded</li>"}</ul>
</body></html>
"""
    path = out_dir / REPORT
    write_text_atomic(path, page)
    log.info("cohort report: %d slides -> %s", len(manifest), path)
    return path
