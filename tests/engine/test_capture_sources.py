"""The change sources without a server: change stream events and oplog entries as MongoDB
records them, turned into captured changes; resume and lost history of a change stream."""

from __future__ import annotations

import os
from datetime import datetime, timezone
from typing import Any

import bson
import pytest
from bson import ObjectId, Timestamp
from bson.raw_bson import RawBSONDocument
from pymongo.errors import OperationFailure

from bmc_pipeline.engine.capture.changes import DELETE, DROP, PUT, parse_record
from bmc_pipeline.engine.capture.sources import (
    RAW,
    ChangeStreamSource,
    HistoryLost,
    event_changes,
    oplog_changes,
)

DB = "bmc-cotizaciones"
WALL = datetime(2026, 12, 1, 10, 0, 0, 123000, tzinfo=timezone.utc)
OID = ObjectId("6b0f102c547eeafd12f42b91")


def raw(doc: dict[str, Any]) -> RawBSONDocument:
    return bson.decode(bson.encode(doc), codec_options=RAW)


def event(kind: str, **fields: Any) -> RawBSONDocument:
    """A change stream event shaped as MongoDB 7 sends it (fields trimmed to what is read)."""
    base = {
        "_id": {"_data": "8267A1B2C3000000012B022C0100296E5A1004"},
        "operationType": kind,
        "clusterTime": Timestamp(1796149292, 3),
        "wallTime": WALL.replace(tzinfo=None),
        "ns": {"db": DB, "coll": "quotes"},
    }
    base.update(fields)
    return raw(base)


def test_change_stream_events_become_puts_deletes_and_drops() -> None:
    doc = {"_id": OID, "quote_id": "COT-1", "total": 1200}
    inserted = list(event_changes(event("insert", fullDocument=doc, documentKey={"_id": OID}), DB))
    assert [(c.op, c.collection, c.at) for c in inserted] == [(PUT, "quotes", WALL)]
    assert bson.decode(inserted[0].raw) == doc
    updated = event(
        "update",
        fullDocument={**doc, "total": 1300},
        documentKey={"_id": OID},
        updateDescription={"updatedFields": {"total": 1300}, "removedFields": []},
    )
    assert bson.decode(next(event_changes(updated, DB)).raw)["total"] == 1300
    # updateLookup found nothing: the document was deleted since, and its delete event follows
    assert (
        list(event_changes(event("update", fullDocument=None, documentKey={"_id": OID}), DB)) == []
    )
    (deleted,) = event_changes(event("delete", documentKey={"_id": OID}), DB)
    assert deleted.op == DELETE and bson.decode(deleted.raw) == {"_id": OID}
    (dropped,) = event_changes(event("drop"), DB)
    assert dropped.op == DROP and dropped.collection == "quotes"
    other_db = event("insert", ns={"db": "other", "coll": "x"}, fullDocument=doc)
    assert list(event_changes(other_db, DB)) == []
    # no wallTime (servers before 6.0): the cluster time's second
    old = raw({"operationType": "delete", "clusterTime": Timestamp(1796149292, 3),
               "ns": {"db": DB, "coll": "quotes"}, "documentKey": {"_id": 1}})  # fmt: skip
    assert next(event_changes(old, DB)).at == datetime.fromtimestamp(1796149292, timezone.utc)


def test_a_change_survives_its_record() -> None:
    doc = {"_id": "c1", "messages": [{"message_id": "m1"}], "n": 1}
    (change,) = event_changes(event("replace", fullDocument=doc, documentKey={"_id": "c1"}), DB)
    back = parse_record("quotes", change.record())
    assert back == change


def oplog_entry(op: str, ns: str, o: dict[str, Any], **more: Any) -> RawBSONDocument:
    return raw({"op": op, "ns": ns, "ts": Timestamp(1796149292, 7), "o": o,
                "wall": WALL.replace(tzinfo=None), **more})  # fmt: skip


class NoLookups:
    """A database that fails the test if an entry needs a document read."""

    def __getitem__(self, name: str) -> Any:
        raise AssertionError(f"read of {name} not expected")


