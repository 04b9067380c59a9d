"""Slide ids: files that differ only in extension never share an output folder."""

from __future__ import annotations

from pathlib import Path

import pytest

from wsi_pipeline.cohort.discover import DiscoveryError, SlideEntry, _assign_ids, discover


def _touch(p: Path) -> Path:
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_bytes(b"x")
    return p


def test_same_stem_different_extension_in_one_folder(tmp_path):
    _touch(tmp_path / "x.svs")
    _touch(tmp_path / "x.tif")
    _touch(tmp_path / "y.svs")
    ids = sorted(e.slide_id for e in discover(tmp_path))
    assert ids == ["x.svs", "x.tif", "y"]


def test_extension_kept_only_where_the_folder_prefix_is_not_enough(tmp_path):
    for rel in ("a/s.svs", "b/s.svs", "c/s.svs", "c/s.ndpi"):
        _touch(tmp_path / rel)
    ids = sorted(e.slide_id for e in discover(tmp_path))
    assert ids == ["a__s", "b__s", "c__s.ndpi", "c__s.svs"]


def test_ids_that_still_clash_are_an_error(tmp_path):
    # stem "x.svs" (of x.svs.tif) equals the extension-keeping id of x.svs next to x.ndpi
    paths = [tmp_path / "x.svs", tmp_path / "x.ndpi", tmp_path / "x.svs.tif"]
    with pytest.raises(DiscoveryError, match=r"'x\.svs'.*rename"):
        _assign_ids(paths, tmp_path)


def test_unique_ids_unchanged(tmp_path):
    assert _assign_ids([tmp_path / "a.svs", tmp_path / "b.tif"], tmp_path) == [
        SlideEntry(tmp_path / "a.svs", "a"), SlideEntry(tmp_path / "b.tif", "b")]
