"""Collections to archives: full backups, and incrementals with tombstones.

Each backup point of a collection stores up to two archives beside its manifest:

* ``<name>.bson.zst.enc``: documents (all of them for a full; the changed ones for an incremental);
* ``<name>.tombstones.bson.zst.enc``: ``{"_id": ...}`` of documents deleted since the parent point.

A chain of a full and its incrementals therefore restores the exact state at any of its points,
deletions included. No point stores an index of the whole collection: an incremental needs the
parent's ``_id -> hash`` map, and rebuilds it from the chain's archives (a local read, no query);
the state digest is carried forward from the parent's by subtracting what changed or went and
adding the new versions. Backups written before this kept a ``.index`` archive; it is still
validated, and no longer read.

An incremental's changes come from the server (documents whose timestamp moved, or every
document when a collection has none) or, when continuous capture covers the interval since the
parent, from the captured segments alone (:mod:`.capture`), without reading the collection.
"""

from __future__ import annotations

import hashlib
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from bmc_pipeline import __version__
from bmc_pipeline.config import Settings, check_collection_name
from bmc_pipeline.engine.archive import (
    ARCHIVE_SUFFIX,
    ArchiveStats,
    ArchiveWriter,
)
from bmc_pipeline.engine.bsonstream import bson_documents
from bmc_pipeline.engine.capture.coverage import CapturedChanges, captured_changes
from bmc_pipeline.engine.chain import (
    point_documents,
    point_state,
    resolve_chain,
    verify_chain,
)
from bmc_pipeline.engine.crypto import KeyRing
from bmc_pipeline.engine.digest import StateDigest, document_hash
from bmc_pipeline.engine.errors import BmcError
from bmc_pipeline.engine.files import BlobStore, FilesSnapshot, snapshot_files
from bmc_pipeline.engine.incremental import Delta, from_capture, from_scan, from_timestamps
from bmc_pipeline.engine.manifest import (
    FORMAT,
    ArchiveEntry,
    BackupMetadata,
    CollectionEntry,
    Manifest,
    StateEntry,
)
from bmc_pipeline.engine.mongo import collection_metadata, raw_batches, with_retries
from bmc_pipeline.engine.rawbson import id_element
from bmc_pipeline.engine.store import (
    MANIFEST_VERSION,
    BackupRef,
    BackupStore,
    PendingBackup,
    canonical_json,
    new_backup_id,
)
from bmc_pipeline.engine.throttle import Throttle

# Documents whose timestamp is this close before the parent's watermark are read again, so clock
# differences between the chatbot's servers and this one cannot hide a change. Re-reading an
# unchanged document is harmless: its content hash matches the parent's and it is not stored.
TIMESTAMP_OVERLAP = timedelta(minutes=5)

Log = Callable[[str], None]


def _quiet(_: str) -> None:
    pass


@dataclass
class CollectionBackup:
    """What one collection contributed to a backup point."""

    name: str
    mode: str  # "full" or "incremental"
    parent: str | None
    documents: ArchiveStats
    tombstones: ArchiveStats | None
    state: StateDigest
    watermark: datetime  # changes after it are in the next point (taken before the read)
    read_until: datetime  # the read ended: the point holds the state at any time after it
    change_detection: str
    metadata: dict[str, Any]
    duration_s: float

    def manifest_entry(
        self, pending: PendingBackup, timestamp_field: str | None
    ) -> CollectionEntry:
        def arch(stats: ArchiveStats, suffix: str) -> ArchiveEntry:
            return ArchiveEntry.of(pending.relpath(f"{self.name}{suffix}{ARCHIVE_SUFFIX}"), stats)

        return CollectionEntry(
            mode=self.mode,
            parent=self.parent,
            watermark=self.watermark.isoformat(),
            timestamp_field=timestamp_field,
            change_detection=self.change_detection,
            documents=arch(self.documents, ""),
            tombstones=arch(self.tombstones, ".tombstones") if self.tombstones else None,
            read_until=self.read_until.isoformat(),
            state=StateEntry(documents=self.state.count, digest=self.state.hexdigest),
            metadata=self.metadata,
            duration_s=round(self.duration_s, 3),
        )


