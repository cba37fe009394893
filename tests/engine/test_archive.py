"""The archive format: lossless for every BSON type, and every kind of damage is detected."""

from __future__ import annotations

import io
import os
import subprocess
import sys
import uuid
from datetime import datetime, timezone
from pathlib import Path

import bson
import pytest
import zstandard
from bson import (
    Binary,
    Code,
    Decimal128,
    Int64,
    MaxKey,
    MinKey,
    ObjectId,
    Regex,
    Timestamp,
)
from bson.binary import UuidRepresentation
from bson.codec_options import CodecOptions

from bmc_pipeline.engine.archive import ArchiveReader, ArchiveWriter
from bmc_pipeline.engine.crypto import Key, KeyRing
from bmc_pipeline.engine.errors import IntegrityError, KeyConfigError

SEG = 4096  # small segments so that tests cross many segment boundaries


def every_type_documents() -> list[bytes]:
    opts = CodecOptions(uuid_representation=UuidRepresentation.STANDARD)
    docs = [
        {"_id": ObjectId(), "oid": ObjectId()},
        {"_id": 1, "dt_ms": datetime(2026, 11, 25, 2, 0, 0, 123000, tzinfo=timezone.utc)},
        {
            "_id": 2,
            "before_1970": datetime(1931, 5, 17, 8, 30, 0, 1000),
            "after_2100": datetime(2150, 1, 1),
        },
        {
            "_id": 3,
            "dec": Decimal128("1234567890.123456789012345678901234"),
            "dec_nan": Decimal128("NaN"),
        },
        {
            "_id": 4,
            "b0": Binary(b"\x00\x01\xff", 0),
            "b3": Binary(os.urandom(16), 3),
            "b4": Binary(os.urandom(16), 4),
            "b5": Binary(os.urandom(16), 5),
            "b128": Binary(b"user", 128),
        },
        {"_id": 5, "uuid": uuid.UUID("12345678-1234-5678-1234-567812345678")},
        {
            "_id": 6,
            "i32": 2**31 - 1,
            "i32neg": -(2**31),
            "i64": Int64(2**63 - 1),
            "i64small": Int64(1),
        },
        {
            "_id": 7,
            "nan": float("nan"),
            "inf": float("inf"),
            "ninf": float("-inf"),
            "negz": -0.0,
            "d": 1.5,
        },
        {"_id": 8, "nul": "a\x00b", "astral": "🙂 𝄞 Ñandú", "empty": ""},
        {"_id": 9, "re": Regex("^cot.*$", "imsx"), "ts": Timestamp(1764036000, 7)},
        {
            "_id": 10,
            "min": MinKey(),
            "max": MaxKey(),
            "code": Code("function(){return 1}"),
            "code_scope": Code("function(){return x}", {"x": 1}),
        },
        {"_id": 11, "none": None, "t": True, "f": False},
        {"_id": 12, "nested": {"a": {"b": {"c": [1, [2, [3, {"d": []}]]]}}}, "arr": [[], [[]], {}]},
        {"_id": 13, "clé_ñ": 1, "键": 2, "ключ": 3, "$dollar": 4, "dot.key": 5},
        {"_id": Int64(14), "dup_field_order": {"z": 1, "a": 2}},
    ]
    return [bson.encode(d, codec_options=opts) for d in docs]


def write(docs: list[bytes], keyring: KeyRing, seg: int = SEG) -> bytes:
    buf = io.BytesIO()
    w = ArchiveWriter(buf, keyring, segment_size=seg)
    for d in docs:
        w.write_document(d)
    w.close()
    return buf.getvalue()


def read_all(data: bytes, keyring: KeyRing) -> list[bytes]:
    r = ArchiveReader(io.BytesIO(data), keyring, name="test.bson.zst.enc")
    return list(r.documents())


def test_round_trip_is_byte_identical_for_every_bson_type(keyring: KeyRing) -> None:
    docs = every_type_documents()
    assert read_all(write(docs, keyring), keyring) == docs


def test_round_trip_of_empty_collection(keyring: KeyRing) -> None:
    data = write([], keyring)
    r = ArchiveReader(io.BytesIO(data), keyring)
    assert list(r.documents()) == []
    assert r.stats.documents == 0


def test_round_trip_of_document_near_16_mb(keyring: KeyRing) -> None:
    big = bson.encode({"_id": 1, "blob": Binary(os.urandom(16 * 1024 * 1024 - 100))})
    assert len(big) > 16_000_000
    docs = [bson.encode({"_id": 0}), big, bson.encode({"_id": 2})]
    assert read_all(write(docs, keyring, seg=1 << 20), keyring) == docs


