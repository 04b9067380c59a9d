"""Cohort report: every slide of the manifest is a row, every picture it shows or links exists."""

from __future__ import annotations

import base64
import html.parser
import io
import shutil
import subprocess
from pathlib import Path
from urllib.parse import unquote

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner
from PIL import Image

from tests.helpers.maps_synth import CLASSES
from tests.helpers.qc_fixtures import qc_slide_dir
from wsi_pipeline.cli import main
from wsi_pipeline.cohort.manifest import MANIFEST, write_manifest
from wsi_pipeline.cohort.report import REPORT
from wsi_pipeline.cohort.summarize import summarize_cohort
from wsi_pipeline.export.config import ExportConfig, QCSheetConfig
from wsi_pipeline.export.stage import export_slide

CFG = ExportConfig(qc_sheet=QCSheetConfig(crop_px=64, n_spread=2))
ODD_ID = "slide #2 (re-cut)"  # a space, a hash and brackets: links must be quoted


class _Page(html.parser.HTMLParser):
    """Rows (data-slide-id → cell texts), and every img src and a href of the page."""

    def __init__(self) -> None:
        super().__init__()
        self.rows: dict[str, list[str]] = {}
        self.images: list[str] = []
        self.links: list[str] = []
        self.headers: list[str] = []
        self.scripts = 0
        self._row: str | None = None
        self._cell: list[str] | None = None
        self._th: list[str] | None = None

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "tr" and "data-slide-id" in a:
            self._row = a["data-slide-id"]
            assert self._row not in self.rows, f"slide {self._row} has two rows"
            self.rows[self._row] = []
        elif tag == "td" and self._row is not None:
            self._cell = []
        elif tag == "th":
            self._th = []
        elif tag == "img":
            self.images.append(a["src"])
        elif tag == "a":
            self.links.append(a["href"])
        elif tag == "script":
            self.scripts += 1

    def handle_data(self, data):
        for buf in (self._cell, self._th):
            if buf is not None:
                buf.append(data)

    def handle_endtag(self, tag):
        if tag == "td" and self._cell is not None and self._row is not None:
            self.rows[self._row].append(" ".join("".join(self._cell).split()))
            self._cell = None
        elif tag == "th" and self._th is not None:
            self.headers.append(" ".join("".join(self._th).split()))
            self._th = None
        elif tag == "tr":
            self._row = None


def _parse(path: Path) -> _Page:
    page = _Page()
    page.feed(path.read_text(encoding="utf-8"))
    return page


def _row(slide_id, status, tissue=None, n=None, qc="", **extra):
    return {"slide_id": slide_id, "path": f"/x/{slide_id}.svs", "status": status,
            "tissue_mm2": tissue, "n_nuclei": n, "qc": qc, **extra}


@pytest.fixture
def out(tmp_path):
    """Two exported slides (one with an awkward id), one failed and one pending slide."""
    rows = []
    for sid, qc in (("s1", "density_low"), (ODD_ID, "")):
        summary = export_slide(qc_slide_dir(tmp_path, sid), CFG)
        mpp = ({"mpp": 0.2527, "mpp_source": "metadata"} if sid == "s1"
               else {"mpp": 0.5, "mpp_source": "fallback"})
        rows.append(_row(sid, "done", summary["tissue_mm2"], summary["n_nuclei"], qc, **mpp))
    rows.append(_row("bad", "failed", failed_stage="infer", error_type="SlideReadError",
                     error="cannot read <script>alert(1)</script> tile 3"))
    rows.append(_row("todo", "pending"))
    write_manifest(tmp_path, rows)
    return tmp_path


def _check_images_and_links(out: Path, page: _Page) -> None:
    assert page.images and page.links
    for src in page.images:
        if src.startswith("data:"):
            head, _, data = src.partition(",")
            assert head == "data:image/png;base64"
            with Image.open(io.BytesIO(base64.b64decode(data, validate=True))) as im:
                im.verify()
        else:
            assert (out / unquote(src)).is_file(), src
    for href in page.links:
        target = out / unquote(href)
        assert target.is_file(), href
        with Image.open(target) as im:
            assert im.format == "PNG"


