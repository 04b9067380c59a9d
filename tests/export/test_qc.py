"""Per-slide plausibility QC (issue 11, item 8): results that look wrong say so, in summary.json,
the slide log, the manifest's `qc` column and `summarize`."""

from __future__ import annotations

import json
import logging

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from tests.helpers.maps_synth import disc_instances, oracle_maps, write_maps_zarr
from wsi_pipeline.cli import main
from wsi_pipeline.cohort import tasks
from wsi_pipeline.cohort.config import ConfigError, RunConfig, load_run_config
from wsi_pipeline.cohort.discover import SlideEntry
from wsi_pipeline.cohort.manifest import slide_row, write_manifest
from wsi_pipeline.cohort.stages import STAGES, SlideStages, StageMarker
from wsi_pipeline.cohort.summarize import summarize_cohort
from wsi_pipeline.export.config import ExportConfig
from wsi_pipeline.export.qc import QCConfig, QCStats, qc_report
from wsi_pipeline.export.stage import export_slide
from wsi_pipeline.postproc import PostprocConfig
from wsi_pipeline.postproc.slide import postprocess_slide

LOOSE = QCConfig(min_tissue_mm2=0.0, min_nuclei=1)  # judge even the tiny synthetic slides


def _stats(areas, probs=None) -> QCStats:
    s = QCStats()
    areas = np.asarray(areas, float)
    s.add(areas, np.full(len(areas), 0.9) if probs is None else np.asarray(probs, float))
    return s


def test_median_area_from_batches_is_close_to_the_exact_median():
    rng = np.random.default_rng(0)
    areas = rng.lognormal(np.log(40), 0.5, 10_001)
    s = QCStats()
    for part in np.array_split(areas, 7):
        s.add(part, np.ones(len(part)))
    assert s.n == len(areas)
    assert s.median_area() == pytest.approx(np.median(areas), rel=0.006)
    assert QCStats().median_area() is None


@pytest.mark.parametrize(
    "areas, probs, tissue_mm2, flags",
    [
        ([40.0] * 100, None, 0.05, []),  # 2000 nuclei/mm², 40 µm²: plausible
        ([], None, 0.64, ["no_nuclei_on_tissue"]),  # the TCGA slide at a wrong --mpp
        ([], None, 0.0, []),  # no tissue: status no_tissue says it, not QC
        ([], None, 0.005, []),  # too little tissue to judge
        ([2.5] * 100, None, 0.05, ["median_area_low"]),  # a pixel size 4x too small: areas ÷ 16
        ([400.0] * 100, None, 0.05, ["median_area_high"]),
        ([40.0] * 100, None, 10.0, ["density_low"]),  # 10 nuclei/mm²
        ([40.0] * 100, None, 0.001, []),  # tissue below min_tissue_mm2: density not judged
        ([40.0] * 100, [0.3] * 60 + [0.9] * 40, 0.05, ["low_type_confidence"]),
        ([2.5] * 5, [0.1] * 5, 0.05, []),  # 5 nuclei: too few to judge areas or types
    ],
)
def test_flags(areas, probs, tissue_mm2, flags):
    report = qc_report(_stats(areas, probs), tissue_mm2, QCConfig())
    assert report["flags"] == flags
    assert report["bounds"]["median_area_um2"] == [10.0, 150.0]


def test_density_high_and_configurable_bounds():
    stats = _stats([40.0] * 1000)
    assert qc_report(stats, 0.01, QCConfig())["flags"] == ["density_high"]  # 100k/mm²
    tight = QCConfig(median_area_um2=(50, 60), density_per_mm2=(1, 1e6))
    assert qc_report(stats, 0.01, tight)["flags"] == ["median_area_low"]


def test_bounds_are_run_config_keys():
    cfg = RunConfig.model_validate({"export": {"qc": {"median_area_um2": [5, 200], "min_nuclei": 50}}})
    assert cfg.export.qc.median_area_um2 == (5, 200) and cfg.export.qc.min_nuclei == 50
    # QC bounds are part of the export stage's hash: changing them redoes export only.
    assert cfg.stage_configs()["export"] != RunConfig().stage_configs()["export"]
    assert cfg.stage_configs()["postproc"] == RunConfig().stage_configs()["postproc"]


def test_bad_bounds_refused(tmp_path):
    (tmp_path / "c.yaml").write_text("export:\n  qc:\n    median_area_um2: [150, 10]\n")
    with pytest.raises(ConfigError, match=r"export\.qc\.median_area_um2"):
        load_run_config(tmp_path / "c.yaml")


