"""cluster.retries only applies to the embedded cluster: setting it with --scheduler warns."""

from __future__ import annotations

import logging

import pytest

from wsi_pipeline.cohort import cluster
from wsi_pipeline.cohort.config import ClusterConfig


@pytest.fixture
def fake_connect(monkeypatch):
    monkeypatch.setattr(cluster, "connect", lambda *a, **k: "handle")


def _open(cfg: ClusterConfig, tmp_path):
    return cluster.open_cluster(cfg, "cpu", tmp_path, [])


def test_explicit_retries_with_scheduler_warns(fake_connect, tmp_path, caplog):
    cfg = ClusterConfig(scheduler="tcp://host:8786", retries=5, check_shared_storage=False)
    with caplog.at_level(logging.WARNING, logger="wsi_pipeline.cohort.cluster"):
        assert _open(cfg, tmp_path) == "handle"
    assert any("retries=5 is ignored" in r.getMessage() for r in caplog.records)


def test_default_retries_with_scheduler_is_silent(fake_connect, tmp_path, caplog):
    cfg = ClusterConfig(scheduler="tcp://host:8786", check_shared_storage=False)
    with caplog.at_level(logging.WARNING, logger="wsi_pipeline.cohort.cluster"):
        _open(cfg, tmp_path)
    assert not [r for r in caplog.records if "retries" in r.getMessage()]
