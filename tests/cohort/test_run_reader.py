"""The slide reader is chosen in the run config and reaches open_slide."""

from __future__ import annotations

import pytest

import wsi_pipeline.io as io
from wsi_pipeline.cohort import tasks
from wsi_pipeline.cohort.config import ConfigError, RunConfig, load_run_config


def test_reader_key_defaults_to_auto_and_is_validated(tmp_path):
    assert RunConfig().discovery.reader == "auto"
    cfg = tmp_path / "run.yaml"
    cfg.write_text("discovery:\n  reader: tiatoolbox\n")
    assert load_run_config(cfg).discovery.reader == "tiatoolbox"
    cfg.write_text("discovery:\n  reader: bioformats\n")
    with pytest.raises(ConfigError, match="discovery.reader"):
        load_run_config(cfg)


@pytest.mark.parametrize("reader", ["image", "tiatoolbox"])
def test_infer_task_opens_the_slide_with_the_configured_reader(tmp_path, monkeypatch, reader):
    seen = {}

    def spy(path, mpp=None, *, reader="auto"):
        seen.update(path=path, mpp=mpp, reader=reader)
        raise io.SlideReadError(path, "stop here")

    monkeypatch.setattr(io, "open_slide", spy)
    cfg = RunConfig.model_validate({"discovery": {"reader": reader}})
    job = tasks.SlideJob(slide_id="s", path=tmp_path / "s.svs", out_dir=tmp_path, cfg=cfg,
                         checkpoint=tmp_path / "m.pt", model_sha256="0" * 64, expected={},
                         mpp=0.5, mpp_source="fallback")  # as the preflight resolved it
    with pytest.raises(io.SlideReadError, match="stop here"):
        tasks._infer(job)
    assert seen == {"path": tmp_path / "s.svs", "mpp": 0.5, "reader": reader}
