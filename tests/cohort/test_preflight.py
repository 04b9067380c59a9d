"""Pixel-size rules and the preflight of `wsi-pipeline run` (issue 11, items 5-7).

`--mpp` is a fallback only, `--mpp-override` and a slide list's mpp column say otherwise, and
every slide records where its pixel size came from; missing and implausible pixel sizes, broken
slides, unusable checkpoints and a too-small disk are found before any inference. Synthetic
slides (a 512² TIFF with metadata, the same image as a PNG without) and a tiny model at 1 µm/px
keep each real run to a few seconds.
"""

from __future__ import annotations

import collections
import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner
from PIL import Image

from tests.helpers.cohort_fixtures import tiny_checkpoint, write_pyramid_tiff
from wsi_pipeline.cli import main
from wsi_pipeline.cohort import preflight
from wsi_pipeline.cohort.config import RunConfig
from wsi_pipeline.cohort.discover import DiscoveryError, discover
from wsi_pipeline.cohort.mpp import resolve_mpp
from wsi_pipeline.cohort.runner import CohortRunner, RunSetupError
from wsi_pipeline.io import MissingMppError, SlideReadError, open_slide
from wsi_pipeline.io.openslide_reader import mpp_and_source_from_properties
from wsi_pipeline.io.plain_image import PlainImageSlide


def _tissue_image() -> np.ndarray:
    """512² of glass with a pink square of purple blobs: tissue, with nucleus-like spots."""
    rng = np.random.default_rng(0)
    img = np.full((512, 512, 3), 242, np.uint8)
    img[64:448, 64:448] = (225, 160, 200)
    yy, xx = np.mgrid[:512, :512]
    for cy, cx in rng.integers(80, 432, (120, 2)):
        img[(yy - cy) ** 2 + (xx - cx) ** 2 < 36] = (90, 50, 140)
    return img


