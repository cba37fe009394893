"""Backups as partitioned Dagster assets.

For each backup type (full: daily partitions; incremental: 6-hourly partitions) one multi-asset
produces, in one step, an asset per configured collection (``backups/<type>/<collection>``), the
file snapshot (``backups/<type>/files``) and the backup set (``backups/<type>/backup_set``), whose
materialization is the published manifest. One step, because a backup point is published
atomically: either every selected part is in the manifest or nothing is.

Every part carries a blocking integrity check that re-reads what was written, and numeric metadata
(documents, bytes, ratio, duration, throughput) that the Dagster UI plots over time.
"""

import contextlib
from collections.abc import Iterator
from datetime import date, datetime, timedelta, timezone
from typing import Any

import dagster as dg

from bmc_pipeline.config import Settings
from bmc_pipeline.engine.backup import BackupEngine, BackupResult
from bmc_pipeline.engine.crypto import KeyRing
from bmc_pipeline.engine.files import BlobStore
from bmc_pipeline.engine.store import BackupRef, BackupStore
from bmc_pipeline.engine.validate import ValidationReport, validate_backup
from bmc_pipeline.resources import EncryptionResource, MongoResource, StorageResource
from bmc_pipeline.run_audit import audited_run
from bmc_pipeline.run_kinds import BACKUP_TYPE_TAG, CHECKS_ONLY_TAG, OPERATION_TAG, tag_run

OWNERS = ["team:chatbot-ops"]  # who is paged: the people who run the chatbot


def group_of(backup_type: str) -> str:
    """``full_backups`` or ``incremental_backups``: the graph shows the two sets apart."""
    return f"{backup_type}_backups"


INTEGRITY_CHECK = "archive_integrity"
BACKFILL_TAG = "dagster/backfill"  # on every run a backfill launches


def partitions_start(settings: Settings) -> date:
    """``schedules.start_date``, or the day of the oldest backup in the store, or today.

    The day directories' names are the backups' days: no manifest is read.
    """
    if settings.schedules.start_date is not None:
        return settings.schedules.start_date
    days = []
    if settings.backup_dir.is_dir():
        for d in settings.backup_dir.iterdir():
            with contextlib.suppress(ValueError):
                days.append(date.fromisoformat(d.name))
    return min(days) if days else datetime.now(timezone.utc).date()


def partitions(settings: Settings, backup_type: str) -> dg.TimeWindowPartitionsDefinition:
    """Daily partitions for full backups, ``schedules.incremental_every_hours`` for incrementals."""
    start = partitions_start(settings).isoformat()
    if backup_type == "full":
        return dg.DailyPartitionsDefinition(start_date=start, timezone="UTC", end_offset=1)
    every = settings.schedules.incremental_every_hours
    return dg.TimeWindowPartitionsDefinition(
        cron_schedule=f"0 */{every} * * *" if every > 1 else "0 * * * *",
        start=f"{start}-00:00",
        fmt="%Y-%m-%d-%H:%M",
        timezone="UTC",
        end_offset=1,
    )


def collection_key(backup_type: str, collection: str) -> dg.AssetKey:
    return dg.AssetKey(["backups", backup_type, collection])


def files_key(backup_type: str) -> dg.AssetKey:
    return dg.AssetKey(["backups", backup_type, "files"])


def backup_set_key(backup_type: str) -> dg.AssetKey:
    return dg.AssetKey(["backups", backup_type, "backup_set"])


def _collection_metadata(result: BackupResult, name: str) -> dict[str, Any]:
    c = result.collections[name]
    d = c.documents
    return {
        "documents": dg.MetadataValue.int(d.documents),
        "tombstones": dg.MetadataValue.int(c.tombstones.documents if c.tombstones else 0),
        "state_documents": dg.MetadataValue.int(c.state.count),
        "raw_bytes": dg.MetadataValue.int(d.raw_bytes),
        "stored_bytes": dg.MetadataValue.int(d.stored_bytes),
        "compression_ratio": dg.MetadataValue.float(
            round(d.raw_bytes / d.stored_bytes, 3) if d.stored_bytes else 0.0
        ),
        "duration_s": dg.MetadataValue.float(round(c.duration_s, 3)),
        "docs_per_s": dg.MetadataValue.float(
            round(d.documents / c.duration_s, 1) if c.duration_s > 0 else 0.0
        ),
        "backup_id": dg.MetadataValue.text(result.backup_id),
        "parent_id": dg.MetadataValue.text(c.parent or ""),
        "change_detection": dg.MetadataValue.text(c.change_detection),
        "path": dg.MetadataValue.path(str(result.ref.manifest_path)),
        "state_digest": dg.MetadataValue.text(c.state.hexdigest),
    }


