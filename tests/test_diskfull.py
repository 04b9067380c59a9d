"""A full disk recognised in every shape it arrives in, named and said in one line (#11 item 11).
The cohort-level cases (a slide failed cleanly, the run stopped, a real tmpfs) are in
tests/cohort/test_fault_matrix.py."""

from __future__ import annotations

import errno
import logging
import os

import pytest

from wsi_pipeline.atomic import atomic_path, write_bytes_atomic
from wsi_pipeline.diskfull import describe, disk_full_error, human_bytes, naming


def enospc(filename: str | None = None) -> OSError:
    return OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), *([filename] if filename else []))


def test_found_in_causes_contexts_and_groups():
    full = enospc()
    try:
        try:
            raise full
        except OSError:
            raise RuntimeError("the writer's close() failed too")  # noqa: B904 (a context, not a cause)
    except RuntimeError as exc:
        assert disk_full_error(exc) is full
    wrapped = ValueError("x")
    wrapped.__cause__ = full
    assert disk_full_error(wrapped) is full
    assert disk_full_error(ExceptionGroup("g", [KeyError("k"), full])) is full
    assert disk_full_error(OSError(errno.EDQUOT, "Disk quota exceeded")).errno == errno.EDQUOT
    assert disk_full_error(OSError(errno.EACCES, "Permission denied")) is None
    assert disk_full_error(FileNotFoundError("gone")) is None and disk_full_error(None) is None


def test_naming_fills_in_the_file_a_failed_write_does_not_name(tmp_path):
    with pytest.raises(OSError) as info, naming(tmp_path / "out.parquet"):
        raise enospc()
    assert info.value.filename == str(tmp_path / "out.parquet")
    with pytest.raises(OSError) as info, naming(tmp_path / "final", aliases=(tmp_path / ".final.tmp",)):
        raise enospc(str(tmp_path / ".final.tmp"))
    assert info.value.filename == str(tmp_path / "final")  # the temporary name stands for it
    with pytest.raises(OSError) as info, naming(tmp_path / "outer"):
        raise enospc("/somewhere/else")
    assert info.value.filename == "/somewhere/else"  # an error that names its file keeps it


def test_an_atomic_write_on_a_full_disk_leaves_the_old_file_whole(tmp_path):
    target = tmp_path / "manifest.parquet"
    target.write_bytes(b"the previous manifest")
    with pytest.raises(OSError) as info, atomic_path(target) as tmp:
        tmp.write_bytes(b"half of the new")
        raise enospc()  # what pyarrow's write raises: errno set, no file name
    assert info.value.filename == str(target)
    assert target.read_bytes() == b"the previous manifest"
    assert [p.name for p in tmp_path.iterdir()] == ["manifest.parquet"]  # no temporary left


def test_the_message_names_the_file_and_the_free_space(tmp_path):
    text = describe(enospc(str(tmp_path / "x" / "nuclei.parquet")))
    assert text.startswith(f"disk full while writing {tmp_path / 'x' / 'nuclei.parquet'}: free space ")
    assert " of " in text
    quota = describe(OSError(errno.EDQUOT, "Disk quota exceeded"), fallback=tmp_path)
    assert quota.startswith(f"disk quota exceeded while writing {tmp_path}: free space")
    assert describe(enospc()) == "disk full"


@pytest.mark.parametrize("n, text", [(0, "0 B"), (999, "999 B"), (812_345, "812 kB"),
                                     (7_900_000, "7.9 MB"), (1.2e12, "1.2 TB"), (5e15, "5000.0 TB")])
def test_human_bytes(n, text):
    assert human_bytes(n) == text


def test_a_slide_log_on_a_full_disk_drops_lines_without_a_traceback(tmp_path, capsys, monkeypatch):
    """logging's default is a traceback on stderr for every line it cannot write."""
    from wsi_pipeline.cohort.tasks import log_to_file

    log = logging.getLogger("wsi_pipeline.test_diskfull")
    with log_to_file(tmp_path / "s.log"):
        handler = logging.getLogger("wsi_pipeline").handlers[-1]

        def full(*_):
            raise enospc()

        monkeypatch.setattr(handler.stream, "write", full)
        log.warning("a line the disk has no room for")
    assert "Traceback" not in capsys.readouterr().err


def test_a_lock_whose_content_does_not_fit_is_not_left_empty(tmp_path, monkeypatch):
    """An empty lock would hold every later run off (it looks like one being written)."""
    from wsi_pipeline.cohort import locks

    def full(fd, data):
        raise enospc()

    monkeypatch.setattr(locks.os, "write", full)
    with pytest.raises(OSError):
        locks.acquire(tmp_path / "slide.lock", locks.me())
    assert not (tmp_path / "slide.lock").exists()


def test_write_bytes_atomic_names_the_final_file(tmp_path, monkeypatch):
    def full(self, data):
        raise enospc()

    monkeypatch.setattr(type(tmp_path), "write_bytes", full)
    with pytest.raises(OSError) as info:
        write_bytes_atomic(tmp_path / "a.json", b"{}")
    assert info.value.filename == str(tmp_path / "a.json")