def _slide_dir(root, name, centres):
    """A slide folder as the infer and postproc stages leave it (oracle maps, 256² map at 0.25)."""
    d = root / name
    d.mkdir(parents=True)
    inst = disc_instances((256, 256), centres, radius=14)  # ≈38 µm² each
    inferred = np.ones(inst.shape, bool)
    write_maps_zarr(d / "maps.zarr", oracle_maps(inst, (inst > 0).astype(np.uint8), inferred), 128)
    postprocess_slide(d / "maps.zarr", d / "nuclei.parquet", PostprocConfig(), progress=False)
    return d


def test_export_writes_flags_to_summary_and_slide_log(tmp_path, caplog):
    empty = _slide_dir(tmp_path, "empty", [])
    with caplog.at_level(logging.WARNING, logger="wsi_pipeline"):
        summary = export_slide(empty, ExportConfig(qc=LOOSE))
    assert summary["n_nuclei"] == 0 and summary["tissue_mm2"] > 0
    assert summary["qc"]["flags"] == ["no_nuclei_on_tissue"]
    assert json.loads((empty / "summary.json").read_text())["qc"]["flags"] == ["no_nuclei_on_tissue"]
    assert "empty: QC: no_nuclei_on_tissue" in caplog.text

    discs = _slide_dir(tmp_path, "discs", [(60, 60), (60, 190), (190, 60), (190, 190)])
    small_bounds = LOOSE.model_copy(update={"median_area_um2": (10.0, 20.0), "density_per_mm2": (0, 1e9)})
    summary = export_slide(discs, ExportConfig(qc=small_bounds))
    assert summary["qc"]["flags"] == ["median_area_high"]
    assert summary["qc"]["median_area_um2"] == pytest.approx(np.pi * 14**2 * 0.25**2, rel=0.1)
    summary = export_slide(discs, ExportConfig(qc=LOOSE))
    assert summary["qc"]["flags"] == []  # 4 nuclei of 38 µm² on 0.004 mm²: plausible


def test_flags_reach_the_manifest_and_summarize(tmp_path):
    out = tmp_path / "out"
    _slide_dir(out, "empty", [])
    _slide_dir(out, "discs", [(60, 60), (190, 190)])
    cfg = RunConfig.model_validate({"export": {"qc": LOOSE.model_dump()}})
    rows = []
    for slide_id in ("empty", "discs"):
        job = tasks.SlideJob(slide_id=slide_id, path=tmp_path / f"{slide_id}.svs", out_dir=out, cfg=cfg,
                             checkpoint=tmp_path / "m.pt", model_sha256="0" * 64,
                             expected={s: s for s in STAGES})
        result = tasks._export(job)  # what the export stage records in its marker
        stages = SlideStages(out / slide_id)
        for stage in STAGES:
            stages.finish(StageMarker(stage=stage, config_hash=stage, model_sha256="0" * 64, version="x",
                                      seconds=0.0, result=result if stage == "export" else
                                      {"tissue_mm2": 0.0041, "n_nuclei": 0}))
        rows.append(slide_row(out, SlideEntry(tmp_path / f"{slide_id}.svs", slide_id),
                              {s: s for s in STAGES}, "0" * 64, "cfg"))
    write_manifest(out, rows)
    manifest = pd.read_parquet(out / "manifest.parquet").set_index("slide_id")
    assert manifest.loc["empty", "qc"] == "no_nuclei_on_tissue" and manifest.loc["discs", "qc"] == ""

    summary = summarize_cohort(out, plot=False)
    assert summary.qc_flagged == {"empty": "no_nuclei_on_tissue"}
    table = pd.read_parquet(out / "cohort_summary.parquet")
    assert set(table.loc[table["slide_id"] == "empty", "qc"]) == {"no_nuclei_on_tissue"}
    res = CliRunner().invoke(main, ["summarize", str(out), "--no-plot"])
    assert res.exit_code == 0, res.output
    assert "1 slide(s) flagged by QC" in res.output and "empty: no_nuclei_on_tissue" in res.output


def test_summarize_reads_manifests_without_a_qc_column(tmp_path):
    """Outputs of earlier versions: no flags, no error."""
    d = _slide_dir(tmp_path, "old", [(60, 60)])
    pq.write_table(pa.table({"slide_id": ["old"], "status": ["done"], "tissue_mm2": [0.0041]}),
                   tmp_path / "manifest.parquet")
    summary = summarize_cohort(tmp_path, plot=False)
    assert summary.qc_flagged == {} and set(summary.table["qc"]) == {""}
    assert d.is_dir()
