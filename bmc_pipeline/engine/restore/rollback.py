"""Rollback points: what a restore is about to change, saved before it changes anything.

A rollback point is a published backup of type ``rollback``. For each collection the restore
touches it holds the current versions of every document the restore replaces or deletes
(``documents``) and the ids it inserts (``tombstones``), with the collection's state digest before
the restore; for the files, the current versions of the files it replaces (as blobs) and the list
of files it creates (``filesystem``). :func:`rollback` puts all of it back and checks each
collection's digest equals the recorded one and each file its recorded content.

Indexes and collections a restore created are left in place by a rollback: they hold no data of
their own, and dropping an index the application may rely on is not an undo anyone wants at night.
"""

from __future__ import annotations

import time
from contextlib import nullcontext
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from bmc_pipeline.config import Settings
from bmc_pipeline.engine.archive import ARCHIVE_SUFFIX, ArchiveStats, ArchiveWriter
from bmc_pipeline.engine.chain import BackupPoint, verify_chain
from bmc_pipeline.engine.crypto import KeyRing
from bmc_pipeline.engine.digest import StateDigest
from bmc_pipeline.engine.errors import BmcError
from bmc_pipeline.engine.files import BlobStore
from bmc_pipeline.engine.locks import restoring
from bmc_pipeline.engine.manifest import (
    FORMAT,
    ArchiveEntry,
    BackupMetadata,
    CollectionEntry,
    Manifest,
    StateEntry,
)
from bmc_pipeline.engine.mongo import raw_batches
from bmc_pipeline.engine.rawbson import decode_id, id_document, id_element
from bmc_pipeline.engine.restore import after
from bmc_pipeline.engine.restore.files import rollback_files
from bmc_pipeline.engine.restore.plan import PlanFiles
from bmc_pipeline.engine.restore.report import RestoreReport
from bmc_pipeline.engine.restore.write import delete_ids, in_batches, read_target, replace
from bmc_pipeline.engine.store import (
    MANIFEST_VERSION,
    BackupRef,
    BackupStore,
    PendingBackup,
    new_backup_id,
)


@dataclass
class CollectionChange:
    """What a restore is about to do to one collection, and the state it found it in."""

    coll: Any
    plan: PlanFiles
    report: RestoreReport
    before: StateDigest


def _save(
    settings: Settings, keyring: KeyRing, pending: PendingBackup, change: CollectionChange
) -> CollectionEntry:
    """Write one collection's rollback archives; returns its manifest entry."""
    batch = settings.restore.batch_size
    target = change.report.target_collection
    # documents deleted by the restore are put back on rollback: fetch them now
    to_delete = [decode_id(id_element(d)) for d in change.plan.read("delete")]
    stats: dict[str, ArchiveStats] = {}
    for part, source in (("", "previous"), (".tombstones", "insert")):
        fname = f"{target}{part}{ARCHIVE_SUFFIX}"
        w = ArchiveWriter(
            pending.create(fname),
            keyring,
            level=settings.compression.level,
            segment_size=settings.encryption.segment_size,
            name=fname,
        )
        if source == "previous":
            for raw in change.plan.read("previous"):
                w.write_batch(raw)
            for i in range(0, len(to_delete), batch):
                for b in raw_batches(change.coll, {"_id": {"$in": to_delete[i : i + batch]}}):
                    w.write_batch(b)
        else:
            for raw in change.plan.read("insert"):
                w.write_batch(id_document(id_element(raw)))
        stats[part] = w.close()

    def entry(part: str) -> ArchiveEntry:
        return ArchiveEntry.of(pending.relpath(f"{target}{part}{ARCHIVE_SUFFIX}"), stats[part])

    return CollectionEntry(
        mode="rollback",
        parent=None,
        documents=entry(""),
        tombstones=entry(".tombstones"),
        index=None,
        state=StateEntry(documents=change.before.count, digest=change.before.hexdigest),
        metadata={},
    )


