"""Atomic file writes: a temporary file beside the target, then ``os.replace``.

Every file the package writes for the user (labels, provenance, weights, checkpoints,
reports, logs) goes through ``replacing``, so a full disk, a crash or Ctrl-C leaves
either the old file or the new one, never half of one, and no temporary file behind.
"""

from __future__ import annotations

import errno
import os
import stat
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

__all__ = ["replacing", "same_file", "umask"]


def same_file(a: str | os.PathLike, b: str | os.PathLike) -> bool:
    """Whether two paths name one file or folder (through links; False if either is missing)."""
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


def umask() -> int:
    """The process's file-creation mask (reading it means setting it, so it is set back)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


@contextmanager
def replacing(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a new temporary path beside ``path``; when the block succeeds it replaces ``path``.

    The temporary name is unique (never a user's file) and ends with ``path``'s suffix, so
    writers that pick a format by suffix work. The new file is flushed to disk and gets the
    permissions of the file it replaces (those the umask allows for a new one). A symlink at
    ``path`` is replaced, its target left alone. On any error or interrupt the temporary
    file is removed and ``path`` stays as it was.

    Raises:
        IsADirectoryError: ``path`` is a folder.
        OSError: the folder cannot be written.
    """
    path = Path(path)
    if path.is_dir():
        raise IsADirectoryError(errno.EISDIR, "it is a folder", str(path))
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{path.name[:100]}.", suffix=f".tmp{path.suffix[:20]}", dir=path.parent)
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        mode = stat.S_IMODE(path.stat().st_mode) if path.exists() and not path.is_symlink() else 0o666 & ~umask()
        os.chmod(tmp, mode)
        with open(tmp, "r+b") as f:  # Windows' fsync needs a handle open for writing
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        with suppress(OSError):  # left only when the block or the rename failed
            tmp.unlink(missing_ok=True)
