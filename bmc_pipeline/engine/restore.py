"""Restores: from a backup point (or a legacy JSON file) into a collection, provably.

A restore runs in three passes, and writes nothing until the second:

1. **Plan** (read-only). Resolve the chain (a full and the incrementals up to the chosen point, or
   the latest point at or before ``point_in_time``), authenticate every archive of it, read the
   target collection once (ids and content hashes, and its state digest), then stream the
   documents of the point's state through filters, validation and the strategy. Conflicting
   current documents are fetched in batches. The plan (inserts, replacements, deletions) goes to
   encrypted temporary archives; invalid documents go to a quarantine file.
2. **Rollback first, then write.** The current version of every document the plan changes or
   deletes, and the ids it inserts, are published as a ``rollback`` backup; only then are the
   batches written. ``dry_run`` stops after pass 1 and writes nothing, not even the rollback.
3. **Verify.** The target is read again: every written document must read back byte for byte,
   deletions must be gone, and the count must add up. A complete restore into an empty collection
   must also reproduce the backup point's state digest exactly.
"""

from __future__ import annotations

import json
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import bson
from bson import json_util
from bson.codec_options import CodecOptions
from bson.raw_bson import RawBSONDocument
from mongomock.filtering import filter_applies
from pymongo import ReplaceOne

from bmc_pipeline.config import Settings, check_collection_name, load_settings
from bmc_pipeline.engine.archive import ARCHIVE_SUFFIX, ArchiveReader, ArchiveStats, ArchiveWriter
from bmc_pipeline.engine.backup import parse_index_entry
from bmc_pipeline.engine.crypto import KeyRing
from bmc_pipeline.engine.deployment import Deployment
from bmc_pipeline.engine.digest import StateDigest, document_hash
from bmc_pipeline.engine.errors import BackupNotFoundError, BmcError
from bmc_pipeline.engine.merge import merge_documents
from bmc_pipeline.engine.mongo import insert_raw, is_mock, raw_batches, with_retries
from bmc_pipeline.engine.rawbson import (
    TYPE_BYTES,
    datetime_ms,
    decode_id,
    id_document,
    id_element,
    string_value,
    top_level,
)
from bmc_pipeline.engine.store import MANIFEST_VERSION, BackupRef, BackupStore, new_backup_id
from bmc_pipeline.engine.validate import verify_archive

STRATEGIES = ("skip_duplicates", "overwrite", "merge", "timestamp_based")
_CODEC: bson.CodecOptions[dict[str, Any]] = bson.CodecOptions(
    tz_aware=True, datetime_conversion=bson.DatetimeConversion.DATETIME_AUTO
)
Log = Callable[[str], None]


def _quiet(_: str) -> None:
    pass


@dataclass
class RestoreFilters:
    """Which documents of the backup to restore, and from which point."""

    date_from: datetime | None = None
    date_to: datetime | None = None
    session_ids: list[str] | None = None
    point_in_time: datetime | None = None
    drop_deleted: bool = False  # like mongorestore --drop, but only for ids the chain deleted
    # A MongoDB query over the backed-up documents, with whitelisted operators only
    # (see check_query); evaluated here, in Python, never sent to the server.
    query: dict[str, Any] | None = None

    def __post_init__(self) -> None:
        if self.query is not None:
            self.query = check_query(self.query)

    @property
    def selective(self) -> bool:
        return bool(self.date_from or self.date_to or self.session_ids or self.query)

    @classmethod
    def from_dict(cls, d: dict[str, Any] | None) -> RestoreFilters:
        """The seed API's ``filters`` dict: ``date_range: {from, to}``, ``session_ids``, ..."""
        d = dict(d or {})
        dr = d.pop("date_range", None) or {}
        allowed = {
            "query",
            "session_ids",
            "point_in_time",
            "drop_deleted",
            "collection",
            "date_from",
            "date_to",
        }
        unknown = set(d) - allowed
        if unknown:
            raise BmcError(
                f"unknown restore filter(s) {', '.join(sorted(unknown))}: use date_range, "
                "session_ids, query, point_in_time, drop_deleted or collection"
            )
        sids = d.get("session_ids")
        if sids is not None and (
            not isinstance(sids, list) or not all(isinstance(s, str) for s in sids)
        ):
            raise BmcError("filters.session_ids must be a list of strings")
        return cls(
            date_from=parse_time(dr.get("from") or d.get("date_from"), "date_range.from"),
            date_to=parse_time(dr.get("to") or d.get("date_to"), "date_range.to"),
            session_ids=sids,
            point_in_time=parse_time(d.get("point_in_time"), "point_in_time"),
            drop_deleted=bool(d.get("drop_deleted", False)),
            query=d.get("query"),
        )


