"""The retention asset: applies the keep policy once a day, after the daily full backup."""

import dagster as dg

from bmc_pipeline.assets.backups import OWNERS
from bmc_pipeline.config import Settings
from bmc_pipeline.engine.retention import RetentionPolicy, rotate
from bmc_pipeline.resources import EncryptionResource, StorageResource
from bmc_pipeline.run_audit import audited_run
from bmc_pipeline.run_kinds import OPERATION_TAG, tag_run

RETENTION_KEY = dg.AssetKey(["backups", "retention"])


def build_retention_asset(settings: Settings) -> dg.AssetsDefinition:
    r = settings.retention

    @dg.asset(
        key=RETENTION_KEY,
        group_name="maintenance",
        owners=OWNERS,
        kinds={"json"},
        description=(
            f"keeps {r.daily} daily, {r.weekly} weekly, {r.monthly} monthly backups (restic "
            "'forget' rules), never the newest full or a backup a kept one depends on"
        ),
        deps=[dg.AssetKey(["backups", "full", "backup_set"])],
        op_tags={"bmc/operation": "retention"},
    )
    def retention(
        context: dg.AssetExecutionContext, encryption: EncryptionResource, storage: StorageResource
    ) -> dg.MaterializeResult:  # type: ignore[type-arg]
        keyring = encryption.keyring()
        tag_run(context, {OPERATION_TAG: "retention"})  # also when the UI launched it
        with audited_run(context, settings, keyring, "retention", {}) as info:
            result = rotate(
                storage.store(),
                keyring,
                RetentionPolicy(daily=r.daily, weekly=r.weekly, monthly=r.monthly),
                dry_run=False,
                grace_s=r.blob_grace_hours * 3600,
                log=context.log.info,
                remote=storage.remote(),
            )
            info["extra"] = {"deleted": result.deleted, "blobs_deleted": result.blobs_deleted}
        for u in result.unreadable:
            context.log.warning(f"left alone, manifest unreadable: {u}")
        return dg.MaterializeResult(
            metadata={
                "kept": dg.MetadataValue.int(sum(1 for d in result.decisions if d.keep)),
                "deleted": dg.MetadataValue.int(len(result.deleted)),
                "deleted_ids": dg.MetadataValue.text("\n".join(result.deleted)),
                "blobs_deleted": dg.MetadataValue.int(result.blobs_deleted),
                "blob_bytes_freed": dg.MetadataValue.int(result.blob_bytes_freed),
                "unreadable_manifests": dg.MetadataValue.int(len(result.unreadable)),
            }
        )

    return retention
