"""files.replacing: the one atomic writer (labels, provenance, weights, checkpoints, reports)."""

from __future__ import annotations

import os
import sys

import pytest

from napari_clickseg.files import replacing, same_file


def test_the_new_file_replaces_the_old_only_when_written(tmp_path):
    f = tmp_path / "labels.tif"
    f.write_text("old")
    with replacing(f) as tmp:
        assert tmp.parent == tmp_path and tmp.suffix == ".tif" and tmp != f  # writers choose by suffix
        tmp.write_text("new")
        assert f.read_text() == "old"
    assert f.read_text() == "new" and os.listdir(tmp_path) == ["labels.tif"]


def test_a_failed_or_interrupted_write_keeps_the_old_file_and_leaves_nothing(tmp_path):
    # regression (audit 21): segment --overwrite and evaluate --overwrite wrote in place, so a
    # full disk left a truncated file instead of the earlier one
    f = tmp_path / "evaluation.json"
    f.write_text("old")
    for error in (OSError(28, "No space left on device"), KeyboardInterrupt()):
        with pytest.raises(type(error)), replacing(f) as tmp:
            tmp.write_text("half")
            raise error
        assert f.read_text() == "old" and os.listdir(tmp_path) == ["evaluation.json"]


def test_a_users_tmp_file_is_never_touched_and_long_names_work(tmp_path):
    # regression (audit 21): saving X.tif overwrote, then deleted, a user's X.tif.tmp
    mine = tmp_path / "X.tif.tmp"
    mine.write_text("mine")
    with replacing(tmp_path / "X.tif") as tmp:
        tmp.write_text("labels")
    assert mine.read_text() == "mine"
    long = tmp_path / ("a" * 250 + ".tif")  # a ".tmp" suffix would pass the 255-byte limit
    with replacing(long) as tmp:
        tmp.write_text("x")
    assert long.read_text() == "x"


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX modes and symlinks")
def test_modes_symlinks_and_folders(tmp_path):
    f = tmp_path / "shared.tif"
    f.write_text("old")
    f.chmod(0o640)
    with replacing(f) as tmp:
        tmp.write_text("new")
    assert f.stat().st_mode & 0o777 == 0o640  # a replaced file keeps its mode
    old = os.umask(0o027)
    try:
        with replacing(tmp_path / "fresh.tif") as tmp:
            tmp.write_text("x")
    finally:
        os.umask(old)
    assert (tmp_path / "fresh.tif").stat().st_mode & 0o777 == 0o640  # a new one follows the umask
    target = tmp_path / "elsewhere.tif"
    target.write_text("keep me")
    link = tmp_path / "link.tif"
    link.symlink_to(target)
    with replacing(link) as tmp:
        tmp.write_text("labels")
    assert target.read_text() == "keep me" and not link.is_symlink() and link.read_text() == "labels"
    with pytest.raises(IsADirectoryError), replacing(tmp_path):
        pass


@pytest.mark.skipif(sys.platform == "win32", reason="reads the handle's mode with fcntl")
def test_the_flush_to_disk_uses_a_handle_open_for_writing(tmp_path, monkeypatch):
    # (review, session 21): Windows' fsync refuses a read-only handle (EBADF), which made every
    # save fail there; this fsync follows Windows' rule on any platform
    import fcntl

    real_fsync = os.fsync

    def windows_fsync(fd):
        if fcntl.fcntl(fd, fcntl.F_GETFL) & os.O_ACCMODE == os.O_RDONLY:
            raise OSError(9, "Bad file descriptor")
        return real_fsync(fd)

    monkeypatch.setattr(os, "fsync", windows_fsync)
    with replacing(tmp_path / "a.json") as tmp:
        tmp.write_text("{}")
    assert (tmp_path / "a.json").read_text() == "{}"



@pytest.mark.skipif(sys.platform == "win32", reason="symlinks")
def test_same_file_follows_links_and_is_false_for_missing_paths(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "a")
    assert same_file(tmp_path / "a", tmp_path / "link")
    assert not same_file(tmp_path / "a", tmp_path)
    assert not same_file(tmp_path / "a", tmp_path / "missing")