# Query operators a restore filter may use: comparisons, sets, logic and element tests. Nothing
# that runs code ($where, $function, $accumulator) or reaches outside the document ($expr, $jsonSchema
# with its own semantics, $text, $near...) is accepted.
QUERY_OPERATORS = frozenset(
    {
        "$eq", "$ne", "$gt", "$gte", "$lt", "$lte", "$in", "$nin",
        "$and", "$or", "$nor", "$not", "$exists", "$type", "$size", "$all", "$elemMatch",
        "$regex", "$options",
    }
)  # fmt: skip
_MAX_QUERY_DEPTH = 12


def check_query(query: Any) -> dict[str, Any]:
    """A restore filter query, with Extended JSON values decoded, or a clear refusal.

    Values may be written as Extended JSON (``{"$date": "2026-11-01T00:00:00Z"}``,
    ``{"$oid": "..."}``); every other ``$`` key must be a whitelisted operator.
    """
    if isinstance(query, str):
        text = query
    else:
        try:
            text = json.dumps(query)
        except (TypeError, ValueError):
            raise BmcError("filters.query must be a JSON object (a MongoDB query)") from None
    try:
        decoded = json_util.loads(text)
    except (ValueError, TypeError) as exc:
        raise BmcError(f"filters.query is not valid (Extended) JSON: {exc}") from None
    if not isinstance(decoded, dict):
        raise BmcError("filters.query must be a JSON object (a MongoDB query)")

    def walk(node: Any, depth: int) -> None:
        if depth > _MAX_QUERY_DEPTH:
            raise BmcError(f"filters.query is nested deeper than {_MAX_QUERY_DEPTH} levels")
        if isinstance(node, dict):
            for k, v in node.items():
                if not isinstance(k, str):
                    raise BmcError("filters.query keys must be strings")
                if k.startswith("$") and k not in QUERY_OPERATORS:
                    raise BmcError(
                        f"filters.query uses operator {k!r}, which a restore filter does not "
                        f"accept; allowed: {', '.join(sorted(QUERY_OPERATORS))}"
                    )
                walk(v, depth + 1)
        elif isinstance(node, list):
            for v in node:
                walk(v, depth + 1)

    walk(decoded, 0)
    return decoded


_TZ_AWARE: CodecOptions[dict[str, Any]] = CodecOptions(tz_aware=True)


def _matches(query: dict[str, Any], raw: bytes) -> bool:
    """Whether a backed-up document matches a (checked) restore query."""
    try:
        return bool(filter_applies(query, bson.decode(raw, codec_options=_TZ_AWARE)))  # type: ignore[no-untyped-call]
    except (NotImplementedError, TypeError, ValueError) as exc:
        raise BmcError(f"filters.query cannot be evaluated: {exc}") from None


def parse_time(value: Any, what: str) -> datetime | None:
    """An ISO-8601 date or time (UTC if no zone is given)."""
    if value is None or isinstance(value, datetime):
        return value.replace(tzinfo=value.tzinfo or timezone.utc) if value else None
    try:
        dt = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        raise BmcError(
            f"{what}: {value!r} is not a date or time like 2026-11-25 or 2026-11-25T02:00:00Z"
        ) from None
    return dt if dt.tzinfo else dt.replace(tzinfo=timezone.utc)


@dataclass
class RestoreReport:
    """What a restore did (or, dry run, would do)."""

    backup_id: str
    collection: str
    target_collection: str
    strategy: str
    dry_run: bool
    chain: list[str] = field(default_factory=list)
    inserted: int = 0
    overwritten: int = 0
    merged: int = 0
    skipped: int = 0
    unchanged: int = 0
    invalid: int = 0
    deleted: int = 0
    filtered_out: int = 0
    errors: list[str] = field(default_factory=list)
    rollback_id: str | None = None
    verified: bool = False
    verification: list[str] = field(default_factory=list)
    duration_s: float = 0.0
    samples: dict[str, list[str]] = field(default_factory=dict)
    quarantine_file: str | None = None
    phases_s: dict[str, float] = field(default_factory=dict)  # verify, plan, rollback, write, check

    @property
    def restored(self) -> int:
        return self.inserted + self.overwritten + self.merged

    def sample(self, action: str, elem: bytes) -> None:
        ids = self.samples.setdefault(action, [])
        if len(ids) < 5:
            ids.append(str(decode_id(elem)))

    def as_dict(self) -> dict[str, Any]:
        d = {k: v for k, v in self.__dict__.items()}
        d["restored"] = self.restored
        d["docs_per_s"] = round(self.restored / self.duration_s, 1) if self.duration_s > 0 else 0.0
        d["duration_s"] = round(self.duration_s, 3)
        d["phases_s"] = {k: round(v, 3) for k, v in self.phases_s.items()}
        return d

    def phase(self, name: str, since: float) -> float:
        """Record the time since ``since`` as phase ``name``; returns now."""
        now = time.monotonic()
        self.phases_s[name] = self.phases_s.get(name, 0.0) + now - since
        return now


