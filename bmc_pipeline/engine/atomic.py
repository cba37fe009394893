"""Crash-safe file writes: temporary name, fsync, rename, fsync of the directory.

This is the promise every published file rests on: a reader sees the old file or the whole new
one, never a part, whatever happens to the process or the machine in between. It is written here
once and used for manifests, payload files, blobs, exports, key files, token files, the audit
log's head and files fetched from the remote copy.
"""

from __future__ import annotations

import contextlib
import os
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

TMP_PREFIX = ".tmp-"  # rotate and the next backup recognise leftovers by it


def fsync_dir(path: Path) -> None:
    """Make a rename or unlink in ``path`` durable (a no-op where directories cannot be opened)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def temporary_name(path: Path) -> Path:
    """A fresh hidden name beside ``path``; two writers of one file never share it."""
    return path.with_name(f"{TMP_PREFIX}{path.name}-{secrets.token_hex(4)}")


@contextlib.contextmanager
def atomic_write(path: Path, *, mode: int = 0o600, sync_dir: bool = True) -> Iterator[BinaryIO]:
    """Write ``path`` as a whole or not at all.

    The body writes to a temporary file created with ``mode`` (never wider, whatever the umask
    said earlier); on success it is flushed, fsynced and renamed over ``path``; on any exception
    the temporary file is removed and ``path`` is untouched.
    """
    tmp = temporary_name(path)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        with os.fdopen(fd, "wb") as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, mode)
        tmp.replace(path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    if sync_dir:
        fsync_dir(path.parent)


def write_atomic(path: Path, data: bytes, *, mode: int = 0o600) -> None:
    """``atomic_write`` of bytes already in memory."""
    with atomic_write(path, mode=mode) as fh:
        fh.write(data)


__all__ = ["TMP_PREFIX", "atomic_write", "fsync_dir", "temporary_name", "write_atomic"]