def build_backup_assets(settings: Settings, backup_type: str) -> dg.AssetsDefinition:
    """The multi-asset for one backup type, with one asset per configured collection."""
    collections = list(settings.collections)
    part_keys = [collection_key(backup_type, c) for c in collections] + [files_key(backup_type)]
    freshness = (
        dg.FreshnessPolicy.time_window(fail_window=timedelta(hours=26))
        if backup_type == "full"
        else dg.FreshnessPolicy.time_window(fail_window=timedelta(hours=8))
    )
    specs = [
        dg.AssetSpec(
            collection_key(backup_type, c),
            group_name=group_of(backup_type),
            kinds={"mongodb"},
            owners=OWNERS,
            tags={"backup_type": backup_type, "collection": c},
            description=f"{backup_type} backup of the {c} collection (encrypted raw BSON)",
            freshness_policy=freshness,
            skippable=True,
        )
        for c in collections
    ]
    specs.append(
        dg.AssetSpec(
            files_key(backup_type),
            group_name=group_of(backup_type),
            kinds={"file"},
            owners=OWNERS,
            tags={"backup_type": backup_type},
            description=f"{backup_type} snapshot of the chatbot's knowledge base, config files "
            "and .env",
            skippable=True,
        )
    )
    specs.append(
        dg.AssetSpec(
            backup_set_key(backup_type),
            group_name=group_of(backup_type),
            deps=part_keys,
            kinds={"json"},
            owners=OWNERS,
            tags={"backup_type": backup_type},
            description=f"the {backup_type} backup point: the authenticated manifest listing "
            "every part",
            skippable=True,
        )
    )
    check_specs = [
        dg.AssetCheckSpec(
            INTEGRITY_CHECK,
            asset=k,
            blocking=True,
            description="re-reads the archives: checksums, authentication, document count",
        )
        for k in [*part_keys[:-1], backup_set_key(backup_type)]
    ]

    @dg.multi_asset(
        name=f"{backup_type}_backup",
        specs=specs,
        check_specs=check_specs,
        partitions_def=partitions(settings, backup_type),
        can_subset=True,
        op_tags={"bmc/operation": "backup"},
    )
    def _backup(
        context: dg.AssetExecutionContext,
        mongo: MongoResource,
        encryption: EncryptionResource,
        storage: StorageResource,
    ) -> Iterator[dg.MaterializeResult[Any] | dg.AssetCheckResult]:
        selected = context.selected_asset_keys
        kind = {OPERATION_TAG: "backup", BACKUP_TYPE_TAG: backup_type}
        tag_run(context, {**kind, CHECKS_ONLY_TAG: "true"} if not selected else kind)
        if not selected:  # a check executed on its own (the UI's button): check, never back up
            yield from _recheck(context, settings, backup_type, encryption, storage)
            return
        past = _past_partition(context)
        if past:  # a backup is of the database as it is now, not as it was then
            context.log.warning(past)
            return
        names = [c for c in collections if collection_key(backup_type, c) in selected]
        include_files = files_key(backup_type) in selected
        keyring = encryption.keyring()
        store = storage.store()
        engine = BackupEngine(
            settings, mongo.database_handle(), store, keyring, log=context.log.info
        )
        params = {"collections": names, "files": include_files, "partition": context.partition_key}
        with audited_run(context, settings, keyring, f"{backup_type} backup", params) as info:
            result = engine.run(
                backup_type,
                names,
                include_files=include_files,
                extra_metadata={
                    "partition": context.partition_key,
                    "dagster_run_id": context.run.run_id,
                },
            )
            blobs = BlobStore(
                store,
                keyring,
                level=settings.compression.level,
                segment_size=settings.encryption.segment_size,
            )
            report = validate_backup(store, result.ref, keyring, blobs=blobs)
            info["extra"] = {"backup_id": result.backup_id, "valid": report.ok}
            if not report.ok:
                info["outcome"] = "invalid"

        for name in names:
            key = collection_key(backup_type, name)
            yield dg.MaterializeResult(asset_key=key, metadata=_collection_metadata(result, name))
            yield _part_check(key, report, result.ref, name)
        if include_files and result.files is not None:
            yield dg.MaterializeResult(
                asset_key=files_key(backup_type),
                metadata={
                    "files": dg.MetadataValue.int(len(result.files.files)),
                    "total_bytes": dg.MetadataValue.int(result.files.total_bytes),
                    "new_blobs": dg.MetadataValue.int(result.files.new_blobs),
                    "new_bytes": dg.MetadataValue.int(result.files.new_bytes),
                    "skipped": dg.MetadataValue.text("\n".join(result.files.skipped)),
                    "backup_id": dg.MetadataValue.text(result.backup_id),
                },
            )
        if backup_set_key(backup_type) in selected:
            yield dg.MaterializeResult(
                asset_key=backup_set_key(backup_type),
                metadata={
                    "backup_id": dg.MetadataValue.text(result.backup_id),
                    "path": dg.MetadataValue.path(str(result.ref.manifest_path)),
                    "size_bytes": dg.MetadataValue.int(result.size_bytes),
                    "collections": dg.MetadataValue.int(len(result.collections)),
                    "documents": dg.MetadataValue.int(
                        sum(c.documents.documents for c in result.collections.values())
                    ),
                    "summary": dg.MetadataValue.json(result.summary()),
                },
            )
            yield _part_check(backup_set_key(backup_type), report, result.ref, None)
        if not report.ok:
            context.log.error(f"backup {result.backup_id} failed validation: {report.errors}")
            return
        remote = storage.remote()
        if remote is not None:
            # after the materializations, so the backup is on record even if the copy fails;
            # a failed copy fails the run (and alerts): the off-site copy is part of the job
            with audited_run(
                context, settings, keyring, "remote copy", {"backup_id": result.backup_id}
            ) as info:
                pushed = remote.push(store, result.ref, keyring, log=context.log.info)
                info["extra"] = pushed.as_dict()

    return _backup