@dataclass
class _Point:
    ref: BackupRef
    manifest: dict[str, Any]
    entry: dict[str, Any]

    def path(self, part: str) -> Path:
        return self.ref.manifest_path.parent / str(self.entry[part]["file"])


class _PlanFiles:
    """Encrypted temporary archives holding the plan between pass 1 and pass 2."""

    def __init__(self, directory: Path, keyring: KeyRing, settings: Settings) -> None:
        self.dir = directory
        self.keyring = keyring
        self.settings = settings
        self.writers: dict[str, ArchiveWriter] = {}
        self.handles: dict[str, Any] = {}
        self.stats: dict[str, ArchiveStats] = {}

    def add(self, name: str, raw: bytes) -> None:
        if name not in self.writers:
            fh = (self.dir / f"{name}{ARCHIVE_SUFFIX}").open("wb")
            self.handles[name] = fh
            self.writers[name] = ArchiveWriter(
                fh,
                self.keyring,
                level=1,
                segment_size=self.settings.encryption.segment_size,
                name=name,
            )
        self.writers[name].write_batch(raw)

    def close(self) -> None:
        for name, w in self.writers.items():
            self.stats[name] = w.close()
            self.handles[name].close()

    def read(self, name: str) -> Iterator[bytes]:
        path = self.dir / f"{name}{ARCHIVE_SUFFIX}"
        if not path.exists():
            return
        with path.open("rb") as fh:
            yield from ArchiveReader(fh, self.keyring, name=name).documents()


