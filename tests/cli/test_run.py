"""`wsi-pipeline run` refuses bad setups before any work, and `--dry-run` flags bad inputs."""

from __future__ import annotations

import os
import shutil

import pytest
from click.testing import CliRunner

from tests.helpers.cohort_fixtures import CMU, make_cohort, tiny_checkpoint
from wsi_pipeline.cli import main
from wsi_pipeline.cohort.config import ConfigError, load_run_config


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    return tiny_checkpoint(tmp_path_factory.mktemp("ckpt") / "tiny.pt")


@pytest.fixture
def slide(shared_data, tmp_path):
    return shutil.copy(shared_data / CMU, tmp_path / "cmu.svs")


def _run(*args):
    return CliRunner().invoke(main, ["run", *map(str, args)])


def test_missing_output_parent_fails_before_work(slide, ckpt, tmp_path):
    out = tmp_path / "no" / "such" / "out"
    res = _run(slide, "-o", out, "--checkpoint", ckpt)
    assert res.exit_code != 0
    assert f"parent folder of the output does not exist: {out.parent}" in res.output
    assert not (tmp_path / "no").exists()


@pytest.mark.skipif(os.geteuid() == 0, reason="root ignores file permissions")
def test_read_only_output_parent_fails_before_work(slide, ckpt, tmp_path):
    parent = tmp_path / "ro"
    parent.mkdir()
    parent.chmod(0o555)
    try:
        res = _run(slide, "-o", parent / "out", "--checkpoint", ckpt)
    finally:
        parent.chmod(0o755)
    assert res.exit_code != 0 and "is not writable" in res.output
    assert not (parent / "out").exists()


def test_read_only_output_checked_even_as_root(slide, ckpt, tmp_path, monkeypatch):
    """Root ignores mode bits, so simulate what a read-only mount answers."""
    from wsi_pipeline.cohort import runner

    real_access = os.access
    parent = tmp_path / "mount"
    parent.mkdir()
    monkeypatch.setattr(runner.os, "access",
                        lambda p, m: False if str(p) == str(parent) else real_access(p, m))
    res = _run(slide, "-o", parent / "out", "--checkpoint", ckpt)
    assert res.exit_code != 0
    assert f"cannot create {parent / 'out'}: parent folder {parent} is not writable" in res.output
    assert not (parent / "out").exists()


def test_output_that_is_a_file_fails(slide, ckpt, tmp_path):
    (tmp_path / "f").write_text("x")
    res = _run(slide, "-o", tmp_path / "f", "--checkpoint", ckpt)
    assert res.exit_code != 0 and "exists and is not a folder" in res.output


@pytest.mark.parametrize(
    "yaml_text, expected",
    [
        ("infer:\n  tile_sise: 256\n", "infer.tile_sise: unknown key"),
        ("postproc:\n  ns_threshold: high\n", "postproc.ns_threshold: Input should be a valid number"),
        ("cluster:\n  retries: -1\n", "cluster.retries: Input should be greater than or equal to 0"),
        ("cluster:\n  scheduler: localhost:8786\n", "cluster.scheduler: Value error, must be an address"),
        ("- just\n- a list\n", "top level must be a mapping"),
        ("infer: [unclosed\n", "not valid YAML"),
    ],
)
def test_bad_config_fails_before_work(slide, ckpt, tmp_path, yaml_text, expected):
    cfg = tmp_path / "bad.yaml"
    cfg.write_text(yaml_text)
    out = tmp_path / "out"
    res = _run(slide, "-o", out, "--checkpoint", ckpt, "--config", cfg)
    assert res.exit_code != 0
    assert str(cfg) in res.output and expected in res.output, res.output
    assert not out.exists()


def test_missing_checkpoint_and_input_fail_before_work(slide, tmp_path):
    res = _run(slide, "-o", tmp_path / "out", "--checkpoint", tmp_path / "nope.pt")
    assert res.exit_code != 0 and "checkpoint not found" in res.output
    res = _run(tmp_path / "nothing-here", "-o", tmp_path / "out2", "--checkpoint", slide)
    assert res.exit_code != 0 and "input not found" in res.output


def test_shipped_configs_are_valid():
    from pathlib import Path

    from wsi_pipeline.cohort.config import default_yaml

    root = Path(__file__).resolve().parents[2] / "configs"
    assert (root / "run_default.yaml").read_text() == default_yaml(), (
        "configs/run_default.yaml is out of step with the defaults; regenerate it with the "
        "command in its header")
    load_run_config(root / "run_default.yaml")
    load_run_config(root / "cohort_example.yaml")


def test_relative_checkpoint_is_relative_to_config(tmp_path):
    (tmp_path / "c.yaml").write_text("checkpoint: weights/m.pt\n")
    assert load_run_config(tmp_path / "c.yaml").checkpoint == (tmp_path / "weights" / "m.pt").resolve()
    with pytest.raises(ConfigError, match="config file not found"):
        load_run_config(tmp_path / "absent.yaml")


def test_dry_run_lists_and_flags_without_writing(shared_data, ckpt, tmp_path):
    folder = make_cohort(shared_data, tmp_path / "slides", broken=True, blank=True)
    shutil.copy(shared_data / "slides" / "tcga-cr-7395-01a-01-ts1.svs", folder)
    out = tmp_path / "out"
    res = _run(folder, "-o", out, "--checkpoint", ckpt, "--dry-run")
    assert res.exit_code == 0, res.output
    lines = {line.split("\t")[0]: line for line in res.output.splitlines() if "\t" in line}
    assert set(lines) == {"cmu_a", "cmu_b", "blank", "truncated", "text", "empty", "tcga-cr-7395-01a-01-ts1"}
    assert "[no tissue]" in lines["blank"]
    for broken in ("truncated", "text", "empty"):
        assert "[unreadable: SlideReadError" in lines[broken]
    assert "[missing mpp" in lines["tcga-cr-7395-01a-01-ts1"]
    assert "tissue" in lines["cmu_a"] and "[" not in lines["cmu_a"].split("\t")[2]
    assert "7 slides, 7 would run, 5 flagged" in res.output
    assert not out.exists()


def test_formats_flag_is_checked_before_work_and_names_the_format(slide, ckpt, tmp_path):
    out = tmp_path / "out"
    res = _run(slide, "-o", out, "--checkpoint", ckpt, "--formats", "csv,shp")
    assert res.exit_code != 0
    assert "--formats (export.formats)" in res.output and "unknown output format 'shp'" in res.output
    assert not out.exists()
