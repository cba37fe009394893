"""Streaming writer and reader of one archive file (format v1, specified in docs/FORMAT.md).

An archive holds a raw BSON document stream, the bytes ``mongodump`` writes, compressed with zstd
and sealed with AES-256-GCM in segments. Writer and reader both work in constant memory (about two
segments plus one zstd window), whatever the number of documents.
"""

from __future__ import annotations

import hashlib
import os
import struct
import sys
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import BinaryIO

import zstandard

if sys.version_info >= (3, 14):
    from compression.zstd import ZstdDecompressor, ZstdError
else:  # the same module, backported: output bounded per call, unlike zstandard's decompressobj
    from backports.zstd import ZstdDecompressor, ZstdError
from bmc_pipeline.engine.bsonstream import (
    INT32,
    MAX_DOCUMENT_SIZE,
    bson_documents,
    count_documents,
    walk_documents,
)
from bmc_pipeline.engine.crypto import (
    NONCE_PREFIX_SIZE,
    SALT_SIZE,
    TAG_SIZE,
    Key,
    KeyRing,
    SegmentOpener,
    SegmentSealer,
    derive_archive_keys,
    header_tag,
)
from bmc_pipeline.engine.errors import IntegrityError

MAGIC = b"BMCARC"
FORMAT_VERSION = 1
COMPRESSION_ZSTD = 1
DEFAULT_SEGMENT_SIZE = 1 << 20
MAX_CHUNK = 4 << 20  # the most plaintext one decompression step may produce
_FIXED = struct.Struct(">6sBBIB")  # magic, version, compression, segment size, key id length
ARCHIVE_SUFFIX = ".bson.zst.enc"


@dataclass(frozen=True)
class ArchiveHeader:
    """The authenticated header at the start of every archive."""

    version: int
    compression: int
    segment_size: int
    key_id: str
    salt: bytes
    nonce_prefix: bytes
    raw: bytes  # the header's bytes, tag included

    @property
    def size(self) -> int:
        return len(self.raw)


@dataclass(frozen=True)
class ArchiveStats:
    """What a writer wrote or a reader read, for the manifest and for validation."""

    documents: int
    raw_bytes: int
    stored_bytes: int
    sha256: str  # of the plaintext BSON stream
    stored_sha256: str  # of the file's bytes as stored
    key_id: str
    segments: int


class _BackgroundHasher:
    """SHA-256 updates on a second thread, in order, one at a time.

    ``hashlib`` releases the GIL while it hashes more than 2 KiB, so while one decompressed chunk
    is hashed the reader decompresses the next and walks its document lengths (Python work that
    the floor does not have). Only one update is in flight: memory stays at one chunk more than a
    plain loop, whatever the archive's size. The hashed objects are immutable ``bytes``;
    :meth:`drain` waits for the last update and is called before any digest is read.
    """

    MAX_IN_FLIGHT = 1

    def __init__(self) -> None:
        self._pool: ThreadPoolExecutor | None = None
        self._pending: deque[Future[None]] = deque()

    def update(self, h: hashlib._Hash, data: bytes) -> None:
        if self._pool is None:
            self._pool = ThreadPoolExecutor(1, thread_name_prefix="archive-sha256")
        while len(self._pending) >= self.MAX_IN_FLIGHT:
            self._pending.popleft().result()
        self._pending.append(self._pool.submit(h.update, data))

    def drain(self) -> None:
        while self._pending:
            self._pending.popleft().result()
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None


def _build_header(key: Key, segment_size: int, salt: bytes, prefix: bytes, mac_key: bytes) -> bytes:
    kid = key.key_id.encode("ascii")
    body = (
        _FIXED.pack(MAGIC, FORMAT_VERSION, COMPRESSION_ZSTD, segment_size, len(kid))
        + kid
        + salt
        + prefix
    )
    return body + header_tag(mac_key, body)