def test_stats_match_between_writer_and_reader(keyring: KeyRing) -> None:
    docs = every_type_documents() * 50
    buf = io.BytesIO()
    w = ArchiveWriter(buf, keyring, segment_size=SEG)
    w.write_batch(b"".join(docs))
    ws = w.close()
    r = ArchiveReader(io.BytesIO(buf.getvalue()), keyring)
    assert list(r.documents()) == docs
    assert r.stats == ws
    assert ws.documents == len(docs)
    assert ws.stored_bytes == len(buf.getvalue())


# -- damage ---------------------------------------------------------------------------------------
@pytest.fixture
def archive(keyring: KeyRing) -> bytes:
    docs = [bson.encode({"_id": i, "text": os.urandom(300).hex()}) for i in range(200)]
    data = write(docs, keyring)
    assert len(data) > 10 * (SEG + 16)  # enough segments to damage the middle
    return data


def header_size(data: bytes) -> int:
    return 6 + 1 + 1 + 4 + 1 + data[12] + 32 + 7 + 16


def flip(data: bytes, pos: int) -> bytes:
    b = bytearray(data)
    b[pos] ^= 0x01
    return bytes(b)


def expect_error(data: bytes, keyring: KeyRing, *words: str) -> str:
    with pytest.raises(IntegrityError) as exc:
        read_all(data, keyring)
    msg = str(exc.value)
    for w in words:
        assert w in msg, msg
    return msg


@pytest.mark.parametrize("pos", [0, 6, 7, 9, 13, 20, 40, 60])
def test_flipped_bit_in_header_is_detected(archive: bytes, keyring: KeyRing, pos: int) -> None:
    # positions cover the magic, version, compression, segment size, key id, salt, prefix
    if pos >= header_size(archive):
        pytest.skip("position past the header")
    damaged = flip(archive, pos)
    try:
        read_all(damaged, keyring)
    except IntegrityError as exc:
        assert "test.bson.zst.enc" in str(exc)
    except KeyConfigError as exc:  # a flipped bit in the key id names a key that is not there
        assert "not in the configured key ring" in str(exc)
    else:
        pytest.fail("a flipped header bit went unnoticed")


def test_flipped_bit_in_header_tag_is_detected(archive: bytes, keyring: KeyRing) -> None:
    expect_error(flip(archive, header_size(archive) - 1), keyring, "header does not authenticate")