class RestoreEngine:
    """Restores collections from a :class:`BackupStore` into a database."""

    def __init__(
        self,
        settings: Settings,
        db: Any,
        store: BackupStore,
        keyring: KeyRing,
        *,
        log: Log = _quiet,
    ) -> None:
        self.settings = settings
        self.db = db
        self.store = store
        self.keyring = keyring
        self.log = log
        self.batch = settings.restore.batch_size

    # -- which backup points --------------------------------------------------------------------
    def chain(
        self, backup_id: str, collection: str, point_in_time: datetime | None = None
    ) -> list[_Point]:
        """The full and incrementals (oldest first) whose application gives the chosen point."""
        if point_in_time is not None:
            candidates = []
            for ref in self.store.refs():
                if ref.backup_type == "rollback":
                    continue
                m = self.store.load_manifest(ref, self.keyring)
                taken = datetime.fromisoformat(m["backup_metadata"]["timestamp"])
                if collection in m.get("collections", {}) and taken <= point_in_time:
                    candidates.append((taken, ref, m))
            if backup_id != "latest":
                # The id names a chain; the point in time picks the point within it: the named
                # backup's ancestors and every backup descending from them, however deep.
                family = {p.ref.backup_id for p in self.chain(backup_id, collection)}
                for _, ref_, m in sorted(candidates, key=lambda c: c[0]):
                    if m["collections"][collection].get("parent") in family:
                        family.add(ref_.backup_id)
                candidates = [c for c in candidates if c[1].backup_id in family]
            if not candidates:
                raise BackupNotFoundError(
                    f"no backup of collection {collection!r} at or before {point_in_time.isoformat()}"
                )
            _, ref, manifest = max(candidates, key=lambda c: c[0])
        elif backup_id == "latest":
            found = self.store.latest_with(collection, self.keyring)
            if found is None:
                raise BackupNotFoundError(f"there is no backup of collection {collection!r} yet")
            ref, manifest = found
        else:
            ref = self.store.resolve(backup_id)
            manifest = self.store.load_manifest(ref, self.keyring)
        points: list[_Point] = []
        while True:
            colls = manifest.get("collections", {})
            if collection not in colls:
                raise BackupNotFoundError(
                    f"backup {ref.backup_id} holds no collection {collection!r}; "
                    f"it holds: {', '.join(sorted(colls)) or 'none'}"
                )
            entry = colls[collection]
            points.append(_Point(ref, manifest, entry))
            parent = entry.get("parent")
            if not parent:
                break
            try:
                ref = self.store.resolve(parent)
            except BackupNotFoundError:
                raise BackupNotFoundError(
                    f"backup {points[-1].ref.backup_id} is an incremental whose parent {parent} is "
                    f"missing: the chain for {collection!r} is broken; restore from a full backup"
                ) from None
            manifest = self.store.load_manifest(ref, self.keyring)
        return list(reversed(points))

    def verify_chain(self, points: list[_Point]) -> None:
        """Authenticate every archive the restore will read, before anything is written."""
        for p in points:
            for part in ("documents", "tombstones", "index"):
                if p.entry.get(part):
                    label = f"backup {p.ref.backup_id}: {p.entry[part]['file']}"
                    verify_archive(p.path(part), p.entry[part], self.keyring, label)

    # -- sources of documents -------------------------------------------------------------------
    def _point_documents(self, points: list[_Point]) -> tuple[Iterator[bytes], set[bytes]]:
        """(documents of the final state, ids the chain deleted that the state does not hold)."""
        final = points[-1]
        with final.path("index").open("rb") as fh:
            desired = dict(
                parse_index_entry(r) for r in ArchiveReader(fh, self.keyring).documents()
            )
        deleted: set[bytes] = set()
        for p in points[1:]:
            if p.entry.get("tombstones"):
                with p.path("tombstones").open("rb") as fh:
                    deleted.update(
                        id_element(r) for r in ArchiveReader(fh, self.keyring).documents()
                    )
        deleted -= desired.keys()

        def docs() -> Iterator[bytes]:
            # Newest archive first: the first version whose hash is in the index is the one of this
            # point. Popping it means older versions of the same id no longer match, and the map
            # shrinks as the restore goes.
            for p in reversed(points):
                with p.path("documents").open("rb") as fh:
                    for raw in ArchiveReader(fh, self.keyring).documents():
                        elem = id_element(raw)
                        if desired.get(elem) != document_hash(raw):
                            continue
                        del desired[elem]
                        yield raw

        return docs(), deleted

    # -- the restore ----------------------------------------------------------------------------
    def restore(
        self,
        backup_id: str,
        collection: str,
        *,
        target_collection: str | None = None,
        strategy: str = "skip_duplicates",
        filters: RestoreFilters | None = None,
        dry_run: bool = False,
        fail_fast: bool = False,
        legacy_documents: Iterator[bytes] | None = None,
    ) -> RestoreReport:
        started = time.monotonic()
        check_collection_name(collection)
        target = check_collection_name(target_collection or collection)
        if strategy not in STRATEGIES:
            raise BmcError(f"unknown strategy {strategy!r}: use one of {', '.join(STRATEGIES)}")
        filters = filters or RestoreFilters()
        report = RestoreReport(backup_id, collection, target, strategy, dry_run)

        expected_state: StateDigest | None = None
        if legacy_documents is not None:
            docs, deleted = legacy_documents, set[bytes]()
        else:
            points = self.chain(backup_id, collection, filters.point_in_time)
            report.backup_id = points[-1].ref.backup_id
            report.chain = [p.ref.backup_id for p in points]
            self.log(
                f"restore of {collection} from {report.backup_id}: verifying {len(points)} backup(s)"
            )
            self.verify_chain(points)
            docs, deleted = self._point_documents(points)
            report.phase("verify_backup", started)
            st = points[-1].entry["state"]
            expected_state = StateDigest.parse(int(st["documents"]), str(st["digest"]))
            if not filters.drop_deleted or filters.selective:
                deleted = set()

        coll = self.db[target]
        t = time.monotonic()
        before, before_digest = self._scan(coll)
        with tempfile.TemporaryDirectory(prefix=".restore-", dir=self._tmp_root()) as tmp:
            plan = _PlanFiles(Path(tmp), self.keyring, self.settings)
            quarantine = self._plan(
                docs, coll, before, report, filters, plan, fail_fast, collection
            )
            for elem in deleted:
                if elem in before:
                    report.deleted += 1
                    report.sample("delete", elem)
                    plan.add("delete", id_document(elem))
            plan.close()
            # the maps of the plan are no longer needed: free them before the read-back builds its own
            before_count = len(before)
            del before, docs, deleted
            t = report.phase("plan", t)
            if quarantine:
                report.quarantine_file = str(quarantine)
            if dry_run:
                report.verified = False
                report.verification.append("dry run: nothing was written")
                report.duration_s = time.monotonic() - started
                return report
            report.rollback_id = self._publish_rollback(
                coll, plan, report, before_digest, before_count
            )
            t = report.phase("rollback_point", t)
            self._apply(coll, plan, report)
            t = report.phase("write", t)
            self._verify(
                coll,
                plan,
                report,
                before_count,
                expected_state,
                filters,
                legacy_documents is not None,
            )
            report.phase("read_back", t)
        report.duration_s = time.monotonic() - started
        self.log(
            f"restore of {collection} into {target}: {report.restored} restored, {report.skipped} skipped, "
            f"{report.invalid} invalid, verified={report.verified}"
        )
        return report

    def _tmp_root(self) -> Path:
        self.store.mkdir(self.store.root)
        return self.store.root

    def _scan(self, coll: Any) -> tuple[dict[bytes, bytes], StateDigest]:
        """The target's id -> hash map and state digest, in one read."""
        state: dict[bytes, bytes] = {}
        digest = StateDigest()

        def read() -> None:
            state.clear()
            digest.count = digest.total = 0
            for batch in raw_batches(coll, batch_size=self.settings.mongodb.batch_size):
                for raw in _split(batch):
                    h = document_hash(raw)
                    state[id_element(raw)] = h
                    digest.add_hash(h)

        with_retries(f"reading collection {coll.name!r}", read)
        return state, digest

    def _accept(self, raw: bytes, filters: RestoreFilters, ts_field: str | None) -> bool:
        if not filters.selective:
            return True
        if filters.query is not None and not _matches(filters.query, raw):
            return False
        fields = top_level(raw)
        if filters.session_ids is not None:
            t, v = fields.get("session_id", (0, b""))
            if string_value(t, v) not in filters.session_ids:
                return False
        if filters.date_from or filters.date_to:
            if not ts_field:
                raise BmcError(
                    "a date range needs the collection's timestamp_field in backup_config.json"
                )
            t, v = fields.get(ts_field, (0, b""))
            ms = datetime_ms(t, v)
            if ms is None:
                return False
            if filters.date_from and ms < int(filters.date_from.timestamp() * 1000):
                return False
            if filters.date_to and ms > int(filters.date_to.timestamp() * 1000):
                return False
        return True

    def _invalid_reason(self, raw: bytes, required: Mapping[str, str]) -> str | None:
        if not required:
            return None
        fields = top_level(raw)
        for name, type_name in required.items():
            if name not in fields:
                return f"missing required field {name!r}"
            if fields[name][0] not in TYPE_BYTES[type_name]:
                return f"field {name!r} is not of type {type_name}"
        return None

    def _plan(
        self,
        docs: Iterator[bytes],
        coll: Any,
        before: dict[bytes, bytes],
        report: RestoreReport,
        filters: RestoreFilters,
        plan: _PlanFiles,
        fail_fast: bool,
        collection: str,
    ) -> Path | None:
        cfg = self.settings.collection(collection)
        quarantine_path: Path | None = None
        quarantine_fh = None
        conflicts: list[tuple[bytes, bytes]] = []
        try:
            next_report = time.monotonic() + 2.0
            for seen, raw in enumerate(docs, 1):
                if time.monotonic() >= next_report:
                    self.log(f"planning: {seen} documents read from the backup")
                    next_report = time.monotonic() + 2.0
                if not self._accept(raw, filters, cfg.timestamp_field):
                    report.filtered_out += 1
                    continue
                elem = id_element(raw)
                reason = self._invalid_reason(raw, cfg.required_fields)
                if reason:
                    report.invalid += 1
                    report.sample("invalid", elem)
                    if len(report.errors) < 100:
                        report.errors.append(f"{decode_id(elem)}: {reason}")
                    if fail_fast:
                        raise BmcError(
                            f"document {decode_id(elem)} is invalid ({reason}); stopped (fail_fast)"
                        )
                    if report.dry_run:
                        continue  # a dry run writes nothing, not even the quarantine file
                    if quarantine_fh is None:
                        qdir = self.store.root / "quarantine"
                        self.store.mkdir(qdir)
                        stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
                        quarantine_path = qdir / f"{stamp}-{report.target_collection}.jsonl"
                        quarantine_fh = quarantine_path.open("a", encoding="utf-8")
                    quarantine_fh.write(
                        json.dumps(
                            {
                                "reason": reason,
                                "document": json.loads(
                                    json_util.dumps(
                                        bson.decode(raw, codec_options=_CODEC),
                                        json_options=json_util.CANONICAL_JSON_OPTIONS,
                                    )
                                ),
                            }
                        )
                        + "\n"
                    )
                    continue
                current = before.get(elem)
                if current is None:
                    report.inserted += 1
                    report.sample("insert", elem)
                    plan.add("insert", raw)
                elif current == document_hash(raw):
                    report.skipped += 1
                    report.unchanged += 1
                elif report.strategy == "skip_duplicates":
                    report.skipped += 1
                    report.sample("skip", elem)
                else:
                    conflicts.append((elem, raw))
                    if len(conflicts) >= self.batch:
                        self._resolve_conflicts(coll, conflicts, report, plan, collection)
                        conflicts = []
            if conflicts:
                self._resolve_conflicts(coll, conflicts, report, plan, collection)
        finally:
            if quarantine_fh is not None:
                quarantine_fh.close()
        return quarantine_path

    def _resolve_conflicts(
        self,
        coll: Any,
        conflicts: list[tuple[bytes, bytes]],
        report: RestoreReport,
        plan: _PlanFiles,
        collection: str,
    ) -> None:
        cfg = self.settings.collection(collection)
        ids = [decode_id(e) for e, _ in conflicts]
        current: dict[bytes, bytes] = {}

        def fetch() -> None:
            for batch in raw_batches(coll, {"_id": {"$in": ids}}, batch_size=len(ids)):
                for raw in _split(batch):
                    current[id_element(raw)] = raw

        with_retries(f"reading documents of {coll.name!r}", fetch)
        for elem, raw in conflicts:
            cur = current.get(elem)
            if cur is None:  # deleted since the scan: nothing to clobber
                report.inserted += 1
                plan.add("insert", raw)
                continue
            if report.strategy == "overwrite":
                new, action = raw, "overwritten"
            elif report.strategy == "timestamp_based":
                ts = cfg.timestamp_field
                b = datetime_ms(*top_level(raw).get(ts, (0, b""))) if ts else None
                c = datetime_ms(*top_level(cur).get(ts, (0, b""))) if ts else None
                if b is None or c is None or b <= c:
                    report.skipped += 1
                    report.sample("skip", elem)
                    continue
                new, action = raw, "overwritten"
            else:
                merged = merge_documents(
                    bson.decode(cur, codec_options=_CODEC),
                    bson.decode(raw, codec_options=_CODEC),
                    timestamp_field=cfg.timestamp_field,
                    merge_keys=cfg.merge_keys,
                )
                new, action = bson.encode(merged, codec_options=_CODEC), "merged"
                if new == cur:
                    report.skipped += 1
                    report.unchanged += 1
                    continue
            setattr(report, action, getattr(report, action) + 1)
            report.sample(action, elem)
            plan.add("previous", cur)
            plan.add("replace", new)

    # -- writing ----------------------------------------------------------------------------------
    def _publish_rollback(
        self, coll: Any, plan: _PlanFiles, report: RestoreReport, before: StateDigest, count: int
    ) -> str:
        """Save what the restore will change, before it changes anything."""
        rid = new_backup_id("rollback")
        # documents deleted by the restore are put back on rollback: fetch them now
        delete_ids = [decode_id(id_element(d)) for d in plan.read("delete")]
        with self.store.pending(rid) as pending:
            stats: dict[str, ArchiveStats] = {}
            for part, source in (("", "previous"), (".tombstones", "insert")):
                fname = f"{report.target_collection}{part}{ARCHIVE_SUFFIX}"
                w = ArchiveWriter(
                    pending.create(fname),
                    self.keyring,
                    level=self.settings.compression.level,
                    segment_size=self.settings.encryption.segment_size,
                    name=fname,
                )
                if source == "previous":
                    for raw in plan.read("previous"):
                        w.write_batch(raw)
                    for i in range(0, len(delete_ids), self.batch):
                        for batch in raw_batches(
                            coll, {"_id": {"$in": delete_ids[i : i + self.batch]}}
                        ):
                            w.write_batch(batch)
                else:
                    for raw in plan.read("insert"):
                        w.write_batch(id_document(id_element(raw)))
                stats[part] = w.close()

            def entry(part: str) -> dict[str, Any]:
                s = stats[part]
                return {
                    "file": pending.relpath(f"{report.target_collection}{part}{ARCHIVE_SUFFIX}"),
                    "documents": s.documents, "raw_bytes": s.raw_bytes, "stored_bytes": s.stored_bytes,
                    "segments": s.segments, "sha256": s.sha256, "stored_sha256": s.stored_sha256,
                    "key_id": s.key_id,
                }  # fmt: skip

            now = datetime.now(timezone.utc)
            manifest = {
                "backup_metadata": {
                    "timestamp": now.isoformat(),
                    "backup_type": "rollback",
                    "version": MANIFEST_VERSION,
                    "database": self.settings.mongodb.database,
                    "backup_id": rid,
                    "format": 1,
                    "restore_of": report.backup_id,
                    "strategy": report.strategy,
                },
                "collections": {
                    report.target_collection: {
                        "mode": "rollback",
                        "parent": None,
                        "documents": entry(""),
                        "tombstones": entry(".tombstones"),
                        "index": None,
                        "state": {"documents": count, "digest": before.hexdigest},
                        "metadata": {},
                    }
                },
                "filesystem": {},
                "checksums": {report.target_collection: f"sha256:{stats[''].sha256}"},
            }
            pending.publish(manifest, self.keyring)
        self.log(f"rollback backup {rid} published; now writing")
        return rid

    def _apply(self, coll: Any, plan: _PlanFiles, report: RestoreReport) -> None:
        total = report.inserted + report.overwritten + report.merged
        done = 0
        next_report = time.monotonic() + 2.0

        def progress(n: int) -> None:
            nonlocal done, next_report
            done += n
            if time.monotonic() >= next_report or done == total:
                self.log(f"written {done}/{total} documents ({100 * done // max(total, 1)} %)")
                next_report = time.monotonic() + 2.0

        for name, write in (("insert", self._insert), ("replace", self._replace)):
            buf: list[bytes] = []
            for raw in plan.read(name):
                buf.append(raw)
                if len(buf) >= self.batch:
                    write(coll, buf)
                    progress(len(buf))
                    buf = []
            if buf:
                write(coll, buf)
                progress(len(buf))
        ids = [decode_id(id_element(d)) for d in plan.read("delete")]
        for i in range(0, len(ids), self.batch):
            _delete_ids(coll, ids[i : i + self.batch])

    def _insert(self, coll: Any, docs: list[bytes]) -> None:
        with_retries(f"inserting into {coll.name!r}", lambda: insert_raw(coll, docs))

    def _replace(self, coll: Any, docs: list[bytes]) -> None:
        if is_mock(coll):
            for d in docs:
                doc = bson.decode(d, codec_options=_CODEC)
                coll.replace_one({"_id": doc["_id"]}, doc, upsert=True)
            return
        ops: list[ReplaceOne[Any]] = [
            ReplaceOne({"_id": decode_id(id_element(d))}, RawBSONDocument(d), upsert=True)
            for d in docs
        ]
        with_retries(f"replacing in {coll.name!r}", lambda: coll.bulk_write(ops, ordered=False))

    def _verify(
        self,
        coll: Any,
        plan: _PlanFiles,
        report: RestoreReport,
        before_count: int,
        expected: StateDigest | None,
        filters: RestoreFilters,
        legacy: bool,
    ) -> None:
        after, digest = self._scan(coll)
        ok = True
        written = 0
        for name in ("insert", "replace"):
            for raw in plan.read(name):
                written += 1
                if after.get(id_element(raw)) != document_hash(raw):
                    ok = False
                    if len(report.verification) < 20:
                        report.verification.append(
                            f"document {decode_id(id_element(raw))} does not read back as written"
                        )
        gone = [d for d in plan.read("delete") if id_element(d) in after]
        if gone:
            ok = False
            report.verification.append(f"{len(gone)} deleted document(s) are still there")
        want = before_count + report.inserted - report.deleted
        if len(after) != want:
            ok = False
            report.verification.append(
                f"the collection has {len(after)} documents, expected {want} "
                "(something else wrote to it during the restore?)"
            )
        else:
            report.verification.append(
                f"{written} written document(s) read back byte for byte; count {len(after)} as expected"
            )
        if expected is not None and not before_count and not filters.selective and not legacy:
            if digest.hexdigest == expected.hexdigest and digest.count == expected.count:
                report.verification.append(
                    f"state digest equals the backup's ({expected.count} documents, {expected.hexdigest[:23]}...)"
                )
            else:
                ok = False
                report.verification.append(
                    f"state digest {digest.hexdigest} ({digest.count} documents) differs from the "
                    f"backup's {expected.hexdigest} ({expected.count} documents)"
                )
        report.verified = ok

    # -- rollback ---------------------------------------------------------------------------------
    def rollback(self, rollback_id: str) -> dict[str, Any]:
        """Return a collection to its state before the restore that made ``rollback_id``."""
        started = time.monotonic()
        ref = self.store.resolve(rollback_id)
        if ref.backup_type != "rollback":
            raise BmcError(
                f"{rollback_id} is a {ref.backup_type} backup, not a rollback point; use restore"
            )
        manifest = self.store.load_manifest(ref, self.keyring)
        ((target, entry),) = manifest["collections"].items()
        point = _Point(ref, manifest, entry)
        self.verify_chain([point])
        coll = self.db[target]
        with point.path("tombstones").open("rb") as fh:
            ids = [decode_id(id_element(r)) for r in ArchiveReader(fh, self.keyring).documents()]
        for i in range(0, len(ids), self.batch):
            _delete_ids(coll, ids[i : i + self.batch])
        restored = 0
        with point.path("documents").open("rb") as fh:
            buf: list[bytes] = []
            for raw in ArchiveReader(fh, self.keyring).documents():
                buf.append(raw)
                restored += 1
                if len(buf) >= self.batch:
                    self._replace(coll, buf)
                    buf = []
            if buf:
                self._replace(coll, buf)
        _, digest = self._scan(coll)
        st = entry["state"]
        verified = digest.hexdigest == st["digest"] and digest.count == st["documents"]
        return {
            "rollback_id": rollback_id,
            "collection": target,
            "deleted": len(ids),
            "restored": restored,
            "verified": verified,
            "verification": (
                f"state digest equals the one recorded before the restore ({st['documents']} documents)"
                if verified
                else f"state differs from before the restore: {digest.count} documents now, {st['documents']} then"
            ),
            "duration_s": round(time.monotonic() - started, 3),
        }