@pytest.fixture(scope="module")
def synth(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("synth")
    img = _tissue_image()
    write_pyramid_tiff(root / "meta.tif", img, 0.5)  # 0.5 µm/px in its metadata
    Image.fromarray(img).save(root / "plain.png")  # no pixel size at all
    tiny_checkpoint(root / "tiny.pt", fit_rgb=img, mpp=1.0)
    return root


def _run(*args) -> object:
    return CliRunner().invoke(main, ["run", *map(str, args)])


def _runner(source: Path, out: Path, synth: Path, **cfg) -> CohortRunner:
    cfg = RunConfig.model_validate({"checkpoint": str(synth / "tiny.pt"), "cluster": {"workers": 0}, **cfg})
    return CohortRunner(source, out, cfg, dry_run=True)


# -- item 5: --mpp is a fallback; override and CSV column; the source is recorded ------------------
def test_rules_most_specific_first():
    meta, power = (0.499, "metadata"), (0.25, "objective_power")
    assert resolve_mpp(meta).source == "metadata" and resolve_mpp(meta).value == 0.499
    assert resolve_mpp(meta, fallback=0.25).value == 0.499  # a fallback never beats the file
    assert resolve_mpp(None, fallback=0.25).source == "fallback"
    assert resolve_mpp(power, fallback=0.5).source == "objective_power"
    assert resolve_mpp(meta, override=0.25).source == "override"
    assert resolve_mpp(meta, csv=0.3, override=0.25).source == "csv"
    assert resolve_mpp(None).value is None
    # Only values the user chose enter the inference hash: the file's own are in its fingerprint.
    assert resolve_mpp(meta, fallback=0.25).hash_value is None
    assert resolve_mpp(meta, override=0.25).hash_value == 0.25
    assert "the file says 0.499" in resolve_mpp(meta, override=0.25).describe()
    assert mpp_and_source_from_properties({"openslide.objective-power": "20"}, Path("x")) == (
        0.5, "objective_power")


def test_fallback_leaves_slides_with_metadata_alone(synth, tmp_path):
    """The bug: adding --mpp to rescue one slide redid a finished 0.499 slide at the new value."""
    plain = _runner(synth / "meta.tif", tmp_path / "o", synth)
    with_fallback = _runner(synth / "meta.tif", tmp_path / "o", synth, mpp=0.25)
    check = with_fallback.slide_checks()["meta"]
    assert (check.mpp.value, check.mpp.source) == (0.5, "metadata")
    assert plain.plan()[0].expected == with_fallback.plan()[0].expected  # nothing to redo
    override = _runner(synth / "meta.tif", tmp_path / "o", synth, mpp_override=0.25)
    check = override.slide_checks()["meta"]
    assert (check.mpp.value, check.mpp.source) == (0.25, "override")
    assert override.plan()[0].expected["infer"] != plain.plan()[0].expected["infer"]


def test_slide_list_mpp_column(tmp_path):
    for name in ("a.svs", "b.svs", "c.svs"):
        (tmp_path / name).write_bytes(b"")
    (tmp_path / "list.csv").write_text("path,mpp\na.svs,0.25\nb.svs,\nc.svs,0.5\n")
    assert {e.slide_id: e.mpp for e in discover(tmp_path / "list.csv")} == {"a": 0.25, "b": None, "c": 0.5}
    (tmp_path / "list.tsv").write_text("slide\tmicrons_per_pixel\na.svs\t0.3\n")
    assert [e.mpp for e in discover(tmp_path / "list.tsv")] == [0.3]
    (tmp_path / "plain.txt").write_text("a.svs\nb.svs\n")
    assert [e.mpp for e in discover(tmp_path / "plain.txt")] == [None, None]
    (tmp_path / "bad.csv").write_text("path,mpp\na.svs,0.25\nb.svs,twenty\n")
    with pytest.raises(DiscoveryError, match=r"bad\.csv: row 3: mpp 'twenty' is not a positive number"):
        discover(tmp_path / "bad.csv")
    (tmp_path / "neg.csv").write_text("path,mpp\na.svs,-1\n")
    with pytest.raises(DiscoveryError, match=r"neg\.csv: row 2"):
        discover(tmp_path / "neg.csv")


def test_run_records_where_each_pixel_size_came_from(synth, tmp_path):
    (tmp_path / "list.csv").write_text(f"path,mpp\n{synth / 'meta.tif'},\n{synth / 'plain.png'},0.5\n")
    out = tmp_path / "out"
    res = _run(tmp_path / "list.csv", "-o", out, "--checkpoint", synth / "tiny.pt", "--workers", "0")
    assert res.exit_code == 0, res.output
    m = pd.read_parquet(out / "manifest.parquet").set_index("slide_id")
    assert (m["status"] == "done").all()
    assert m.loc["meta", ["mpp", "mpp_source"]].tolist() == [0.5, "metadata"]
    assert m.loc["plain", ["mpp", "mpp_source"]].tolist() == [0.5, "csv"]
    assert "pixel size 0.5 µm/px from the file's metadata" in (out / "logs" / "meta.log").read_text()
    assert "pixel size 0.5 µm/px from the slide list's mpp column" in (out / "logs" / "plain.log").read_text()
    assert json.loads((out / "meta" / "summary.json").read_text())["slide_mpp_source"] == "metadata"
    assert isinstance(m.loc["meta", "qc"], str)  # QC ran (its flags are tested in tests/export/test_qc.py)

    # Adding a fallback (as one would to rescue a slide without metadata) redoes nothing.
    markers = {p: p.read_text() for p in out.glob("*/stages/*.json")}
    again = _run(tmp_path / "list.csv", "-o", out, "--checkpoint", synth / "tiny.pt", "--workers", "0",
                 "--mpp", "0.25")
    assert again.exit_code == 0, again.output
    assert "0 to run, 2 already finished" in again.output
    assert {p: p.read_text() for p in out.glob("*/stages/*.json")} == markers


# -- item 6: missing and implausible pixel sizes stop the run before any inference ----------------
def test_missing_mpp_refused_before_any_work(synth, tmp_path):
    out = tmp_path / "out"
    res = _run(synth / "plain.png", "-o", out, "--checkpoint", synth / "tiny.pt", "--workers", "0")
    assert res.exit_code != 0
    assert f"{synth / 'plain.png'}: no pixel size (mpp)" in res.output
    assert "--mpp" in res.output and "0.25 µm/px for 40×" in res.output and "0.5 µm/px for 20×" in res.output
    assert not (out / "plain").exists() and not (out / "manifest.parquet").exists()
    ok = _run(synth / "plain.png", "-o", out, "--checkpoint", synth / "tiny.pt", "--workers", "0",
              "--mpp", "0.5", "--dry-run")
    assert ok.exit_code == 0 and "mpp 0.5 (fallback)" in ok.output


def test_missing_mpp_message_quotes_the_objective_power(tmp_path):
    class Objective40(PlainImageSlide):
        @property
        def objective_power(self) -> float | None:
            return 40.0

    slide = Objective40(tmp_path / "x.png", pixels=np.zeros((8, 8, 3), np.uint8))
    with pytest.raises(MissingMppError, match=r"x\.png: .*objective power 40×.*≈0\.25 µm/px for 40×"):
        _ = slide.mpp
    assert "objective power 40×" in preflight.missing_mpp_message(tmp_path / "x.png", 40.0)


@pytest.mark.parametrize("flag, value", [("--mpp", "100"), ("--mpp-override", "100"),
                                         ("--mpp-override", "1e-6")])
def test_implausible_mpp_refused(synth, tmp_path, flag, value):
    out = tmp_path / "out"
    res = _run(synth / "meta.tif", "-o", out, "--checkpoint", synth / "tiny.pt", "--workers", "0",
               flag, value)
    assert res.exit_code != 0
    assert "outside the plausible 0.1-2 µm/px" in res.output and "--allow-unusual-mpp" in res.output
    assert not (out / "meta").exists()


def test_dry_run_flags_implausible_mpp_and_the_flag_confirms_it(synth, tmp_path):
    res = _run(synth / "meta.tif", "-o", tmp_path / "out", "--checkpoint", synth / "tiny.pt",
               "--mpp-override", "100", "--dry-run")
    assert res.exit_code == 0, res.output
    line = next(x for x in res.output.splitlines() if x.startswith("meta\t"))
    assert "[implausible mpp: pixel size 100 µm/px from --mpp-override (the file says 0.5)" in line
    assert "a run would refuse to start" in res.output
    confirmed = _runner(synth / "meta.tif", tmp_path / "o", synth, mpp_override=100,
                        preflight={"allow_unusual_mpp": True})
    assert confirmed.slide_checks()["meta"].problem is None
    # A large scanned area at 100 µm/px: the disk estimate says so (≈2600 mm² for 512 px).
    assert confirmed.slide_checks()["meta"].area_mm2 == pytest.approx(512 * 512 * 100**2 / 1e6)


def test_absurd_pixel_size_is_a_clear_read_error_not_memory_error(synth):
    with (open_slide(synth / "meta.tif", mpp=1e-6) as slide,
          pytest.raises(SlideReadError, match=r"meta\.tif: .*is the pixel size 1e-06 µm/px right\?")):
        slide.thumbnail_at_mpp(8.0)


# -- item 7: broken slides, checkpoint, disk --------------------------------------------------------
def test_broken_slide_recorded_and_skipped_others_go_on(synth, tmp_path):
    folder = tmp_path / "slides"
    folder.mkdir()
    shutil.copy(synth / "meta.tif", folder)
    (folder / "broken.svs").write_text("this is not a slide\n")
    out = tmp_path / "out"
    res = _run(folder, "-o", out, "--checkpoint", synth / "tiny.pt", "--workers", "0")
    assert res.exit_code == 1, res.output
    m = pd.read_parquet(out / "manifest.parquet").set_index("slide_id")
    assert m.loc["meta", "status"] == "done"
    row = m.loc["broken"]
    assert (row["status"], row["failed_stage"], row["error_type"]) == ("failed", "infer", "SlideReadError")
    log = (out / "logs" / "broken.log").read_text()
    assert "found before any work" in log and "Traceback" in log
    assert "started on" not in log  # no stage task was ever started for it
    assert "1 that do not open (recorded as failed)" in res.output
    assert "FAILED broken: infer: SlideReadError" in res.output


class _Opaque:
    """A pickled object torch's safe loader refuses (its hint says to load unsafely: never shown)."""


@pytest.mark.parametrize("kind", ["garbage", "object", "empty", "zero_mpp"])
def test_unusable_checkpoint_is_one_clear_error(synth, tmp_path, kind):
    import torch

    ckpt = tmp_path / f"{kind}.pt"
    if kind == "garbage":
        ckpt.write_bytes(np.random.default_rng(0).bytes(4096))
    elif kind == "object":
        torch.save({"format": "x", "thing": _Opaque(), "c": collections.OrderedDict()}, ckpt)
    elif kind == "empty":
        ckpt.write_bytes(b"")
    else:
        tiny_checkpoint(ckpt, mpp=0.0)
    out = tmp_path / "out"
    res = _run(synth / "meta.tif", "-o", out, "--checkpoint", ckpt, "--workers", "0")
    assert res.exit_code != 0
    assert res.output.count(f"{ckpt}:") == 1, res.output
    assert "weights_only" not in res.output and "ZeroDivisionError" not in res.output
    if kind == "zero_mpp":
        assert "mpp=0.0 is not a positive number" in res.output
    assert not list(out.glob("meta/*.zarr")) and not list(out.glob("meta/stages/*"))  # no work began


def test_disk_space_refused_or_warned(synth, tmp_path, monkeypatch):
    usage = collections.namedtuple("usage", "total used free")
    runner = _runner(synth / "meta.tif", tmp_path / "o", synth)
    checks = list(runner.slide_checks().values())
    need = preflight.estimate_disk(tmp_path, checks, 0.25, runner.cfg).need_bytes
    assert need == pytest.approx(512 * 512 * 0.5**2 / 1e6 * 90e6)  # 90 MB/mm² at 0.25 µm/px
    for free, verdict in ((need * 2, "ok"), (need * 0.5, "warn"), (need * 0.1, "refuse")):
        monkeypatch.setattr(preflight.shutil, "disk_usage", lambda p, f=free: usage(0, 0, int(f)))
        assert preflight.estimate_disk(tmp_path, checks, 0.25, runner.cfg).verdict == verdict
    warn_only = RunConfig.model_validate({"preflight": {"disk_check": "warn"}})
    assert preflight.estimate_disk(tmp_path, checks, 0.25, warn_only).verdict == "warn"

    monkeypatch.setattr(preflight.shutil, "disk_usage", lambda p: usage(0, 0, 1000))
    out = tmp_path / "out"
    cfg = RunConfig.model_validate({"checkpoint": str(synth / "tiny.pt"), "cluster": {"workers": 0}})
    with pytest.raises(RunSetupError, match=r"not enough disk space: 1 slide\(s\) to infer"):
        CohortRunner(synth / "meta.tif", out, cfg).run()
    assert not (out / "meta" / "maps.zarr").exists()