@dataclass
class BackupResult:
    """A published backup point."""

    ref: BackupRef
    backup_type: str
    timestamp: datetime
    collections: dict[str, CollectionBackup]
    files: FilesSnapshot | None
    manifest: Manifest = field(repr=False)

    @property
    def backup_id(self) -> str:
        return self.ref.backup_id

    @property
    def size_bytes(self) -> int:
        total = sum(
            s.stored_bytes
            for c in self.collections.values()
            for s in (c.documents, c.tombstones)
            if s is not None
        )
        return total + (self.files.new_bytes if self.files else 0)

    def summary(self) -> dict[str, Any]:
        """The shape ``bmc-backup backup --json`` prints."""
        return {
            "backup_id": self.backup_id,
            "path": str(self.ref.manifest_path),
            "timestamp": self.timestamp.isoformat(),
            "type": self.backup_type,
            "size_bytes": self.size_bytes,
            "collections": {
                n: {
                    "documents": c.documents.documents,
                    "tombstones": c.tombstones.documents if c.tombstones else 0,
                    "stored_bytes": c.documents.stored_bytes,
                    "state_documents": c.state.count,
                    "state_digest": c.state.hexdigest,
                }
                for n, c in self.collections.items()
            },
            "filesystem": {
                "files": len(self.files.files) if self.files else 0,
                "new_blobs": self.files.new_blobs if self.files else 0,
                "new_bytes": self.files.new_bytes if self.files else 0,
            },
        }


PARTS = ("", ".tombstones")  # file name suffixes of one collection's archives


def _docs_in(batches: Iterable[bytes], name: str, throttle: Throttle) -> Iterator[bytes]:
    for batch in batches:
        throttle.spend(len(batch))  # before the work on it: reads are what the budget bounds
        yield from bson_documents(batch, where=name)


