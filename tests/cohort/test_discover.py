"""Slide discovery: folders, list files, ids that never collide."""

from __future__ import annotations

from pathlib import Path

import pytest

from wsi_pipeline.cohort.discover import DiscoveryError, discover


def _touch(p: Path) -> Path:
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_bytes(b"x")
    return p


def test_folder_recursive_by_extension(tmp_path):
    for rel in ["a.svs", "sub/b.NDPI", "sub/deeper/c.tiff", "notes.txt", ".hidden/d.svs", "e.mrxs",
                "e/Data0.dat"]:
        _touch(tmp_path / rel)
    ids = [e.slide_id for e in discover(tmp_path)]
    assert ids == ["a", "e", "b", "c"]
    assert all(e.path.is_absolute() for e in discover(tmp_path))


def test_colliding_stems_get_path_ids(tmp_path):
    _touch(tmp_path / "x" / "s.svs")
    _touch(tmp_path / "y" / "s.svs")
    _touch(tmp_path / "t.svs")
    ids = sorted(e.slide_id for e in discover(tmp_path))
    assert ids == ["t", "x__s", "y__s"]


def test_csv_and_tsv_lists(tmp_path):
    a, b = _touch(tmp_path / "slides" / "a.svs"), _touch(tmp_path / "slides" / "b.svs")
    (tmp_path / "list.csv").write_text("patient,path\np1,slides/a.svs\np2," + str(b) + "\n")
    assert [e.path for e in discover(tmp_path / "list.csv")] == [a.resolve(), b.resolve()]
    (tmp_path / "list.tsv").write_text("slides/b.svs\textra\nslides/a.svs\tmore\n")
    assert [e.slide_id for e in discover(tmp_path / "list.tsv")] == ["b", "a"]


def test_single_file_and_errors(tmp_path):
    one = _touch(tmp_path / "one.svs")
    assert [e.slide_id for e in discover(one)] == ["one"]
    with pytest.raises(DiscoveryError, match="not found"):
        discover(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DiscoveryError, match="no slides found"):
        discover(tmp_path / "empty")
