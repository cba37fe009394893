"""Backups as partitioned Dagster assets.

For each backup type (full: daily partitions; incremental: 6-hourly partitions) one multi-asset
produces, in one step, an asset per configured collection (``backups/<type>/<collection>``), the
file snapshot (``backups/<type>/files``) and the backup set (``backups/<type>/backup_set``), whose
materialization is the published manifest. One step, because a backup point is published
atomically: either every selected part is in the manifest or nothing is.

Every part carries a blocking integrity check that re-reads what was written, and numeric metadata
(documents, bytes, ratio, duration, throughput) that the Dagster UI plots over time.
"""

from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import dagster as dg

from bmc_pipeline.config import Settings
from bmc_pipeline.engine.backup import BackupEngine, BackupResult
from bmc_pipeline.engine.files import BlobStore
from bmc_pipeline.engine.validate import validate_backup
from bmc_pipeline.resources import EncryptionResource, MongoResource, StorageResource
from bmc_pipeline.run_audit import audited_run

GROUP = "mongo_backups"
PARTITIONS_START = "2026-01-01"

daily_partitions = dg.DailyPartitionsDefinition(
    start_date=PARTITIONS_START, timezone="UTC", end_offset=1
)
six_hourly_partitions = dg.TimeWindowPartitionsDefinition(
    cron_schedule="0 */6 * * *",
    start=f"{PARTITIONS_START}-00:00",
    fmt="%Y-%m-%d-%H:%M",
    timezone="UTC",
    end_offset=1,
)
PARTITIONS: dict[str, dg.TimeWindowPartitionsDefinition] = {
    "full": daily_partitions,
    "incremental": six_hourly_partitions,
}
INTEGRITY_CHECK = "archive_integrity"


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
            group_name=GROUP,
            kinds={"mongodb"},
            description=f"{backup_type} backup of the {c!r} collection (encrypted raw BSON)",
            freshness_policy=freshness,
            skippable=True,
        )
        for c in collections
    ]
    specs.append(
        dg.AssetSpec(
            files_key(backup_type),
            group_name=GROUP,
            kinds={"file"},
            description="snapshot of the chatbot's knowledge base, config files and .env",
            skippable=True,
        )
    )
    specs.append(
        dg.AssetSpec(
            backup_set_key(backup_type),
            group_name=GROUP,
            deps=part_keys,
            description="the backup point: the authenticated manifest listing every part",
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
        partitions_def=PARTITIONS[backup_type],
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
        failed = {c.file for c in report.checks if not c.ok}

        for name in names:
            key = collection_key(backup_type, name)
            yield dg.MaterializeResult(asset_key=key, metadata=_collection_metadata(result, name))
            prefix = f"{result.ref.payload_dir.name}/{name}."
            bad = [f for f in failed if f.startswith(prefix)]
            yield dg.AssetCheckResult(
                asset_key=key,
                check_name=INTEGRITY_CHECK,
                passed=not bad,
                metadata={"errors": dg.MetadataValue.text("\n".join(report.errors) if bad else "")},
            )
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
            yield dg.AssetCheckResult(
                asset_key=backup_set_key(backup_type),
                check_name=INTEGRITY_CHECK,
                passed=report.ok,
                metadata={"errors": dg.MetadataValue.text("\n".join(report.errors))},
            )
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


def build_all_backup_assets(settings: Settings) -> list[dg.AssetsDefinition]:
    return [build_backup_assets(settings, t) for t in ("full", "incremental")]