def test_every_slide_is_a_row_and_every_picture_exists(out):
    result = summarize_cohort(out)
    assert result.report_path == out / REPORT
    page = _parse(out / REPORT)
    assert set(page.rows) == {"s1", ODD_ID, "bad", "todo"}  # failed and pending slides too
    assert page.scripts == 0  # opens from disk, runs nothing
    _check_images_and_links(out, page)
    assert any(href == "s1/qc/sheet.png" for href in page.links)
    assert "slide%20%232%20%28re-cut%29/qc/sheet.png" in page.links
    # a thumbnail per exported slide, plus the composition plot
    assert sum(src.startswith("data:") for src in page.images) == 3
    assert any("cohort_composition" in h for h in (out / REPORT).read_text().splitlines())


def test_row_cells_status_flags_counts_and_per_type_density(out):
    result = summarize_cohort(out)
    page = _parse(out / REPORT)
    types = list(CLASSES[1:])
    assert page.headers == ["slide", "heat map", "pictures", "status", "QC flags", "µm/px (source)",
                            "nuclei", "tissue mm²", "nuclei / mm²", "type probability",
                            *[f"{t} / mm²" for t in types]]
    col = {h: i for i, h in enumerate(page.headers)}
    s1 = page.rows["s1"]
    manifest = pd.read_parquet(out / MANIFEST).set_index("slide_id")
    assert s1[col["status"]] == "done" and s1[col["QC flags"]] == "density_low"
    assert s1[col["nuclei"]] == f"{int(manifest.loc['s1', 'n_nuclei']):,}"
    assert s1[col["tissue mm²"]] == f"{manifest.loc['s1', 'tissue_mm2']:.3f}"
    density = result.table[result.table.slide_id == "s1"].set_index("type_name")["density_per_mm2"]
    for t in types:
        assert s1[col[f"{t} / mm²"]] == f"{density[t]:,.0f}"
    assert page.rows[ODD_ID][col["QC flags"]] == "—"
    # each slide's type confidence: count-weighted mean type probability, share below 0.5
    rows = result.table[result.table.slide_id == "s1"]
    mean_p = (rows["mean_type_prob"] * rows["count"]).sum() / rows["count"].sum()
    low = (rows["low_type_fraction"] * rows["count"]).sum() / rows["count"].sum()
    assert s1[col["type probability"]] == f"{mean_p:.2f} {low:.0%} low"
    # each slide's pixel size and where it came from (issue 25); a guessed one stands out
    assert s1[col["µm/px (source)"]] == "0.2527 metadata"
    assert page.rows[ODD_ID][col["µm/px (source)"]] == "0.5 fallback"
    assert '<td class="mpp mpp-fallback"><b>0.5' in (out / REPORT).read_text()
    assert page.rows["todo"][col["µm/px (source)"]] == "—"
    bad = page.rows["bad"]
    assert bad[col["status"]] == "failedinfer: cannot read <script>alert(1)</script> tile 3"  # text...
    assert "<script>" not in (out / REPORT).read_text()  # ...never markup
    assert page.rows["todo"][col["status"]] == "pending" and page.rows["todo"][col["nuclei"]] == "—"
    assert "not recorded" in (out / REPORT).read_text()  # these tissue.json files predate the rule


def test_manifest_without_a_qc_column_has_no_qc_column(out):
    table = pq.read_table(out / MANIFEST)
    pq.write_table(table.drop(["qc"]), out / MANIFEST)
    summarize_cohort(out)
    page = _parse(out / REPORT)
    assert "QC flags" not in page.headers and set(page.rows) == {"s1", ODD_ID, "bad", "todo"}


