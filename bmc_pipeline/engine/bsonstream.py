"""Concatenated BSON documents (the stream ``mongodump`` writes), split and checked in place.

Used on every buffer read from an archive, from the database (``find_raw_batches``) or from a
plan file: lengths and terminators are checked without decoding a document.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator

from bmc_pipeline.engine.errors import IntegrityError

# A BSON document is at most 16 MiB in MongoDB; anything far above that is corruption.
MAX_DOCUMENT_SIZE = 48 << 20
INT32 = struct.Struct("<i")


def bson_documents(buf: bytes | bytearray | memoryview, *, where: str = "") -> Iterator[bytes]:
    """Split a buffer of concatenated BSON documents; the buffer must end on a document boundary."""
    view = memoryview(buf)
    pos, end = 0, len(view)
    while pos < end:
        if end - pos < 5:
            raise IntegrityError(f"{where}: {end - pos} stray bytes after the last BSON document")
        size = int.from_bytes(view[pos : pos + 4], "little")
        if size < 5 or size > MAX_DOCUMENT_SIZE or pos + size > end or view[pos + size - 1] != 0:
            raise IntegrityError(
                f"{where}: malformed BSON document at offset {pos} (length {size})"
            )
        yield bytes(view[pos : pos + size])
        pos += size


def walk_documents(
    buf: bytes | bytearray | memoryview, where: str, base: int = 0, start: int = 0
) -> tuple[int, int]:
    """Walk document lengths from ``start``: (end of the last whole document, how many).

    Checks each length and terminator without copying anything; ``base`` is the stream offset of
    ``buf[start]`` for messages. Called on the decompressor's ``bytes`` rather than a memoryview
    of them: indexing and ``unpack_from`` on ``bytes`` take about half the time, and this loop is
    what separates the reader from its floor (docs/PERFORMANCE.md).
    """
    pos, n = start, 0
    last = len(buf) - 4
    unpack = INT32.unpack_from
    while pos <= last:
        (size,) = unpack(buf, pos)
        nxt = pos + size
        if size < 5 or size > MAX_DOCUMENT_SIZE:
            raise IntegrityError(
                f"{where}: malformed BSON document at offset {base + pos - start} (length {size})",
                reason="bad-bson",
            )
        if nxt > last + 4:
            break
        if buf[nxt - 1]:
            raise IntegrityError(
                f"{where}: BSON document at offset {base + pos - start} is not terminated",
                reason="bad-bson",
            )
        pos = nxt
        n += 1
    return pos, n


def count_documents(buf: bytes | bytearray | memoryview, *, where: str = "") -> int:
    """Count and check concatenated BSON documents; the buffer must end on a boundary."""
    pos, n = walk_documents(buf, where)
    if pos != len(buf):
        raise IntegrityError(f"{where}: {len(buf) - pos} stray bytes after the last BSON document")
    return n
