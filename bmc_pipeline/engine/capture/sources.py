"""Where changes come from: the oplog, or change streams, and which of them a server offers.

* **Change streams** (MongoDB replica sets, Atlas): ``watch()`` on the database with the full
  document looked up for updates, started at an operation time or resumed from a stored token.
  Lost history is error 286 (``ChangeStreamHistoryLost``).
* **The oplog** (``local.oplog.rs``): tailed by timestamp with a tailable ``find`` (batch size 0)
  and ``getMore``, the only way the embedded FerretDB serves it. FerretDB's emulated oplog holds
  inserts, updates as the whole new document under ``$set``, and deletes (no drops, no index
  changes). An update in MongoDB's delta form is turned into a put by reading the document,
  which gives its version at that moment, not at the write. Lost history is a resume
  timestamp older than the oplog's oldest entry.
* A **standalone** server has neither: capture refuses and says what to enable.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from datetime import datetime, timezone
from typing import Any, Protocol

import bson
from bson import Timestamp
from bson.raw_bson import RawBSONDocument
from pymongo.errors import OperationFailure, PyMongoError

from bmc_pipeline.engine.capture.changes import CapturedChange, wall_ms
from bmc_pipeline.engine.errors import ConfigError

RAW: bson.CodecOptions[RawBSONDocument] = bson.CodecOptions(
    document_class=RawBSONDocument, tz_aware=True
)
HISTORY_LOST = (286, 280)  # ChangeStreamHistoryLost, ChangeStreamFatalError
OPLOG = "oplog"
CHANGE_STREAM = "change-stream"

STANDALONE = (
    "capture needs the server's change log, and {uri} is a standalone server without one. "
    "Enable a replica set (a single node is enough): start mongod with --replSet rs0 and run "
    "rs.initiate() once, then connect with ?replicaSet=rs0 (Atlas clusters are replica sets "
    "already). The embedded server: 'bmc-backup devdb start' starts it with its emulated oplog. "
    "Until then the scheduled incrementals are the recovery point."
)
NO_OPLOG = (
    "{uri} says it is replica set {rs!r} but has neither change streams nor a capped "
    "local.oplog.rs to tail. For FerretDB create it: db.getSiblingDB('local').createCollection("
    "'oplog.rs', {{capped: true, size: 1073741824}}) ('bmc-backup devdb start' does this)."
)


class HistoryLost(Exception):
    """The resume point is no longer in the change log: changes after it may be gone."""

    def __init__(self, reason: str, before: datetime) -> None:
        super().__init__(reason)
        self.reason = reason
        self.before = before  # the change log starts here now


class Source(Protocol):
    name: str
    caught_up: bool  # the last poll found nothing more in the change log
    behind: bool  # the last poll returned a full batch: more is waiting

    def open(self, resume: dict[str, Any] | None, start_at: datetime | None) -> datetime:
        """Start reading after ``resume`` (raising :class:`HistoryLost` if it is gone), or at
        ``start_at`` (or the oldest history there is, if later); the time covered from."""

    def poll(self, max_wait_s: float) -> list[CapturedChange]:
        """The next changes; empty once caught up (after waiting up to ``max_wait_s``)."""

    def resume_token(self) -> dict[str, Any]:
        """Where to resume after the last change :meth:`poll` returned."""

    def close(self) -> None: ...


def _utc(at: datetime) -> datetime:
    return at if at.tzinfo else at.replace(tzinfo=timezone.utc)


# -- the oplog ----------------------------------------------------------------------------------
def oplog_changes(entry: RawBSONDocument, database: str, db: Any) -> Iterator[CapturedChange]:
    """The changes one oplog entry makes to ``database`` (none for other databases, no-ops)."""
    op, ns = entry.get("op"), str(entry.get("ns", ""))
    wall = entry.get("wall")
    at = wall_ms(_utc(wall) if isinstance(wall, datetime) else
                 datetime.fromtimestamp(entry["ts"].time, timezone.utc))  # fmt: skip
    prefix = database + "."
    if op == "c":
        o = entry["o"]
        if "applyOps" in o:
            for inner in o["applyOps"]:
                yield from oplog_changes(inner, database, db)
        elif ns == f"{database}.$cmd" and "drop" in o:
            yield CapturedChange.drop(str(o["drop"]), at)
        elif ns == f"{database}.$cmd" and "renameCollection" in o:
            source = str(o["renameCollection"])
            if source.startswith(prefix):
                yield CapturedChange.drop(source[len(prefix) :], at)
        return
    if not ns.startswith(prefix) or op not in ("i", "u", "d"):
        return
    coll = ns[len(prefix) :]
    if coll.startswith("system."):
        return
    o = entry["o"]
    if op == "i":
        yield CapturedChange.put(coll, at, bytes(o.raw))
    elif op == "d":
        yield CapturedChange.delete(coll, at, bytes(o.raw))
    else:
        post = o.get("$set")
        key = entry["o2"]
        if post is not None and "_id" in post and len(o.keys()) <= 2:  # FerretDB: the whole doc
            yield CapturedChange.put(coll, at, bytes(post.raw))
            return
        current = db[coll].with_options(codec_options=RAW).find_one({"_id": key["_id"]})
        if current is not None:  # gone since: its delete follows in the oplog
            yield CapturedChange.put(coll, at, bytes(current.raw))


class OplogSource:
    """Tails ``local.oplog.rs`` for one database."""

    name = OPLOG

    def __init__(self, client: Any, database: str, *, batch_size: int = 5000) -> None:
        self.client, self.database, self.batch_size = client, database, batch_size
        self.local = client.get_database("local", codec_options=RAW)
        self.db = client[database]
        self.last_ts: Timestamp | None = None
        self.cursor_id = 0
        self.caught_up = self.behind = False
        # FerretDB's emulated oplog (its buildInfo names its version)
        self.emulated = "ferretdbVersion" in client.admin.command("buildInfo")

    def _edge(self, direction: int) -> RawBSONDocument | None:
        found: RawBSONDocument | None = self.local["oplog.rs"].find_one(
            {}, sort=[("$natural", direction)]
        )
        return found

    def _check_resumable(self) -> None:
        """Raise :class:`HistoryLost` unless the oplog still reaches back to ``last_ts``."""
        oldest = self._edge(1)
        if oldest is None or oldest["ts"] > self.last_ts:
            before = _utc(oldest["wall"]) if oldest is not None else datetime.now(timezone.utc)
            raise HistoryLost(
                f"the oplog no longer holds the resume point {self.last_ts} "
                f"(its oldest entry is {oldest['ts'] if oldest else 'gone: it is empty'})",
                before,
            )

    def open(self, resume: dict[str, Any] | None, start_at: datetime | None) -> datetime:
        if resume and "ts" in resume:
            t, i = resume["ts"]
            self.last_ts = Timestamp(int(t), int(i))
            self._check_resumable()
            return datetime.fromtimestamp(self.last_ts.time, timezone.utc)
        oldest = self._edge(1)
        newest = self._edge(-1)
        if (
            start_at is not None
            and oldest is not None
            and oldest["ts"].time <= start_at.timestamp()
        ):
            self.last_ts = Timestamp(int(start_at.timestamp()), 0)
            return _utc(start_at)
        if start_at is not None and oldest is not None:  # history starts later than asked
            self.last_ts = Timestamp(oldest["ts"].time, max(oldest["ts"].inc - 1, 0))
            return _utc(oldest["wall"])
        now = datetime.now(timezone.utc)
        self.last_ts = newest["ts"] if newest is not None else Timestamp(int(now.timestamp()), 0)
        return now

    def _command(self, cmd: dict[str, Any]) -> list[RawBSONDocument]:
        """Run a find or getMore; keep its cursor id; the batch it gave."""
        reply = self.local.command(cmd, codec_options=RAW)
        self.cursor_id = int(reply["cursor"]["id"])
        return list(reply["cursor"].get("firstBatch", reply["cursor"].get("nextBatch", [])))

    def _batch(self, max_wait_s: float) -> list[RawBSONDocument]:
        """The next entries after ``last_ts``.

        MongoDB: one tailable, awaiting cursor, kept open. FerretDB: a plain query from the last
        entry read, continued while it returns full batches. FerretDB answers every new query of
        its oplog by going through all of it, and its tailable cursors run their first query
        again once new entries arrive, or may see nothing more after an empty answer; a plain
        query per read costs one pass and sees everything.
        """
        if self.cursor_id:
            more = {"getMore": bson.Int64(self.cursor_id), "collection": "oplog.rs",
                    "batchSize": self.batch_size}  # fmt: skip
            if not self.emulated:
                more["maxTimeMS"] = max(1, int(max_wait_s * 1000))
            return self._command(more)
        find: dict[str, Any] = {"find": "oplog.rs", "filter": {"ts": {"$gt": self.last_ts}}}
        if self.emulated:
            return self._command({**find, "batchSize": self.batch_size})
        self._command({**find, "tailable": True, "awaitData": True, "batchSize": 0})
        return self._batch(max_wait_s) if self.cursor_id else []

    def poll(self, max_wait_s: float) -> list[CapturedChange]:
        self.caught_up = self.behind = False
        try:
            batch = self._batch(max_wait_s)
        except OperationFailure:
            # a cursor can die (MongoDB: CappedPositionLost when the oplog overtook it): look
            # again from the last entry read, which tells lost history from a cursor to reopen
            self.cursor_id = 0
            self._check_resumable()
            return []
        self.caught_up = not batch
        self.behind = len(batch) >= self.batch_size
        out: list[CapturedChange] = []
        for entry in batch:
            if entry["ts"] <= self.last_ts:
                continue  # never apply an entry twice, whatever a server delivers
            out.extend(oplog_changes(entry, self.database, self.db))
            self.last_ts = entry["ts"]
        return out

    def resume_token(self) -> dict[str, Any]:
        assert self.last_ts is not None
        return {"ts": [self.last_ts.time, self.last_ts.inc]}

    def close(self) -> None:
        if self.cursor_id:
            with contextlib.suppress(PyMongoError):
                self.local.command(
                    {"killCursors": "oplog.rs", "cursors": [bson.Int64(self.cursor_id)]}
                )
            self.cursor_id = 0


# -- change streams -----------------------------------------------------------------------------
def event_changes(event: RawBSONDocument, database: str) -> Iterator[CapturedChange]:
    """The changes one change stream event makes (pure: tested with recorded events)."""
    kind = event.get("operationType")
    wall = event.get("wallTime")
    at = wall_ms(_utc(wall) if isinstance(wall, datetime) else
                 datetime.fromtimestamp(event["clusterTime"].time, timezone.utc))  # fmt: skip
    ns = event.get("ns") or {}
    if ns.get("db") not in (None, database):
        return
    coll = ns.get("coll")
    if kind in ("insert", "replace", "update"):
        full = event.get("fullDocument")
        if full is not None and coll:  # None: deleted before the lookup; its delete follows
            yield CapturedChange.put(str(coll), at, bytes(full.raw))
    elif kind == "delete" and coll:
        yield CapturedChange.delete(str(coll), at, bytes(event["documentKey"].raw))
    elif kind in ("drop", "rename") and coll:
        yield CapturedChange.drop(str(coll), at)


class ChangeStreamSource:
    """``watch()`` on one database."""

    name = CHANGE_STREAM

    def __init__(self, client: Any, database: str) -> None:
        self.db = client.get_database(database, codec_options=RAW)
        self.database = database
        self.stream: Any = None
        self.token: dict[str, Any] | None = None
        self.first: RawBSONDocument | None = None
        self.caught_up = self.behind = False

    def open(self, resume: dict[str, Any] | None, start_at: datetime | None) -> datetime:
        kwargs: dict[str, Any] = {"full_document": "updateLookup", "max_await_time_ms": 1000}
        if resume and "token" in resume:
            kwargs["resume_after"] = resume["token"]
            started = datetime.now(timezone.utc)
        elif start_at is not None:
            kwargs["start_at_operation_time"] = Timestamp(int(start_at.timestamp()), 0)
            started = _utc(start_at)
        else:
            started = datetime.now(timezone.utc)
        self.stream = self.db.watch(**kwargs)
        # the server checks the resume point on the first read; an event read here is kept
        self.first = self._next()
        return started

    def _next(self) -> RawBSONDocument | None:
        try:
            event: RawBSONDocument | None = self.stream.try_next()
        except OperationFailure as exc:
            if exc.code in HISTORY_LOST:
                now = datetime.now(timezone.utc)
                raise HistoryLost(f"the change stream cannot resume: {exc}", now) from None
            raise
        return event

    def poll(self, max_wait_s: float) -> list[CapturedChange]:
        out: list[CapturedChange] = []
        self.caught_up = self.behind = False
        while len(out) < 1000:
            event, self.first = (
                (self.first, None) if self.first is not None else (self._next(), None)
            )
            if event is None:
                self.caught_up = True
                break
            out.extend(event_changes(event, self.database))
        else:
            self.behind = True
        token = self.stream.resume_token
        if token is not None:
            self.token = bson.decode(bson.encode(token))
        return out

    def resume_token(self) -> dict[str, Any]:
        return {"token": self.token} if self.token else {}

    def close(self) -> None:
        if self.stream is not None:
            self.stream.close()


def detect_source(client: Any, database: str, uri: str, *, prefer: str = "auto") -> Source:
    """The source this server offers (``prefer`` forces one), or a refusal saying what to enable."""
    hello = client.admin.command("hello")
    rs = hello.get("setName")
    if not rs:
        raise ConfigError(STANDALONE.format(uri=uri))
    if prefer in ("auto", CHANGE_STREAM):
        try:
            with client[database].watch(max_await_time_ms=100) as probe:
                probe.try_next()
            return ChangeStreamSource(client, database)
        except PyMongoError as exc:
            if prefer == CHANGE_STREAM:
                raise ConfigError(f"{uri} offers no change streams: {exc}") from None
    names = client["local"].list_collection_names()
    if "oplog.rs" not in names:
        raise ConfigError(NO_OPLOG.format(uri=uri, rs=rs))
    return OplogSource(client, database)
