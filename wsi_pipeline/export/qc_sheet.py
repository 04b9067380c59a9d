"""The QC sheet of a slide: full-resolution crops with nucleus outlines, and a density heat map.

overlay.png shows a whole slide at thumbnail scale, where a nucleus is a dot: nothing a
pathologist can judge segmentation by. The sheet shows a few crops at the model's pixel size
(0.25 µm/px: 40×) — the densest and the least confident windows and some spread over the tissue,
chosen by `wsi_pipeline.export.qc_regions` — each raw beside the same pixels with every nucleus
outlined in its type's colour (the class colours of the model, the same as the GeoJSON
classification colours), and a thumbnail with nuclei per mm² as a heat map and the crops boxed.

Written into OUT/<slide>/qc/: `sheet.png` (everything on one page), `density.png` (the heat
map), `NN_<kind>_raw.png` / `NN_<kind>_outlines.png` (each crop) and `qc_sheet.json` (where
each crop is, in level-0 pixels, and what it holds). Crops are read through the Slide reader at
the pixel size inference used; if the slide file can no longer be read the outlines are drawn
on white and the sheet says so. The nucleus table is read twice, in batches (statistics, then
the outlines of the nuclei in the chosen windows): memory does not grow with the slide.
"""

from __future__ import annotations

import io
import json
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import shapely
from PIL import Image, ImageDraw, ImageFont

from wsi_pipeline.atomic import atomic_path, write_bytes_atomic, write_text_atomic
from wsi_pipeline.contract import QC_DIR
from wsi_pipeline.export.config import QCSheetConfig
from wsi_pipeline.export.geojson import hex_to_rgb
from wsi_pipeline.export.qc_regions import DensityGrid, Region, RegionGrid
from wsi_pipeline.io import SlideReadError, open_slide

log = logging.getLogger(__name__)

__all__ = ["QC_DIR", "QCSheetConfig", "SlideGeometry", "render_qc_sheet"]

SHEET = "sheet.png"
DENSITY = "density.png"
RECORD = "qc_sheet.json"
#: Nuclei whose centroid is this far (µm) outside a crop may still reach into it.
_REACH_UM = 20.0
_GAP = 12  # px between the pictures of the sheet
_KIND_TITLES = {"densest": "densest", "least_confident": "least confident types", "spread": "spread"}


@dataclass(frozen=True)
class SlideGeometry:
    """What the sheet needs to know about the slide (nuclei.parquet's metadata: table_meta.py)."""

    level0_wh: tuple[int, int]
    slide_mpp: float
    model_mpp: float
    slide_path: str | None


def _scan(parquet_path: Path, regions: RegionGrid, density: DensityGrid, batch_rows: int) -> int:
    n = 0
    for batch in pq.ParquetFile(parquet_path).iter_batches(
            batch_size=batch_rows, columns=["x", "y", "type_prob"]):
        x, y = batch.column("x").to_numpy(False), batch.column("y").to_numpy(False)
        regions.add(x, y, batch.column("type_prob").to_numpy(False))
        density.add(x, y)
        n += batch.num_rows
    return n


def _outlines_in(parquet_path: Path, crops: list[Region], reach_px: float, batch_rows: int
                 ) -> list[list[tuple[int, np.ndarray]]]:
    """Per crop: (type_id, exterior ring in level-0 px) of every nucleus that can reach into it."""
    out: list[list[tuple[int, np.ndarray]]] = [[] for _ in crops]
    if not crops:
        return out
    for batch in pq.ParquetFile(parquet_path).iter_batches(
            batch_size=batch_rows, columns=["x", "y", "type_id", "geometry"]):
        x, y = batch.column("x").to_numpy(False), batch.column("y").to_numpy(False)
        hits = [np.flatnonzero((x >= c.x0 - reach_px) & (x < c.x0 + c.size + reach_px)
                               & (y >= c.y0 - reach_px) & (y < c.y0 + c.size + reach_px))
                for c in crops]
        if not any(len(h) for h in hits):
            continue
        wkb = batch.column("geometry").to_numpy(False)
        types = batch.column("type_id").to_numpy(False)
        for k, idx in enumerate(hits):
            if len(idx):
                rings = shapely.get_exterior_ring(shapely.from_wkb(wkb[idx]))
                out[k].extend((int(t), shapely.get_coordinates(g))
                              for t, g in zip(types[idx], rings, strict=True))
    return out


