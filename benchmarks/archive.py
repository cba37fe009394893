"""Archive writer/reader throughput next to the floor, and peak memory at two input sizes.

    python -m benchmarks.archive [--mb 50] [--repeat 3]

The floor is the same work with no framing: zstd at the same level over the same bytes, AES-256-GCM
over the compressed output in pieces of the segment size, SHA-256 of the plaintext and of the
ciphertext. The writer and reader should reach at least 0.8 of it. Peak memory is measured in child
processes that stream 1x and 10x the input through the writer and the reader; it should not grow.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import os
import time
from collections.abc import Iterator

import bson
import zstandard
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from benchmarks.common import in_child, peak_rss_mib
from bmc_pipeline.engine.archive import ArchiveReader, ArchiveWriter
from bmc_pipeline.engine.crypto import Key, KeyRing
from bmc_pipeline.engine.sample_data import generate

SEGMENT = 1 << 20
LEVEL = 3


def sample_batches(mb: int) -> list[bytes]:
    """About ``mb`` MB of the chatbot's documents as raw BSON, in batches like a cursor's."""
    out, batch, size, n = [], [], 0, 0
    while size < mb * 1_000_000:
        for _, doc in generate(2000, seed=n):
            raw = bson.encode(doc)
            batch.append(raw)
            size += len(raw)
        n += 1
        out.append(b"".join(batch))
        batch = []
    return out


def floor_write(batches: list[bytes], key: bytes) -> bytes:
    aead = AESGCM(key)
    plain, stored = hashlib.sha256(), hashlib.sha256()
    chunker = zstandard.ZstdCompressor(level=LEVEL).chunker(chunk_size=SEGMENT)
    out = io.BytesIO()
    nonce = os.urandom(12)
    for b in batches:
        plain.update(b)
        for c in chunker.compress(b):
            ct = aead.encrypt(nonce, c, None)
            stored.update(ct)
            out.write(ct)
    for c in chunker.finish():  # type: ignore[no-untyped-call]
        ct = aead.encrypt(nonce, c, None)
        stored.update(ct)
        out.write(ct)
    return out.getvalue()


def floor_read(batches: list[bytes], key: bytes) -> None:
    """Decrypt + decompress + hash the same payload, with the pieces' boundaries known."""
    aead = AESGCM(key)
    nonce = os.urandom(12)
    cts: list[bytes] = []
    chunker = zstandard.ZstdCompressor(level=LEVEL).chunker(chunk_size=SEGMENT)
    for b in batches:
        cts.extend(aead.encrypt(nonce, c, None) for c in chunker.compress(b))
    cts.extend(aead.encrypt(nonce, c, None) for c in chunker.finish())  # type: ignore[no-untyped-call]
    t0 = time.perf_counter()
    dec = zstandard.ZstdDecompressor().decompressobj()
    plain, stored = hashlib.sha256(), hashlib.sha256()
    for ct in cts:
        stored.update(ct)
        plain.update(dec.decompress(aead.decrypt(nonce, ct, None)))
    floor_read.elapsed = time.perf_counter() - t0  # type: ignore[attr-defined]


def timed(fn: object, *args: object) -> float:
    t0 = time.perf_counter()
    fn(*args)  # type: ignore[operator]
    return time.perf_counter() - t0


def ours_write(batches: list[bytes], ring: KeyRing) -> bytes:
    out = io.BytesIO()
    w = ArchiveWriter(out, ring, level=LEVEL, segment_size=SEGMENT)
    for b in batches:
        w.write_batch(b)
    w.close()
    return out.getvalue()


def ours_read(data: bytes, ring: KeyRing) -> None:
    """The reader's batch API: whole documents in buffers, each length and terminator checked."""
    for _ in ArchiveReader(io.BytesIO(data), ring).raw_batches():
        pass


def ours_read_documents(data: bytes, ring: KeyRing) -> None:
    """One bytes object per document (what a caller that looks at each document pays)."""
    for _ in ArchiveReader(io.BytesIO(data), ring).documents():
        pass


def _stream(batches: list[bytes], times: int) -> Iterator[bytes]:
    for _ in range(times):
        yield from batches


def memory_child(mb: int, times: int) -> None:
    """Stream ``times`` copies of the sample through writer then reader via a temp file."""
    import tempfile

    batches = sample_batches(mb)
    ring = KeyRing([Key(os.urandom(32))])
    base = peak_rss_mib()
    with tempfile.TemporaryFile() as fh:
        w = ArchiveWriter(fh, ring, level=LEVEL, segment_size=SEGMENT)
        for b in _stream(batches, times):
            w.write_batch(b)
        w.close()
        fh.seek(0)
        reader = ArchiveReader(fh, ring)
        for _ in reader.raw_batches():
            pass
        n = reader.stats.documents
    print(f"{n} {base:.1f} {peak_rss_mib():.1f}")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--mb", type=int, default=50)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--memory-child", nargs=2, type=int, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.memory_child:
        memory_child(*args.memory_child)
        return

    batches = sample_batches(args.mb)
    total = sum(len(b) for b in batches)
    key = os.urandom(32)
    ring = KeyRing([Key(key)])
    mb = total / 1e6
    print(
        f"input: {mb:.1f} MB of raw BSON ({sum(1 for b in batches for _ in [b])} batches), zstd level {LEVEL}, segments {SEGMENT} bytes"
    )

    fw = min(timed(floor_write, batches, key) for _ in range(args.repeat))
    ow = min(timed(ours_write, batches, ring) for _ in range(args.repeat))
    data = ours_write(batches, ring)
    frs = []
    for _ in range(args.repeat):
        floor_read(batches, key)
        frs.append(floor_read.elapsed)  # type: ignore[attr-defined]
    fr = min(frs)
    orr = min(timed(ours_read, data, ring) for _ in range(args.repeat))
    ord_ = min(timed(ours_read_documents, data, ring) for _ in range(args.repeat))
    print(f"stored: {len(data) / 1e6:.1f} MB (ratio {total / len(data):.2f})")
    print(f"write: floor {mb / fw:7.1f} MB/s   ours {mb / ow:7.1f} MB/s   ours/floor {fw / ow:.2f}")
    print(
        f"read:  floor {mb / fr:7.1f} MB/s   ours {mb / orr:7.1f} MB/s   ours/floor {fr / orr:.2f}"
    )
    print(
        f"read, one bytes object per document: {mb / ord_:7.1f} MB/s   ours/floor {fr / ord_:.2f}"
    )

    for times in (1, 10):
        n, base, peak = in_child("benchmarks.archive", "--memory-child", str(args.mb), str(times))
        print(
            f"memory: {times * mb:6.0f} MB streamed ({n} documents): peak RSS {float(peak):.0f} MiB "
            f"({float(base):.0f} MiB with the sample loaded, before streaming)"
        )


if __name__ == "__main__":
    main()
