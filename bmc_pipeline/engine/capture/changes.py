"""One captured change, as continuous capture stores it and as a restore replays it.

A change is a whole document (``put``: insert, replace, or update given as its post-image), an id
(``delete``) or the end of a collection (``drop``). Replaying puts as upserts and deletes by id is
idempotent: a change applied twice, or a segment repeated after a crash, leaves the same state.

In a segment's archive each change is the BSON document ``{"at": <date>, "op": "p"|"d"|"x",
"o": <document or {"_id": ...}>}`` (docs/FORMAT.md), ``at`` being the server's wall-clock time of
the write, to the millisecond.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

import bson
from bson.raw_bson import RawBSONDocument

from bmc_pipeline.engine.chain import DROPPED, Change
from bmc_pipeline.engine.rawbson import id_document, id_element

PUT, DELETE, DROP = "p", "d", "x"
_RAW: bson.CodecOptions[RawBSONDocument] = bson.CodecOptions(
    document_class=RawBSONDocument, tz_aware=True
)


@dataclass(frozen=True)
class CapturedChange:
    """A change to ``collection`` at ``at`` (UTC). ``raw`` is the document for a put, the
    ``{"_id": ...}`` document for a delete, and empty for a drop."""

    collection: str
    op: str
    at: datetime
    raw: bytes

    def record(self) -> bytes:
        """The change as stored in a segment."""
        body: dict[str, Any] = {"at": self.at, "op": self.op}
        if self.op != DROP:
            body["o"] = RawBSONDocument(self.raw)
        return bson.encode(body)

    @classmethod
    def put(cls, collection: str, at: datetime, raw: bytes) -> CapturedChange:
        return cls(collection, PUT, at, raw)

    @classmethod
    def delete(cls, collection: str, at: datetime, id_doc: bytes) -> CapturedChange:
        return cls(collection, DELETE, at, id_document(id_element(id_doc)))

    @classmethod
    def drop(cls, collection: str, at: datetime) -> CapturedChange:
        return cls(collection, DROP, at, b"")


def parse_record(collection: str, raw: bytes) -> CapturedChange:
    """Inverse of :meth:`CapturedChange.record`."""
    doc = bson.decode(raw, codec_options=_RAW)
    at = doc["at"]
    if at.tzinfo is None:
        at = at.replace(tzinfo=timezone.utc)
    op = str(doc["op"])
    if op not in (PUT, DELETE, DROP):
        raise ValueError(f"unknown change op {op!r}")
    body = doc.get("o")
    return CapturedChange(collection, op, at, b"" if body is None else bytes(body.raw))


def as_merge_changes(changes: Iterable[CapturedChange]) -> Iterator[Change]:
    """Captured changes as the (id, document or None) pairs of a restore's newest-first merge."""
    for c in changes:
        if c.op == PUT:
            yield id_element(c.raw), c.raw
        elif c.op == DELETE:
            yield id_element(c.raw), None
        else:
            yield DROPPED, None


def wall_ms(at: datetime) -> datetime:
    """``at`` in UTC, cut to the millisecond (what BSON dates hold)."""
    if at.tzinfo is None:
        at = at.replace(tzinfo=timezone.utc)
    at = at.astimezone(timezone.utc)
    return at.replace(microsecond=at.microsecond // 1000 * 1000)