def _past_partition(context: dg.AssetExecutionContext) -> str | None:
    """Why a backfill's run writes nothing, if its partition ended before the previous one began.

    A backup always reads the database as it is now; labelling that with a partition of last
    spring is no backup of last spring. A backfill of old partitions (the UI's "Materialize
    all" offers every partition) thus costs a few milliseconds per partition instead of a full
    backup each. A single run for a past partition, asked for by name, still backs up.
    """
    if not context.has_partition_key or BACKFILL_TAG not in context.run.tags:
        return None
    window = context.partition_time_window
    length = window.end - window.start
    if datetime.now(timezone.utc) - window.end.astimezone(timezone.utc) <= length:
        return None
    return (
        f"partition {context.partition_key} ended at {window.end.isoformat()}: a backup reads "
        "the database as it is now, so a backfill writes none for a past partition; run a "
        "backup for the current partition instead"
    )


def _part_check(
    key: dg.AssetKey, report: ValidationReport, ref: BackupRef, collection: str | None
) -> dg.AssetCheckResult:
    """The integrity check of one part (a collection's archives; ``None``: the whole backup)."""
    if collection is None:
        bad = list(report.errors) if not report.ok else []
    else:
        prefix = f"{ref.payload_dir.name}/{collection}."
        bad = [c.error or c.file for c in report.checks if not c.ok and c.file.startswith(prefix)]
    return dg.AssetCheckResult(
        asset_key=key,
        check_name=INTEGRITY_CHECK,
        passed=not bad,
        metadata={
            "backup_id": dg.MetadataValue.text(ref.backup_id),
            "errors": dg.MetadataValue.text("\n".join(bad)),
        },
    )


def _stored_backup(
    context: dg.AssetExecutionContext, store: BackupStore, keyring: KeyRing, backup_type: str
) -> BackupRef | None:
    """The backup a check run on its own looks at: the newest of this type written for the
    run's partition, or the newest of this type when the run has no partition."""
    refs = store.refs(backup_type=backup_type)
    if not context.has_partition_key:
        return refs[-1] if refs else None
    for ref in reversed(refs):
        extra = store.load_manifest(ref, keyring).backup_metadata.model_extra or {}
        if extra.get("partition") == context.partition_key:
            return ref
    return None


def _recheck(
    context: dg.AssetExecutionContext,
    settings: Settings,
    backup_type: str,
    encryption: EncryptionResource,
    storage: StorageResource,
) -> Iterator[dg.AssetCheckResult]:
    """Validate the stored backup again and report the selected checks: what a check executed
    alone from the UI does. It never writes a backup."""
    keyring, store = encryption.keyring(), storage.store()
    ref = _stored_backup(context, store, keyring, backup_type)
    keys = context.selected_asset_check_keys
    if ref is None:
        where = f" for partition {context.partition_key}" if context.has_partition_key else ""
        for check in keys:
            yield dg.AssetCheckResult(
                asset_key=check.asset_key,
                check_name=INTEGRITY_CHECK,
                passed=False,
                metadata={"errors": dg.MetadataValue.text(f"no {backup_type} backup{where} yet")},
            )
        return
    context.log.info(f"re-validating the stored backup {ref.backup_id}")
    blobs = BlobStore(
        store,
        keyring,
        level=settings.compression.level,
        segment_size=settings.encryption.segment_size,
    )
    report = validate_backup(store, ref, keyring, blobs=blobs)
    for check in keys:
        part = check.asset_key.path[-1]
        yield _part_check(check.asset_key, report, ref, None if part == "backup_set" else part)


def build_all_backup_assets(settings: Settings) -> list[dg.AssetsDefinition]:
    return [build_backup_assets(settings, t) for t in ("full", "incremental")]
