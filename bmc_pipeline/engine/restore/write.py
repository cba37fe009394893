"""Reading the target collection and writing to it, in batches, with transient-error retries.

Inserts go in as raw BSON; replacements as ``ReplaceOne`` upserts of the raw document (decoded
only for mongomock, which cannot take raw documents); deletions by ``_id`` lists.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import bson
from bson.raw_bson import RawBSONDocument
from pymongo import ReplaceOne

from bmc_pipeline.engine.bsonstream import bson_documents
from bmc_pipeline.engine.digest import StateDigest, document_hash
from bmc_pipeline.engine.mongo import insert_raw, is_mock, raw_batches, replace_batch, with_retries
from bmc_pipeline.engine.rawbson import decode_id, id_element
from bmc_pipeline.engine.spillmap import SpillMap

CODEC: bson.CodecOptions[dict[str, Any]] = bson.CodecOptions(
    tz_aware=True, datetime_conversion=bson.DatetimeConversion.DATETIME_AUTO
)
Log = Callable[[str], None]


def quiet(_: str) -> None:
    """A log that says nothing (the default where nobody is listening)."""


def split(batch: bytes) -> Iterator[bytes]:
    """The documents of one raw batch the server returned."""
    return bson_documents(batch, where="server batch")


def read_target(
    coll: Any, batch_size: int, spill_dir: Path | None = None
) -> tuple[SpillMap, StateDigest]:
    """The target's id -> content hash map and its state digest, in one read (the map spills
    into ``spill_dir`` past a size, so memory stays flat for any collection)."""
    state = SpillMap(directory=spill_dir)
    digest = StateDigest()

    def read() -> None:
        state.clear()
        digest.count = digest.total = 0
        for batch in raw_batches(coll, batch_size=batch_size):
            for raw in split(batch):
                h = document_hash(raw)
                state[id_element(raw)] = h
                digest.add_hash(h)

    with_retries(f"reading collection {coll.name!r}", read)
    return state, digest


def fetch_current(coll: Any, ids: list[Any]) -> dict[bytes, bytes]:
    """The current raw documents with these ids, by id element."""
    current: dict[bytes, bytes] = {}

    def fetch() -> None:
        current.clear()
        for batch in raw_batches(coll, {"_id": {"$in": ids}}, batch_size=max(len(ids), 1)):
            for raw in split(batch):
                current[id_element(raw)] = raw

    with_retries(f"reading documents of {coll.name!r}", fetch)
    return current


def insert(coll: Any, docs: list[bytes]) -> None:
    with_retries(f"inserting into {coll.name!r}", lambda: insert_raw(coll, docs))


def replace(coll: Any, docs: list[bytes]) -> None:
    """Upsert each document whole, by its ``_id``."""
    if is_mock(coll):
        for d in docs:
            doc = bson.decode(d, codec_options=CODEC)
            coll.replace_one({"_id": doc["_id"]}, doc, upsert=True)
        return

    def upsert(chunk: list[bytes]) -> None:
        ops: list[ReplaceOne[Any]] = [
            ReplaceOne({"_id": decode_id(id_element(d))}, RawBSONDocument(d), upsert=True)
            for d in chunk
        ]
        with_retries(f"replacing in {coll.name!r}", lambda: coll.bulk_write(ops, ordered=False))

    step = replace_batch(coll, len(docs))
    for i in range(0, len(docs), step):
        upsert(docs[i : i + step])


def delete_ids(coll: Any, ids: list[Any], batch_size: int) -> None:
    def delete(chunk: list[Any]) -> None:
        with_retries(
            f"deleting from {coll.name!r}", lambda: coll.delete_many({"_id": {"$in": chunk}})
        )

    for i in range(0, len(ids), batch_size):
        delete(ids[i : i + batch_size])


def in_batches(
    docs: Iterable[bytes],
    batch_size: int,
    write: Callable[[list[bytes]], None],
    progress: Callable[[int], None] | None = None,
) -> int:
    """Write ``docs`` ``batch_size`` at a time; returns how many were written."""
    n = 0
    buf: list[bytes] = []
    for raw in docs:
        buf.append(raw)
        if len(buf) >= batch_size:
            write(buf)
            n += len(buf)
            if progress:
                progress(len(buf))
            buf = []
    if buf:
        write(buf)
        n += len(buf)
        if progress:
            progress(len(buf))
    return n


class WriteProgress:
    """Logs 'written N/M documents' at most every two seconds, and at the end."""

    def __init__(self, total: int, log: Log) -> None:
        self.total, self.log = total, log
        self.done = 0
        self.next = time.monotonic() + 2.0

    def __call__(self, n: int) -> None:
        self.done += n
        if time.monotonic() >= self.next or self.done == self.total:
            pct = 100 * self.done // max(self.total, 1)
            self.log(f"written {self.done}/{self.total} documents ({pct} %)")
            self.next = time.monotonic() + 2.0