def _read_crops(geo: SlideGeometry, crops: list[Region], crop_px: int, crop_mpp: float
                ) -> tuple[list[np.ndarray], str | None]:
    """The crops from the slide file (white, with the reason, when it can no longer be read)."""
    blank = [np.full((crop_px, crop_px, 3), 255, np.uint8) for _ in crops]
    if not geo.slide_path or not Path(geo.slide_path).is_file():
        return blank, f"slide file not found: {geo.slide_path}"
    try:
        with open_slide(geo.slide_path, mpp=geo.slide_mpp) as slide:
            return [slide.read_region_at_mpp(c.x0, c.y0, (crop_px, crop_px), crop_mpp)
                    for c in crops], None
    except SlideReadError as err:
        log.warning("QC sheet without slide pixels: %s", err)
        return blank, str(err)


def _thumbnail(geo: SlideGeometry, max_px: int) -> tuple[np.ndarray | None, float]:
    """The slide at a pixel size whose longest side is ≤ `max_px` (None when unreadable)."""
    down = max(1.0, max(geo.level0_wh) / max_px)
    thumb_mpp = geo.slide_mpp * down
    if geo.slide_path and Path(geo.slide_path).is_file():
        try:
            with open_slide(geo.slide_path, mpp=geo.slide_mpp) as slide:
                return slide.thumbnail_at_mpp(thumb_mpp), thumb_mpp
        except SlideReadError as err:
            log.warning("QC heat map without slide background: %s", err)
    return None, thumb_mpp


def _draw_outlines(rgb: np.ndarray, rings: list[tuple[int, np.ndarray]], crop: Region,
                   scale: float, palette: np.ndarray, width: int) -> np.ndarray:
    """`rgb` with each ring drawn in its type's colour; `scale` = level-0 px per crop px."""
    image = Image.fromarray(rgb.copy())
    draw = ImageDraw.Draw(image)
    origin = np.array([crop.x0, crop.y0], np.float64)
    for type_id, ring in rings:
        pts = (ring - origin) / scale - 0.5  # pixel c covers [c, c+1): its centre is c + 0.5
        color = tuple(int(v) for v in palette[type_id if 0 <= type_id < len(palette) else 0])
        draw.polygon([tuple(p) for p in pts], outline=color, width=width)
    return np.asarray(image)


