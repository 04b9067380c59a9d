"""wsi_pipeline.atomic: the final name holds either the old or the complete new content."""

from __future__ import annotations

import os
import stat

import pytest

from wsi_pipeline.atomic import atomic_path, write_bytes_atomic, write_text_atomic


def test_success_replaces_and_leaves_no_temp(tmp_path):
    target = tmp_path / "out.json"
    target.write_text("old")
    with atomic_path(target) as tmp:
        assert tmp.parent == tmp_path and tmp.name.startswith(".") and tmp.name.endswith(".tmp")
        assert target.read_text() == "old"  # nothing visible until the block ends
        tmp.write_text("new")
    assert target.read_text() == "new"
    assert os.listdir(tmp_path) == ["out.json"]


def test_error_keeps_old_content_and_removes_temp(tmp_path):
    target = tmp_path / "out.bin"
    target.write_bytes(b"old")
    with pytest.raises(RuntimeError, match="boom"), atomic_path(target) as tmp:
        tmp.write_bytes(b"half")
        raise RuntimeError("boom")
    assert target.read_bytes() == b"old"
    assert os.listdir(tmp_path) == ["out.bin"]


def test_error_before_temp_exists_is_reraised(tmp_path):
    target = tmp_path / "never.txt"
    with pytest.raises(ValueError), atomic_path(target):
        raise ValueError
    assert os.listdir(tmp_path) == []


def test_writer_that_creates_nothing_fails_loudly(tmp_path):
    with pytest.raises(FileNotFoundError), atomic_path(tmp_path / "x.txt"):
        pass
    assert os.listdir(tmp_path) == []


def test_conveniences_with_fsync(tmp_path):
    write_text_atomic(tmp_path / "a.txt", "héllo\n", fsync=True)
    write_bytes_atomic(tmp_path / "b.bin", b"\x00\x01", fsync=True)
    assert (tmp_path / "a.txt").read_text(encoding="utf-8") == "héllo\n"
    assert (tmp_path / "b.bin").read_bytes() == b"\x00\x01"
    assert sorted(os.listdir(tmp_path)) == ["a.txt", "b.bin"]


def test_final_file_gets_umask_permissions_not_private(tmp_path):
    old = os.umask(0o022)
    try:
        write_text_atomic(tmp_path / "p.txt", "x")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "p.txt").stat().st_mode) == 0o644


def test_missing_folder_is_created(tmp_path):
    write_bytes_atomic(tmp_path / "a" / "b" / "c.bin", b"x")
    assert (tmp_path / "a" / "b" / "c.bin").read_bytes() == b"x"


def test_temp_names_do_not_collide(tmp_path):
    target = tmp_path / "same.txt"
    with atomic_path(target) as a, atomic_path(target) as b:
        assert a != b
        a.write_text("a")
        b.write_text("b")
    assert target.read_text() == "a"  # outer block renames last