def _delete_ids(coll: Any, ids: list[Any]) -> None:
    with_retries(f"deleting from {coll.name!r}", lambda: coll.delete_many({"_id": {"$in": ids}}))


def _split(batch: bytes) -> Iterator[bytes]:
    from bmc_pipeline.engine.archive import bson_documents

    return bson_documents(batch, where="server batch")


def legacy_documents(path: Path, collection: str) -> Iterator[bytes]:
    """Documents of a JSON file found on disk: the backup envelope, an array, or a nested object.

    Values in Extended JSON (``{"$oid": ...}``, ``{"$date": ...}``) are read as BSON types.
    """
    try:
        data = json_util.loads(path.read_text(encoding="utf-8-sig"))  # with or without a BOM
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise BmcError(f"{path}: cannot read as JSON: {exc}") from None
    docs: Any = None
    if isinstance(data, dict) and isinstance(data.get("collections"), dict):
        docs = data["collections"].get(collection)
    elif isinstance(data, list):
        docs = data
    elif isinstance(data, dict):
        stack = [data]
        while stack and docs is None:
            node = stack.pop()
            for k in (collection, "conversations", "data"):
                v = node.get(k)
                if isinstance(v, list):
                    docs = v
                    break
                if isinstance(v, dict):
                    stack.append(v)
        if docs is None and "_id" in data:
            docs = [data]
    if not isinstance(docs, list):
        raise BmcError(f"{path}: found no list of {collection!r} documents")
    for d in docs:
        if isinstance(d, dict) and "_id" in d:
            yield bson.encode(d, codec_options=_CODEC)


