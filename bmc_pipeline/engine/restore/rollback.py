"""Rollback points: what a restore is about to change, saved before it changes anything.

A rollback point is a published backup of type ``rollback`` holding the current versions of every
document the restore replaces or deletes (``documents``) and the ids it inserts (``tombstones``),
with the target's state digest before the restore. :func:`rollback` deletes the inserted ids,
puts the saved versions back, and checks the digest equals the recorded one.
"""

from __future__ import annotations

import time
from datetime import datetime, timezone
from typing import Any

from bmc_pipeline.config import Settings
from bmc_pipeline.engine.archive import ARCHIVE_SUFFIX, ArchiveStats, ArchiveWriter
from bmc_pipeline.engine.crypto import KeyRing
from bmc_pipeline.engine.digest import StateDigest
from bmc_pipeline.engine.errors import BmcError
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
from bmc_pipeline.engine.restore.chain import BackupPoint, verify_chain
from bmc_pipeline.engine.restore.plan import PlanFiles
from bmc_pipeline.engine.restore.report import RestoreReport
from bmc_pipeline.engine.restore.write import delete_ids, in_batches, read_target, replace
from bmc_pipeline.engine.store import MANIFEST_VERSION, BackupStore, new_backup_id


def publish_rollback(
    settings: Settings,
    store: BackupStore,
    keyring: KeyRing,
    coll: Any,
    plan: PlanFiles,
    report: RestoreReport,
    before: StateDigest,
) -> str:
    """Save what the restore will change, before it changes anything; returns the point's id."""
    rid = new_backup_id("rollback")
    batch = settings.restore.batch_size
    # documents deleted by the restore are put back on rollback: fetch them now
    to_delete = [decode_id(id_element(d)) for d in plan.read("delete")]
    target = report.target_collection
    with store.pending(rid) as pending:
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
                for raw in plan.read("previous"):
                    w.write_batch(raw)
                for i in range(0, len(to_delete), batch):
                    for b in raw_batches(coll, {"_id": {"$in": to_delete[i : i + batch]}}):
                        w.write_batch(b)
            else:
                for raw in plan.read("insert"):
                    w.write_batch(id_document(id_element(raw)))
            stats[part] = w.close()

        def entry(part: str) -> ArchiveEntry:
            return ArchiveEntry.of(pending.relpath(f"{target}{part}{ARCHIVE_SUFFIX}"), stats[part])

        manifest = Manifest(
            backup_metadata=BackupMetadata(
                timestamp=datetime.now(timezone.utc).isoformat(),
                backup_type="rollback",
                version=MANIFEST_VERSION,
                database=settings.mongodb.database,
                backup_id=rid,
                format=FORMAT,
                restore_of=report.backup_id,
                strategy=report.strategy,
            ),
            collections={
                target: CollectionEntry(
                    mode="rollback",
                    parent=None,
                    documents=entry(""),
                    tombstones=entry(".tombstones"),
                    index=None,
                    state=StateEntry(documents=before.count, digest=before.hexdigest),
                    metadata={},
                )
            },
            filesystem={},
            checksums={target: f"sha256:{stats[''].sha256}"},
        )
        pending.publish(manifest, keyring)
    return rid


def rollback(
    settings: Settings, store: BackupStore, keyring: KeyRing, db: Any, rollback_id: str
) -> dict[str, Any]:
    """Return a collection to its state before the restore that made ``rollback_id``."""
    started = time.monotonic()
    batch = settings.restore.batch_size
    ref = store.resolve(rollback_id)
    if ref.backup_type != "rollback":
        raise BmcError(
            f"{rollback_id} is a {ref.backup_type} backup, not a rollback point; use restore"
        )
    manifest = store.load_manifest(ref, keyring)
    ((target, entry),) = manifest.collections.items()
    point = BackupPoint(ref, manifest, entry)
    verify_chain([point], keyring)
    coll = db[target]
    inserted = [decode_id(id_element(r)) for r in point.documents("tombstones", keyring)]
    delete_ids(coll, inserted, batch)
    restored = in_batches(
        point.documents("documents", keyring), batch, lambda docs: replace(coll, docs)
    )
    _, digest = read_target(coll, settings.mongodb.batch_size)
    st = entry.state
    verified = digest.hexdigest == st.digest and digest.count == st.documents
    return {
        "rollback_id": rollback_id,
        "collection": target,
        "deleted": len(inserted),
        "restored": restored,
        "verified": verified,
        "verification": (
            f"state digest equals the one recorded before the restore ({st.documents} documents)"
            if verified
            else f"state differs from before the restore: {digest.count} documents now, {st.documents} then"
        ),
        "duration_s": round(time.monotonic() - started, 3),
    }