class ArchiveWriter:
    """Writes one archive to a binary file object, streaming.

    Feed it raw BSON (``write_batch`` for a buffer of whole documents, as
    ``Collection.find_raw_batches`` returns them); ``close`` seals the final segment and returns
    the statistics the manifest records. ``on_document`` sees each document's bytes once, so a
    caller can fold them into a state digest without a second pass.
    """

    def __init__(
        self,
        out: BinaryIO,
        keyring: KeyRing,
        *,
        level: int = 3,
        segment_size: int = DEFAULT_SEGMENT_SIZE,
        on_document: Callable[[bytes], None] | None = None,
        name: str = "archive",
    ) -> None:
        self._out = out
        self._name = name
        self._on_document = on_document
        key = keyring.primary
        salt, prefix = os.urandom(SALT_SIZE), os.urandom(NONCE_PREFIX_SIZE)
        aes_key, mac_key = derive_archive_keys(key, salt)
        self._sealer = SegmentSealer(aes_key, prefix)
        self._key_id = key.key_id
        self._plain_hash = hashlib.sha256()
        self._stored_hash = hashlib.sha256()
        self._stored = 0
        self._raw = 0
        self._docs = 0
        self._pending: bytes | None = None
        self._chunker = zstandard.ZstdCompressor(level=level).chunker(chunk_size=segment_size)
        self._closed = False
        self._emit(_build_header(key, segment_size, salt, prefix, mac_key))

    def _emit(self, data: bytes) -> None:
        self._out.write(data)
        self._stored_hash.update(data)
        self._stored += len(data)

    def _segment(self, chunk: bytes) -> None:
        # One segment is held back so the final one can be sealed with the last flag set.
        if self._pending is not None:
            self._emit(self._sealer.seal(self._pending, last=False))
        self._pending = chunk

    def write_batch(self, batch: bytes | bytearray | memoryview) -> int:
        """Append whole BSON documents; returns how many the batch held."""
        if self._on_document is not None:
            n = 0
            for n, doc in enumerate(bson_documents(batch, where=self._name), 1):  # noqa: B007
                self._on_document(doc)
        else:
            n = count_documents(batch, where=self._name)
        self._docs += n
        self._raw += len(batch)
        self._plain_hash.update(batch)
        for chunk in self._chunker.compress(batch):
            self._segment(chunk)
        return n

    def write_document(self, raw: bytes) -> None:
        self.write_batch(raw)

    def close(self) -> ArchiveStats:
        """Flush zstd, seal the final segment and return what was written."""
        if self._closed:
            raise RuntimeError("archive writer already closed")
        self._closed = True
        for chunk in self._chunker.finish():  # type: ignore[no-untyped-call]
            self._segment(chunk)
        self._emit(self._sealer.seal(self._pending or b"", last=True))
        return ArchiveStats(
            documents=self._docs,
            raw_bytes=self._raw,
            stored_bytes=self._stored,
            sha256=self._plain_hash.hexdigest(),
            stored_sha256=self._stored_hash.hexdigest(),
            key_id=self._key_id,
            segments=self._sealer.index,
        )


def read_header(inp: BinaryIO, *, name: str = "archive") -> ArchiveHeader:
    """Parse the header without a key (key id, sizes); authentication happens in ArchiveReader."""
    fixed = inp.read(_FIXED.size)
    if len(fixed) < _FIXED.size or not fixed.startswith(MAGIC):
        what = "is empty" if not fixed else "does not start with the BMCARC magic"
        raise IntegrityError(
            f"{name}: not a bmc-pipeline archive: the file {what}; it is corrupt or of another kind",
            path=name,
            reason="bad-magic",
        )
    _, version, compression, segment_size, kid_len = _FIXED.unpack(fixed)
    if version != FORMAT_VERSION:
        raise IntegrityError(
            f"{name}: archive format version {version} is not supported (this program reads "
            f"version {FORMAT_VERSION}); a newer program wrote it, or the header is corrupt",
            path=name,
            reason="bad-version",
        )
    if compression != COMPRESSION_ZSTD:
        raise IntegrityError(
            f"{name}: unknown compression id {compression} in the header; the header is corrupt",
            path=name,
            reason="bad-header",
        )
    rest_len = kid_len + SALT_SIZE + NONCE_PREFIX_SIZE + TAG_SIZE
    rest = inp.read(rest_len)
    if len(rest) < rest_len:
        raise IntegrityError(
            f"{name}: the file ends inside the header", path=name, reason="truncated-header"
        )
    try:
        key_id = rest[:kid_len].decode("ascii")
    except UnicodeDecodeError:
        raise IntegrityError(
            f"{name}: the key id in the header is not text; the header is corrupt",
            path=name,
            reason="bad-header",
        ) from None
    salt = rest[kid_len : kid_len + SALT_SIZE]
    prefix = rest[kid_len + SALT_SIZE : kid_len + SALT_SIZE + NONCE_PREFIX_SIZE]
    return ArchiveHeader(
        version=version,
        compression=compression,
        segment_size=segment_size,
        key_id=key_id,
        salt=salt,
        nonce_prefix=prefix,
        raw=fixed + rest,
    )