def _heatmap_png(thumb: np.ndarray | None, thumb_mpp: float, density: DensityGrid,
                 crops: list[Region], geo: SlideGeometry, title: str) -> bytes:
    """The thumbnail (greyed) under nuclei per mm² in colour, crops boxed and numbered."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Rectangle

    w0, h0 = geo.level0_wh
    aspect = h0 / max(w0, 1)
    fig, ax = plt.subplots(figsize=(7.5, max(2.5, min(7.5 * aspect, 12.0)) + 0.6))
    mm_w, mm_h = w0 * geo.slide_mpp / 1000, h0 * geo.slide_mpp / 1000
    if thumb is not None:
        grey = thumb.astype(np.float32).mean(axis=2, keepdims=True)
        ax.imshow((0.5 * grey + 0.5 * 255).repeat(3, axis=2).astype(np.uint8),
                  extent=(0, thumb.shape[1] * thumb_mpp / 1000, thumb.shape[0] * thumb_mpp / 1000, 0))
    per_mm2 = density.per_mm2()
    finite = per_mm2[np.isfinite(per_mm2)]
    vmax = float(np.percentile(finite, 99)) if finite.size and finite.max() > 0 else 1.0
    ny, nx = per_mm2.shape
    bin_mm = density.bin_px * geo.slide_mpp / 1000
    im = ax.imshow(np.ma.masked_invalid(per_mm2), cmap="magma", vmin=0, vmax=max(vmax, 1e-9),
                   alpha=0.75, interpolation="nearest", extent=(0, nx * bin_mm, ny * bin_mm, 0))
    for k, crop in enumerate(crops, start=1):
        x, y, s = (v * geo.slide_mpp / 1000 for v in (crop.x0, crop.y0, crop.size))
        ax.add_patch(Rectangle((x, y), s, s, fill=False, edgecolor="#00e5ff", linewidth=1.5))
        ax.text(x, y, str(k), color="#00e5ff", fontsize=9, fontweight="bold", va="bottom")
    ax.set_xlim(0, mm_w)
    ax.set_ylim(mm_h, 0)
    ax.set_xlabel("mm")
    ax.set_title(title, fontsize=10)
    fig.colorbar(im, ax=ax, shrink=0.8, label=f"nuclei per mm² ({density.bin_um:.0f} µm bins)")
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight")
    plt.close(fig)
    return buf.getvalue()


def _font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    """DejaVu Sans from matplotlib (it has µ and ²; Pillow's default font does not)."""
    from matplotlib import font_manager

    try:
        return ImageFont.truetype(font_manager.findfont("DejaVu Sans"), size)
    except OSError:
        return ImageFont.load_default()


def _compose(heatmap: bytes, pairs: list[tuple[np.ndarray, np.ndarray]], labels: list[list[str]],
             header: list[str], legend: list[tuple[str, tuple[int, ...]]]) -> Image.Image:
    """One page: header and type legend, heat map, then the crop pairs two to a row, each under
    its label lines."""
    font, small = _font(17), _font(14)
    heat = Image.open(io.BytesIO(heatmap)).convert("RGB")
    crop_px = pairs[0][0].shape[1] if pairs else 0
    pair_w = 2 * crop_px + _GAP
    per_row = 2 if len(pairs) > 1 else 1
    width = max(heat.width, per_row * pair_w + (per_row - 1) * 2 * _GAP) + 2 * _GAP
    head_h = _GAP + 24 * len(header) + 28
    label_h = 18 * max((len(lines) for lines in labels), default=0) + 4
    rows = (len(pairs) + per_row - 1) // per_row
    block_h = label_h + crop_px
    height = head_h + heat.height + _GAP + rows * (block_h + _GAP) + _GAP
    sheet = Image.new("RGB", (width, height), (255, 255, 255))
    draw = ImageDraw.Draw(sheet)
    y = _GAP
    for line in header:
        draw.text((_GAP, y), line, fill=(0, 0, 0), font=font)
        y += 24
    x = _GAP
    for name, rgb in legend:
        draw.rectangle((x, y + 3, x + 14, y + 17), fill=rgb, outline=(0, 0, 0))
        draw.text((x + 20, y + 1), name, fill=(0, 0, 0), font=small)
        x += 32 + int(draw.textlength(name, font=small))
    y = head_h
    sheet.paste(heat, ((width - heat.width) // 2, y))
    y += heat.height + _GAP
    for k, ((raw, drawn), lines) in enumerate(zip(pairs, labels, strict=True)):
        r, c = divmod(k, per_row)
        x0 = _GAP + c * (pair_w + 2 * _GAP)
        y0 = y + r * (block_h + _GAP)
        for i, line in enumerate(lines):
            draw.text((x0, y0 + 18 * i), line, fill=(0, 0, 0), font=small)
        sheet.paste(Image.fromarray(raw), (x0, y0 + label_h))
        sheet.paste(Image.fromarray(drawn), (x0 + crop_px + _GAP, y0 + label_h))
    return sheet


def _png(rgb: np.ndarray | Image.Image, path: Path) -> None:
    image = rgb if isinstance(rgb, Image.Image) else Image.fromarray(rgb)
    with atomic_path(path) as tmp:
        image.save(tmp, format="PNG", optimize=False, compress_level=6)


def _tissue_mask(tissue_png: Path, tissue_mpp: float | None, geo: SlideGeometry
                 ) -> tuple[np.ndarray, float] | None:
    """The measured tissue (tissue.png == 255; older files hold 0/255) and its level-0 px/px."""
    if not tissue_png.is_file():
        return None
    with Image.open(tissue_png) as im:
        mask = np.asarray(im.convert("L")) > 127
    px = tissue_mpp / geo.slide_mpp if tissue_mpp else geo.level0_wh[0] / max(mask.shape[1], 1)
    return mask, px


def render_qc_sheet(
    parquet_path: Path,
    out_dir: Path,
    *,
    geo: SlideGeometry,
    class_names: list[str],
    class_colors: list[str],
    tissue_png: Path,
    tissue_mpp: float | None,
    cfg: QCSheetConfig,
    title: str,
    batch_rows: int = 65536,
) -> dict:
    """Write OUT/<slide>/qc/ and return its record (also written as qc/qc_sheet.json); paths in
    the record are relative to the slide folder. The sheet is written last."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    crop_mpp = float(cfg.crop_mpp or geo.model_mpp)
    scale = crop_mpp / geo.slide_mpp  # level-0 px per crop px
    regions = RegionGrid(geo.level0_wh, cfg.crop_px * scale)
    density = DensityGrid(geo.level0_wh, geo.slide_mpp, cfg.heatmap_bin_um)
    tissue = _tissue_mask(tissue_png, tissue_mpp, geo)
    if tissue is not None:
        regions.set_tissue(*tissue)
        density.set_tissue(*tissue)
    n_nuclei = _scan(parquet_path, regions, density, batch_rows)
    crops = regions.choose(cfg.n_spread, min_tissue_fraction=cfg.min_tissue_fraction,
                           min_nuclei=cfg.min_nuclei_confidence)
    rings = _outlines_in(parquet_path, crops, _REACH_UM / geo.slide_mpp, batch_rows)
    raws, unreadable = _read_crops(geo, crops, cfg.crop_px, crop_mpp)
    palette = np.array([hex_to_rgb(c) for c in class_colors], np.uint8)

    rel = Path(QC_DIR)
    pairs, labels, records = [], [], []
    for k, (crop, raw, crop_rings) in enumerate(zip(crops, raws, rings, strict=True), start=1):
        drawn = _draw_outlines(raw, crop_rings, crop, scale, palette, cfg.outline_px)
        stem = f"{k:02d}_{crop.kind}"
        _png(raw, out_dir / f"{stem}_raw.png")
        _png(drawn, out_dir / f"{stem}_outlines.png")
        pairs.append((raw, drawn))
        prob = "" if crop.mean_type_prob is None else f", mean type prob {crop.mean_type_prob:.2f}"
        labels.append([f"{k}  {_KIND_TITLES[crop.kind]}: {crop.n_nuclei} nuclei{prob}",
                       f"level-0 x {crop.x0}, y {crop.y0}, {crop.size} px"])
        records.append({**crop.to_dict(), "raw": str(rel / f"{stem}_raw.png"),
                        "outlines": str(rel / f"{stem}_outlines.png")})

    thumb, thumb_mpp = _thumbnail(geo, cfg.heatmap_max_px)
    heatmap = _heatmap_png(thumb, thumb_mpp, density, crops, geo, title)
    write_bytes_atomic(out_dir / DENSITY, heatmap)
    side_um = cfg.crop_px * crop_mpp
    header = [f"{title}: {n_nuclei} nuclei",
              f"crops {cfg.crop_px} px at {crop_mpp:g} µm/px ({side_um:.0f} µm): raw | outlined by type"]
    if unreadable:
        header.append(f"slide pixels unavailable ({unreadable[:120]}): outlines drawn on white")
    if not crops:
        header.append("no crop: no tissue or no nuclei")
    legend = [(name, tuple(int(v) for v in palette[i])) for i, name in enumerate(class_names) if i > 0]
    record = {
        "sheet": str(rel / SHEET),
        "density": str(rel / DENSITY),
        "crop_px": cfg.crop_px,
        "crop_mpp": crop_mpp,
        "slide_pixels": unreadable is None,
        "note": unreadable,
        "heatmap_bin_um": density.bin_um,
        "class_colors": dict(zip(class_names, class_colors, strict=True)),
        "crops": records,
    }
    write_text_atomic(out_dir / RECORD, json.dumps(record, indent=2) + "\n")
    _png(_compose(heatmap, pairs, labels, header, legend), out_dir / SHEET)
    return record