def restore_from_backup(
    backup_file: str,
    target_collection: str,
    strategy: str = "skip_duplicates",
    dry_run: bool = False,
    filters: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The seed's API: restore ``target_collection`` from a backup id, manifest path or JSON file.

    ``filters`` may hold ``date_range`` ({"from", "to"}), ``session_ids``, ``point_in_time``,
    ``drop_deleted`` and ``collection`` (the source collection, when it differs from the target).
    Settings, key and database come from ``backup_config.json`` and the environment.
    """
    d = Deployment(load_settings())
    store = d.store()
    source = str((filters or {}).get("collection") or target_collection)
    f = RestoreFilters.from_dict({k: v for k, v in (filters or {}).items() if k != "collection"})
    engine = RestoreEngine(d.settings, d.database(), store, d.keyring())
    backup_id, legacy = resolve_source(store, backup_file, source)
    return engine.restore(
        backup_id, source, target_collection=target_collection, strategy=strategy,
        filters=f, dry_run=dry_run, legacy_documents=legacy,
    ).as_dict()  # fmt: skip


def resolve_source(
    store: BackupStore, backup_file: str, collection: str
) -> tuple[str, Iterator[bytes] | None]:
    """A backup id, a manifest path, or a legacy JSON file -> (backup id, legacy documents)."""
    p = Path(backup_file)
    if p.suffix == ".json" and p.is_file():
        try:
            head = (
                json.loads(p.read_text(encoding="utf-8")) if p.stat().st_size < 64 << 20 else None
            )
        except (ValueError, UnicodeDecodeError):
            head = None
        meta = head.get("backup_metadata") if isinstance(head, dict) else None
        if isinstance(head, dict) and isinstance(meta, dict) and "authentication" in head:
            return str(meta["backup_id"]), None
        return f"file:{p.name}", legacy_documents(p, collection)
    return backup_file, None


__all__ = [
    "STRATEGIES",
    "RestoreEngine",
    "RestoreFilters",
    "RestoreReport",
    "restore_from_backup",
]