def publish_rollback(
    settings: Settings,
    store: BackupStore,
    keyring: KeyRing,
    changes: list[CollectionChange],
    *,
    restore_of: str,
    files: dict[str, Any] | None = None,
) -> str:
    """Save what the restore will change, before it changes anything; returns the point's id."""
    rid = new_backup_id("rollback")
    with store.pending(rid) as pending:
        entries = {
            c.report.target_collection: _save(settings, keyring, pending, c) for c in changes
        }
        strategies = sorted({c.report.strategy for c in changes})
        manifest = Manifest(
            backup_metadata=BackupMetadata(
                timestamp=datetime.now(timezone.utc).isoformat(),
                backup_type="rollback",
                version=MANIFEST_VERSION,
                database=settings.mongodb.database,
                backup_id=rid,
                format=FORMAT,
                restore_of=restore_of,
                strategy=", ".join(strategies) if strategies else None,
            ),
            collections=entries,
            filesystem=files or {},
            checksums={n: f"sha256:{e.documents.sha256}" for n, e in entries.items()},
        )
        pending.publish(manifest, keyring)
    return rid


def _rollback_collection(
    settings: Settings, keyring: KeyRing, db: Any, point: BackupPoint, target: str
) -> dict[str, Any]:
    batch = settings.restore.batch_size
    coll = db[target]
    inserted = [decode_id(id_element(r)) for r in point.documents("tombstones", keyring)]
    delete_ids(coll, inserted, batch)
    restored = in_batches(
        point.documents("documents", keyring), batch, lambda docs: replace(coll, docs)
    )
    _, digest = read_target(coll, settings.mongodb.batch_size)
    st = point.entry.state
    verified = digest.hexdigest == st.digest and digest.count == st.documents
    return {
        "collection": target,
        "deleted": len(inserted),
        "restored": restored,
        "verified": verified,
        "verification": (
            f"state digest equals the one recorded before the restore ({st.documents} documents)"
            if verified
            else f"state differs from before the restore: {digest.count} documents now, {st.documents} then"
        ),
    }


def rollback(
    settings: Settings,
    store: BackupStore,
    keyring: KeyRing,
    db: Any,
    blobs: BlobStore,
    rollback_id: str,
    *,
    force: bool = False,
    lock: bool = True,
) -> dict[str, Any]:
    """Return what a restore changed to its state before the restore that made ``rollback_id``.

    The top-level keys are those of a one-collection rollback (``collection`` names every
    collection, counts are summed); ``collections`` and ``files`` give each part. Refused
    (:class:`GuardedError`) when documents the restore wrote changed since, unless ``force``
    (:mod:`.after`); the targets' restore locks are held throughout unless ``lock`` is False
    (the caller holds them).
    """
    started = time.monotonic()
    ref = store.resolve(rollback_id)
    if ref.backup_type != "rollback":
        raise BmcError(
            f"{rollback_id} is a {ref.backup_type} backup, not a rollback point; use restore"
        )
    manifest = store.load_manifest(ref, keyring)
    targets = [f"{db.name}.{t}" for t in manifest.collections]
    if manifest.filesystem.get("root"):
        targets.append(f"files:{Path(str(manifest.filesystem['root'])).resolve()}")
    held = restoring(store.lock_root(), targets, f"rollback {rollback_id}") if lock else None
    with held or nullcontext():
        if not force:
            state = after.load(keyring, ref.payload_dir, rollback_id)
            if state is not None:
                after.refuse_if_changed(db, state, rollback_id, settings.restore.batch_size)
        result = _rollback(settings, store, keyring, db, blobs, ref, manifest)
    result["duration_s"] = round(time.monotonic() - started, 3)
    return result


def _rollback(
    settings: Settings,
    store: BackupStore,
    keyring: KeyRing,
    db: Any,
    blobs: BlobStore,
    ref: BackupRef,
    manifest: Manifest,
) -> dict[str, Any]:
    points = {
        target: BackupPoint(ref, manifest, entry) for target, entry in manifest.collections.items()
    }
    verify_chain(list(points.values()), keyring)
    parts = {t: _rollback_collection(settings, keyring, db, p, t) for t, p in points.items()}
    files: dict[str, Any] | None = None
    texts = [str(p["verification"]) for p in parts.values()]
    verified = all(p["verified"] for p in parts.values())
    if manifest.filesystem.get("root"):
        put_back, removed, problems = rollback_files(blobs, manifest.filesystem)
        said = problems or ["files read back as they were before the restore"]
        files = {"put_back": put_back, "removed": removed, "verified": not problems,
                 "verification": said}  # fmt: skip
        texts += said
        verified = verified and not problems
    return {
        "rollback_id": ref.backup_id,
        "collection": ", ".join(parts),
        "deleted": sum(p["deleted"] for p in parts.values()),
        "restored": sum(p["restored"] for p in parts.values()),
        "verified": verified,
        "verification": "; ".join(texts),
        "collections": parts,
        "files": files,
    }