def test_oplog_entries_of_both_servers() -> None:
    ns = f"{DB}.conversations"
    (ins,) = oplog_changes(oplog_entry("i", ns, {"_id": "a", "x": 1}), DB, NoLookups())
    assert ins.op == PUT and bson.decode(ins.raw) == {"_id": "a", "x": 1}
    # FerretDB: an update is the whole new document under $set
    post = oplog_entry("u", ns, {"$v": 1, "$set": {"_id": "a", "x": 2}}, o2={"_id": "a"})
    (upd,) = oplog_changes(post, DB, NoLookups())
    assert bson.decode(upd.raw) == {"_id": "a", "x": 2}
    (gone,) = oplog_changes(oplog_entry("d", ns, {"_id": "a"}), DB, NoLookups())
    assert gone.op == DELETE
    # MongoDB: drops and renames are commands; transactions arrive as applyOps
    (drop,) = oplog_changes(oplog_entry("c", f"{DB}.$cmd", {"drop": "quotes"}), DB, NoLookups())
    assert (drop.op, drop.collection) == (DROP, "quotes")
    rename = oplog_entry(
        "c", f"{DB}.$cmd", {"renameCollection": f"{DB}.sessions", "to": f"{DB}.s2"}
    )
    assert [(c.op, c.collection) for c in oplog_changes(rename, DB, NoLookups())] == [
        (DROP, "sessions")
    ]
    txn = oplog_entry("c", "admin.$cmd", {"applyOps": [
        {"op": "i", "ns": ns, "o": {"_id": "t1"}, "ts": Timestamp(1796149292, 7)},
        {"op": "d", "ns": ns, "o": {"_id": "t0"}, "ts": Timestamp(1796149292, 7)},
    ]})  # fmt: skip
    assert [c.op for c in oplog_changes(txn, DB, NoLookups())] == [PUT, DELETE]
    for skipped in (oplog_entry("n", "", {"msg": "periodic noop"}),
                    oplog_entry("i", "other.x", {"_id": 1}),
                    oplog_entry("i", f"{DB}.system.views", {"_id": 1})):  # fmt: skip
        assert list(oplog_changes(skipped, DB, NoLookups())) == []


def test_a_delta_update_reads_the_document_it_names() -> None:
    ns = f"{DB}.conversations"
    delta = oplog_entry("u", ns, {"$v": 2, "diff": {"u": {"x": 3}}}, o2={"_id": "a"})

    class Coll:
        def with_options(self, **_: Any) -> Coll:
            return self

        def find_one(self, flt: dict[str, Any]) -> RawBSONDocument | None:
            return raw({"_id": flt["_id"], "x": 3}) if flt["_id"] == "a" else None

    class Db:
        def __getitem__(self, name: str) -> Coll:
            return Coll()

    (c,) = oplog_changes(delta, DB, Db())
    assert bson.decode(c.raw) == {"_id": "a", "x": 3}


class FakeStream:
    """Replays recorded events; raises the recorded error once they run out, if given."""

    def __init__(self, events: list[RawBSONDocument], error: OperationFailure | None = None):
        self.events, self.error = list(events), error
        self.resume_token: dict[str, Any] | None = None

    def try_next(self) -> RawBSONDocument | None:
        if self.events:
            e = self.events.pop(0)
            self.resume_token = {"_data": e["_id"]["_data"]}
            return e
        if self.error is not None:
            raise self.error
        return None


class FakeDb:
    def __init__(self, stream: FakeStream) -> None:
        self.stream = stream
        self.kwargs: dict[str, Any] = {}

    def watch(self, **kwargs: Any) -> FakeStream:
        self.kwargs = kwargs
        return self.stream


def source_with(stream: FakeStream) -> tuple[ChangeStreamSource, FakeDb]:
    fake = FakeDb(stream)

    class Client:
        def get_database(self, name: str, **_: Any) -> FakeDb:
            return fake

    return ChangeStreamSource(Client(), DB), fake


def test_change_stream_source_keeps_the_first_event_and_its_resume_token() -> None:
    doc = {"_id": 1, "v": 1}
    src, fake = source_with(FakeStream([event("insert", fullDocument=doc, documentKey={"_id": 1}),
                                        event("delete", documentKey={"_id": 1})]))  # fmt: skip
    src.open({"token": {"_data": "82AB"}}, None)
    assert fake.kwargs["resume_after"] == {"_data": "82AB"}
    assert fake.kwargs["full_document"] == "updateLookup"
    changes = src.poll(0.1)
    assert [c.op for c in changes] == [PUT, DELETE] and src.caught_up
    assert src.resume_token() == {"token": {"_data": "8267A1B2C3000000012B022C0100296E5A1004"}}


def test_change_stream_history_lost_is_error_286() -> None:
    lost = OperationFailure("Resume of change stream was not possible", code=286)
    src, _ = source_with(FakeStream([], lost))
    with pytest.raises(HistoryLost, match="cannot resume"):
        src.open({"token": {"_data": "82AB"}}, None)


@pytest.mark.skipif(
    "replicaSet=" not in os.environ.get("MONGODB_URI", ""),
    reason="change streams need MONGODB_URI naming a MongoDB replica set (?replicaSet=...); "
    "their code is tested above with recorded events",
)
def test_change_streams_against_a_replica_set() -> None:  # pragma: no cover - needs MongoDB
    from pymongo import MongoClient

    from bmc_pipeline.engine.capture.sources import CHANGE_STREAM, detect_source

    uri = os.environ["MONGODB_URI"]
    client: MongoClient[Any] = MongoClient(uri)
    db = client["bmc_capture_test"]
    src = detect_source(client, db.name, uri)
    assert src.name == CHANGE_STREAM
    src.open(None, None)
    db.quotes.insert_one({"_id": "x", "v": 1})
    db.quotes.delete_one({"_id": "x"})
    seen: list[str] = []
    for _ in range(20):
        seen += [c.op for c in src.poll(0.5)]
        if len(seen) >= 2:
            break
    assert seen[:2] == [PUT, DELETE]
    client.drop_database(db.name)