def test_flipped_bit_in_any_segment_is_detected(archive: bytes, keyring: KeyRing) -> None:
    hs, seg = header_size(archive), SEG + 16
    n_segments = -(-(len(archive) - hs) // seg)
    for i in range(n_segments):
        pos = hs + i * seg + 100
        if pos >= len(archive):
            pos = len(archive) - 20
        expect_error(flip(archive, pos), keyring, f"segment {i}", "does not authenticate")


def test_flipped_bit_in_a_tag_is_detected(archive: bytes, keyring: KeyRing) -> None:
    hs, seg = header_size(archive), SEG + 16
    expect_error(
        flip(archive, hs + 2 * seg + seg - 1), keyring, "segment 2", "does not authenticate"
    )


def test_truncation_at_segment_boundary_is_detected(archive: bytes, keyring: KeyRing) -> None:
    hs, seg = header_size(archive), SEG + 16
    expect_error(archive[: hs + 3 * seg], keyring, "truncated", "segment 2")


def test_truncation_inside_a_segment_is_detected(archive: bytes, keyring: KeyRing) -> None:
    hs, seg = header_size(archive), SEG + 16
    expect_error(archive[: hs + 3 * seg + 500], keyring, "segment 3", "cut inside")


def test_truncation_after_header_is_detected(archive: bytes, keyring: KeyRing) -> None:
    expect_error(archive[: header_size(archive)], keyring, "truncated", "after the header")


def test_swapped_segments_are_detected(archive: bytes, keyring: KeyRing) -> None:
    hs, seg = header_size(archive), SEG + 16
    s = [archive[hs + i * seg : hs + (i + 1) * seg] for i in range(4)]
    swapped = archive[:hs] + s[0] + s[2] + s[1] + s[3] + archive[hs + 4 * seg :]
    expect_error(swapped, keyring, "reordered")


def test_appended_bytes_are_detected(archive: bytes, keyring: KeyRing) -> None:
    # The final segment is short here, so the reader cannot tell where it ended; validate compares
    # the size with the manifest and says exactly how many bytes were added (test_validate.py).
    expect_error(archive + b"extra bytes", keyring, "appended")


def test_wrong_key_is_reported_as_such(archive: bytes) -> None:
    other = KeyRing([Key(os.urandom(32))])
    with pytest.raises(KeyConfigError, match="not in the configured key ring"):
        read_all(archive, other)


def test_no_key_is_refused_with_instructions() -> None:
    with pytest.raises(KeyConfigError, match="bmc-backup keygen"):
        KeyRing([])


def test_file_of_zeros_is_not_an_archive(keyring: KeyRing) -> None:
    expect_error(b"\x00" * 5000, keyring, "not a bmc-pipeline archive")


def test_empty_file_is_not_an_archive(keyring: KeyRing) -> None:
    expect_error(b"", keyring, "not a bmc-pipeline archive", "empty")


def test_rotated_keyring_reads_archives_of_the_old_key(archive: bytes, key: Key) -> None:
    rotated = KeyRing([Key(os.urandom(32)), key])
    assert len(read_all(archive, rotated)) == 200


def test_documents_straddling_chunk_boundaries_at_every_offset(keyring: KeyRing) -> None:
    # incompressible payloads of random sizes with small segments: decompressed chunks end at
    # arbitrary offsets, also inside a document's 4-byte length prefix
    import random

    rng = random.Random(5)
    docs = [
        bson.encode({"_id": i, "b": Binary(os.urandom(rng.randint(0, 3000)))}) for i in range(3000)
    ]
    data = write(docs, keyring, seg=4096)
    r = ArchiveReader(io.BytesIO(data), keyring)
    batches = [bytes(b) for b in r.raw_batches()]
    assert b"".join(batches) == b"".join(docs)
    assert r.stats.documents == 3000
    assert read_all(data, keyring) == docs


def test_a_reader_stopped_early_leaves_no_hashing_thread(keyring: KeyRing) -> None:
    import threading

    out = io.BytesIO()
    w = ArchiveWriter(out, keyring, segment_size=4096)
    for i in range(2000):
        w.write_batch(bson.encode({"i": i, "pad": "x" * 200}))
    w.close()
    batches = ArchiveReader(io.BytesIO(out.getvalue()), keyring).raw_batches()
    next(batches)
    batches.close()
    assert not [t for t in threading.enumerate() if t.name.startswith("archive-sha256")]


BOMB = """
import sys
from bmc_pipeline.engine.archive import ArchiveReader
from bmc_pipeline.engine.crypto import Key, KeyRing
from bmc_pipeline.engine.errors import IntegrityError
keyring = KeyRing([Key(bytes.fromhex(sys.argv[2]))])
try:
    with open(sys.argv[1], "rb") as fh:
        for _ in ArchiveReader(fh, keyring, name="bomb").raw_batches():
            pass
    print("read")
except IntegrityError as exc:
    print("refused:", exc.reason)
# VmHWM: this process's own peak (ru_maxrss would include the parent's, kept across exec)
hwm = next(line for line in open("/proc/self/status") if line.startswith("VmHWM:"))
print(int(hwm.split()[1]) // 1024)
"""


def _crafted(keyring: KeyRing, zstd_stream: bytes) -> bytes:
    """An archive sealed with the key around a zstd stream of the test's choosing (what someone
    holding the key could write; the writer itself only seals what it compressed)."""
    out = io.BytesIO()
    seg = 1 << 20  # the default: the whole stream in one segment
    w = ArchiveWriter(out, keyring, level=3, segment_size=seg)
    for i in range(0, len(zstd_stream), seg):
        w._segment(zstd_stream[i : i + seg])
    w._emit(w._sealer.seal(w._pending or b"", last=True))
    return out.getvalue()


def test_an_archive_that_expands_a_thousandfold_is_read_in_bounded_memory(
    keyring: KeyRing, tmp_path: Path
) -> None:
    """50 KB that decompress to 1 GiB: the reader never holds more than a few MiB of it."""
    cobj = zstandard.ZstdCompressor(level=3).compressobj()
    zeros = b"\0" * (1 << 20)
    stream = b"".join(cobj.compress(zeros) for _ in range(1024)) + cobj.flush()
    bomb = tmp_path / "bomb.bson.zst.enc"
    bomb.write_bytes(_crafted(keyring, stream))
    assert bomb.stat().st_size < 100_000
    key = keyring.primary.material.hex()
    out = subprocess.run(
        [sys.executable, "-c", BOMB, str(bomb), key], capture_output=True, text=True, check=True
    ).stdout.split()
    assert out[:2] == ["refused:", "bad-bson"]  # zeros are no BSON: found in the first chunk
    assert int(out[2]) < 400, f"peak memory {out[2]} MiB"  # the whole GiB was never held


def test_an_archive_that_expands_past_its_declared_size_is_refused(keyring: KeyRing) -> None:
    docs = [bson.encode({"_id": i, "pad": "x" * 1000}) for i in range(2000)]
    data = write(docs, keyring)
    declared = sum(len(d) for d in docs)  # what the manifest says the archive holds
    exact = ArchiveReader(io.BytesIO(data), keyring, declared_raw=declared)
    assert len(list(exact.documents())) == 2000
    reader = ArchiveReader(io.BytesIO(data), keyring, declared_raw=declared - 1)
    with pytest.raises(IntegrityError, match="expands past its declared size") as refused:
        list(reader.documents())
    assert refused.value.reason == "oversized"