class ArchiveReader:
    """Reads and authenticates one archive, streaming.

    Iterate ``documents()`` (or ``batches()``) to the end; only then are ``stats`` final. Any
    failure raises :class:`IntegrityError` naming the file, the segment and what is wrong; no
    unauthenticated byte is ever yielded.
    """

    def __init__(
        self,
        inp: BinaryIO,
        keyring: KeyRing,
        *,
        name: str = "archive",
        declared_raw: int | None = None,
    ) -> None:
        self._in = inp
        self._name = name
        self._declared = declared_raw  # the manifest's raw_bytes, when there is one
        self.header = read_header(inp, name=name)
        key = keyring.get(self.header.key_id, what=name)
        aes_key, mac_key = derive_archive_keys(key, self.header.salt)
        body, tag = self.header.raw[:-TAG_SIZE], self.header.raw[-TAG_SIZE:]
        if header_tag(mac_key, body) != tag:
            raise IntegrityError(
                f"{name}: the header does not authenticate with key {key.key_id}: "
                "the header was changed or the file is corrupt",
                path=name,
                reason="bad-header-tag",
            )
        self._opener = SegmentOpener(aes_key, self.header.nonce_prefix)
        self._stored_hash = hashlib.sha256(self.header.raw)
        self._stored = self.header.size
        self._plain_hash = hashlib.sha256()
        self._raw = 0
        self._docs = 0
        self._segments = 0
        self._done = False
        self._hasher = _BackgroundHasher()

    def _fail(self, msg: str, reason: str) -> IntegrityError:
        return IntegrityError(f"{self._name}: {msg}", path=self._name, reason=reason)

    def _diagnose(self, ct: bytes, index: int, last: bool) -> IntegrityError:
        """Work out why segment ``index`` failed, to say something more useful than 'corrupt'."""
        if self._opener.open(ct, index, last=not last) is not None:
            if last:
                return self._fail(
                    f"truncated: the file ends after segment {index}, which is not the final "
                    "segment (the rest of the file is missing)",
                    "truncated",
                )
            return self._fail(
                f"bytes were appended after the final segment ({index})", "trailing-data"
            )
        for other in (index - 1, index + 1, index + 2):
            if other >= 0 and self._opener.open(ct, other, last=False) is not None:
                return self._fail(
                    f"segment at position {index} is segment {other}: segments were reordered",
                    "reordered",
                )
        seg = self.header.segment_size + TAG_SIZE
        if last and len(ct) < seg:
            detail = (
                "the file was cut inside this segment, had bytes appended after it, "
                "or its bytes were changed"
            )
        else:
            detail = "its bytes were changed"
        offset = self.header.size + index * seg
        return self._fail(
            f"segment {index} (at byte {offset}) does not authenticate: {detail}", "bad-segment"
        )

    def _plaintext_segments(self) -> Iterator[bytes]:
        seg = self.header.segment_size + TAG_SIZE
        cur = self._in.read(seg)
        if not cur:
            raise self._fail("truncated: the file ends right after the header", "truncated")
        index = 0
        while True:
            nxt = self._in.read(seg)
            last = not nxt
            pt = self._opener.open(cur, index, last=last)
            if pt is None:
                raise self._diagnose(cur, index, last)
            self._stored_hash.update(cur)  # small (one segment): not worth a hand-off
            self._stored += len(cur)
            self._segments += 1
            yield pt
            if last:
                return
            cur, index = nxt, index + 1

    def chunks(self) -> Iterator[bytes]:
        """Authenticated, decompressed plaintext in chunks (the raw BSON stream).

        Each chunk is at most :data:`MAX_CHUNK` bytes, however much a segment expands (a few
        kilobytes of zstd can stand for gigabytes of zeros), and past ``declared_raw`` the
        archive is refused: memory stays bounded and a crafted archive costs little work.
        """
        dec = ZstdDecompressor()
        try:
            for pt in self._plaintext_segments():
                data = pt
                while True:
                    if dec.eof:
                        if data or dec.unused_data:
                            raise self._fail(
                                "data follows the end of the compressed stream", "bad-zstd"
                            )
                        break
                    try:
                        out = dec.decompress(data, MAX_CHUNK)
                    except (ZstdError, EOFError) as exc:
                        raise self._fail(
                            f"payload does not decompress: {exc}", "bad-zstd"
                        ) from None
                    data = b""
                    if out:
                        self._raw += len(out)
                        if self._declared is not None and self._raw > self._declared:
                            raise self._fail(
                                f"expands past its declared size of {self._declared} bytes: the "
                                "archive was crafted or its manifest does not belong to it",
                                "oversized",
                            )
                        self._hasher.update(self._plain_hash, out)
                        yield out
                    if dec.needs_input:
                        break  # this segment is consumed
            if not dec.eof:
                raise self._fail("payload ends inside a zstd frame", "bad-zstd")
        finally:
            self._hasher.drain()  # also when the caller stops early: no thread is left behind
        self._done = True

    def raw_batches(self) -> Iterator[bytes | memoryview]:
        """Buffers of whole, checked BSON documents, as ``find_raw_batches`` gives them.

        This is the fast way to read: no Python object per document, and no copy of the
        decompressed chunks except for the one document that straddles two of them.
        """
        pending = b""
        offset = 0
        for chunk in self.chunks():
            start = 0
            if pending:
                # complete the document that began in the previous chunk
                if len(pending) < 4:
                    take = min(4 - len(pending), len(chunk))
                    pending += chunk[:take]
                    start = take
                    if len(pending) < 4:
                        continue
                size = INT32.unpack_from(pending, 0)[0]
                need = size - len(pending)
                if need > len(chunk) - start or need < 0:
                    if need < 0 or size > MAX_DOCUMENT_SIZE:
                        # raises: a bad length, found before gigabytes are gathered for it
                        walk_documents(pending, self._name, offset)
                    pending += chunk[start:]
                    continue
                doc = pending + chunk[start : start + need]
                walk_documents(doc, self._name, offset)
                self._docs += 1
                offset += len(doc)
                start += need
                pending = b""
                yield doc
            end, n = walk_documents(chunk, self._name, offset, start)
            if n:
                self._docs += n
                offset += end - start
                yield memoryview(chunk)[start:end]
            pending = chunk[end:]
        if pending:
            raise self._fail(
                f"the document stream ends inside a document ({len(pending)} bytes at offset "
                f"{offset})",
                "bad-bson",
            )

    def documents(self) -> Iterator[bytes]:
        """Each document's raw BSON bytes, in stored order."""
        for batch in self.raw_batches():
            yield from bson_documents(batch, where=self._name)

    def batches(self, max_bytes: int = 4 << 20) -> Iterator[list[bytes]]:
        """Documents grouped into lists of about ``max_bytes``, for batched writes."""
        batch: list[bytes] = []
        size = 0
        for doc in self.documents():
            batch.append(doc)
            size += len(doc)
            if size >= max_bytes:
                yield batch
                batch, size = [], 0
        if batch:
            yield batch

    @property
    def stats(self) -> ArchiveStats:
        if not self._done:
            raise RuntimeError("read the archive to the end before asking for its stats")
        return ArchiveStats(
            documents=self._docs,
            raw_bytes=self._raw,
            stored_bytes=self._stored,
            sha256=self._plain_hash.hexdigest(),
            stored_sha256=self._stored_hash.hexdigest(),
            key_id=self.header.key_id,
            segments=self._segments,
        )