def test_summarize_command_writes_and_names_the_report(out):
    (out / REPORT).unlink(missing_ok=True)
    res = CliRunner().invoke(main, ["summarize", str(out)])
    assert res.exit_code == 0, res.output
    assert f"cohort report -> {out / REPORT}" in res.output and (out / REPORT).is_file()
    res = CliRunner().invoke(main, ["summarize", str(out), "--no-report", "--no-plot"])
    assert res.exit_code == 0 and "cohort report" not in res.output


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.mark.skipif(CHROMIUM is None, reason="no chromium (Debian: apt-get install chromium)")
def test_report_renders_in_a_headless_browser_with_every_image_loaded(out, tmp_path):
    """Opened from disk by a real browser: every <img> decodes (naturalWidth > 0) and the page
    renders. A copy beside the report gets a script that writes the count into the title
    (the report itself has none)."""
    summarize_cohort(out)
    text = (out / REPORT).read_text(encoding="utf-8")
    probe = ("<script>window.addEventListener('load', () => { const im = [...document.images];"
             " document.title = 'loaded ' + im.filter(i => i.complete && i.naturalWidth > 0).length"
             " + ' of ' + im.length; });</script></body>")
    check = out / "report_check.html"
    check.write_text(text.replace("</body>", probe), encoding="utf-8")
    flags = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
             "--allow-file-access-from-files", "--virtual-time-budget=10000"]
    dom = subprocess.run([*flags, "--dump-dom", check.as_uri()], capture_output=True, text=True,
                         timeout=180, check=True).stdout
    n = len(_parse(out / REPORT).images)
    assert f"<title>loaded {n} of {n}</title>" in dom
    shot = tmp_path / "report.png"
    subprocess.run([*flags, "--window-size=1400,1200", f"--screenshot={shot}", (out / REPORT).as_uri()],
                   capture_output=True, timeout=180, check=True)
    with Image.open(shot) as im:
        rgb = im.convert("RGB")
        assert rgb.size == (1400, 1200)
        colours = np.unique(np.asarray(rgb.resize((140, 120))).reshape(-1, 3), axis=0)
        assert len(colours) > 50  # thumbnails, table, text: not a blank page
    # the probe does see a broken image
    check.write_text(text.replace('src="data:', 'src="missing.png" data-x="', 1).replace("</body>", probe),
                     encoding="utf-8")
    dom = subprocess.run([*flags, "--dump-dom", check.as_uri()], capture_output=True, text=True,
                         timeout=180, check=True).stdout
    assert f"<title>loaded {n - 1} of {n}</title>" in dom


def test_run_ends_with_the_report_and_qc_sheets(shared_data, tmp_path):
    """`wsi-pipeline run` (in process, tiny model, one small CMU crop) leaves report.html with the
    slide's row, its QC sheet linked and on disk, and says where the report is."""
    from tests.helpers.cohort_fixtures import (
        CMU_CROPS,
        cmu_crop,
        tiny_checkpoint,
        write_pyramid_tiff,
    )

    slides = tmp_path / "slides"
    slides.mkdir()
    rgb = cmu_crop(shared_data, *CMU_CROPS["cmu_a"])
    write_pyramid_tiff(slides / "cmu_a.tif", rgb, 0.499)
    ckpt = tiny_checkpoint(tmp_path / "tiny.pt", fit_rgb=rgb)
    out = tmp_path / "out"
    res = CliRunner().invoke(main, ["run", str(slides), "-o", str(out), "--checkpoint", str(ckpt),
                                    "--workers", "0"])
    assert res.exit_code == 0, res.output
    assert f"cohort report: {out / REPORT}" in res.output
    page = _parse(out / REPORT)
    assert set(page.rows) == {"cmu_a"}
    _check_images_and_links(out, page)
    assert "cmu_a/qc/sheet.png" in page.links
    marker = (out / "cmu_a" / "stages" / "export.json").read_text()
    assert '"qc"' in marker  # the export marker promises the sheet: resume redoes it when gone