class BackupEngine:
    """Writes backup points of a database into a :class:`BackupStore`."""

    def __init__(
        self,
        settings: Settings,
        db: Any,
        store: BackupStore,
        keyring: KeyRing,
        *,
        log: Log = _quiet,
        retry_backoff_s: float = 1.0,
    ) -> None:
        self.settings = settings
        self.db = db
        self.store = store
        self.keyring = keyring
        self.log = log
        self.retry_backoff_s = retry_backoff_s
        # one budget for the whole backup point (mongodb.max_read_mb_per_s; none: full speed)
        self.throttle = Throttle(settings.mongodb.max_read_mb_per_s)
        # the captured changes an incremental reads instead of the collection, where they cover
        # the interval since its parent (None: none were captured)
        self.capture: CapturedChanges | None = captured_changes(store, keyring)

    # -- one collection ---------------------------------------------------------------------
    def _backup_collection(
        self,
        pending: PendingBackup,
        name: str,
        mode: str,
        parent: tuple[BackupRef, Manifest] | None,
    ) -> CollectionBackup:
        coll_cfg = self.settings.collection(name)
        coll = self.db[name]
        batch = self.settings.mongodb.batch_size
        started = time.monotonic()
        # taken before the scan starts, so nothing changed during or after it can be missed
        watermark = datetime.now(timezone.utc)
        metadata = collection_metadata(self.db, name)

        def writer(suffix: str) -> ArchiveWriter:
            filename = f"{name}{suffix}{ARCHIVE_SUFFIX}"
            return ArchiveWriter(
                pending.create(filename),
                self.keyring,
                level=self.settings.compression.level,
                segment_size=self.settings.encryption.segment_size,
                name=filename,
            )

        docs_w = writer("")
        tomb_stats: ArchiveStats | None = None
        parent_id: str | None = None
        read_until: datetime | None = None
        if mode == "full" or parent is None:
            detection = "full"
            digest = StateDigest()
            for n, raw in enumerate(
                _docs_in(raw_batches(coll, batch_size=batch), name, self.throttle), 1
            ):
                docs_w.write_batch(raw)
                digest.add_hash(document_hash(raw))
                if n % 50_000 == 0:
                    self.log(f"{name}: {n} documents")
        else:
            parent_ref, parent_manifest = parent
            parent_id = parent_ref.backup_id
            pentry = parent_manifest.collections[name]
            parent_watermark = datetime.fromisoformat(str(pentry.watermark))
            with tempfile.TemporaryDirectory(prefix="bmc-incremental-") as spill:
                spill_dir = Path(spill)
                points = resolve_chain(self.store, self.keyring, parent_id, name)
                verify_chain(points, self.keyring)
                delta = Delta(
                    point_state(points, self.keyring, spill_dir),
                    pentry.state.digest_value(),
                    docs_w,
                    writer(".tombstones"),
                )

                def parent_ids() -> Iterator[bytes]:
                    docs, _ = point_documents(points, self.keyring, spill_dir)
                    return (id_element(raw) for raw in docs)

                def documents(batches: Iterable[bytes]) -> Iterator[bytes]:
                    return _docs_in(batches, name, self.throttle)

                captured = (
                    self.capture.changes_since(name, pentry) if self.capture is not None else None
                )
                if captured is not None:
                    detection = "capture"
                    read_until, layers = captured
                    watermark = read_until  # the state is the one at the end of the capture
                    from_capture(delta, layers, parent_ids)
                elif coll_cfg.timestamp_field:
                    detection = "timestamp"
                    from_timestamps(
                        delta,
                        coll,
                        documents,
                        ts_field=coll_cfg.timestamp_field,
                        since=parent_watermark - TIMESTAMP_OVERLAP,
                        batch=batch,
                        parent_ids=parent_ids(),
                    )
                else:
                    detection = "content-hash"
                    from_scan(delta, coll, documents, batch=batch, parent_ids=parent_ids())
                delta.state.close()
            digest = delta.digest
            tomb_stats = delta.tombstones.close()
        return CollectionBackup(
            name=name,
            mode="full" if parent_id is None else "incremental",
            parent=parent_id,
            documents=docs_w.close(),
            tombstones=tomb_stats,
            state=digest,
            watermark=watermark,
            read_until=read_until or datetime.now(timezone.utc),
            change_detection=detection,
            metadata=metadata,
            duration_s=time.monotonic() - started,
        )

    def backup_collection(self, pending: PendingBackup, name: str, mode: str) -> CollectionBackup:
        """One collection into ``pending``, retried from scratch after a transient error."""
        check_collection_name(name)
        parent = self.store.latest_with(name, self.keyring) if mode == "incremental" else None

        def attempt() -> CollectionBackup:
            pending.discard([f"{name}{part}{ARCHIVE_SUFFIX}" for part in PARTS])
            return self._backup_collection(pending, name, mode, parent)

        def on_retry(n: int, exc: BaseException) -> None:
            self.log(f"{name}: attempt {n} failed ({exc}); retrying")

        return with_retries(
            f"backup of collection {name!r}",
            attempt,
            backoff_s=self.retry_backoff_s,
            on_retry=on_retry,
        )

    # -- a whole backup point ---------------------------------------------------------------
    def run(
        self,
        backup_type: str,
        collections: list[str] | None = None,
        *,
        include_files: bool = True,
        now: datetime | None = None,
        extra_metadata: dict[str, Any] | None = None,
    ) -> BackupResult:
        """Back up ``collections`` (default: all configured) and the files; publish one manifest."""
        if backup_type not in ("full", "incremental"):
            raise BmcError(f"unknown backup type {backup_type!r}: use 'full' or 'incremental'")
        names = collections or list(self.settings.collections)
        for n in names:
            check_collection_name(n)
        self.throttle = Throttle(self.settings.mongodb.max_read_mb_per_s)  # a budget per point
        for p in self.store.remove_stale_leftovers():
            self.log(f"removed {p.name}, left by a backup that did not finish")
        now = now or datetime.now(timezone.utc)
        backup_id = new_backup_id(backup_type, now)
        results: dict[str, CollectionBackup] = {}
        snap: FilesSnapshot | None = None
        with self.store.pending(backup_id) as pending:
            for name in names:
                self.log(f"{backup_id}: backing up {name} ({backup_type})")
                results[name] = self.backup_collection(pending, name, backup_type)
            if include_files:
                blobs = BlobStore(
                    self.store,
                    self.keyring,
                    level=self.settings.compression.level,
                    segment_size=self.settings.encryption.segment_size,
                )
                snap = snapshot_files(
                    self.settings.files_root,
                    self.settings.files.include,
                    self.settings.files.exclude,
                    blobs,
                )
            manifest = self._manifest(
                backup_id, backup_type, now, pending, results, snap, extra_metadata or {}
            )
            ref = pending.publish(manifest, self.keyring)
        self.log(f"{backup_id}: published {ref.manifest_path}")
        return BackupResult(ref, backup_type, now, results, snap, manifest)

    def _manifest(
        self,
        backup_id: str,
        backup_type: str,
        now: datetime,
        pending: PendingBackup,
        results: dict[str, CollectionBackup],
        snap: FilesSnapshot | None,
        extra: dict[str, Any],
    ) -> Manifest:
        fs = snap.manifest_section() if snap else {}
        checksums = {n: f"sha256:{c.documents.sha256}" for n, c in results.items()}
        if snap:
            checksums["filesystem"] = "sha256:" + hashlib.sha256(canonical_json(fs)).hexdigest()
        return Manifest(
            backup_metadata=BackupMetadata(
                timestamp=now.isoformat(),
                backup_type=backup_type,
                version=MANIFEST_VERSION,
                database=self.settings.mongodb.database,
                backup_id=backup_id,
                format=FORMAT,
                tool=f"bmc_pipeline {__version__}",
                **extra,
            ),
            collections={
                n: c.manifest_entry(pending, self.settings.collection(n).timestamp_field)
                for n, c in results.items()
            },
            filesystem=fs,
            checksums=checksums,
        )
