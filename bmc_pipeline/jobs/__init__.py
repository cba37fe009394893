"""Jobs: the backup jobs that the schedules and ``bmc-backup backup`` launch."""

from __future__ import annotations

import dagster as dg

BACKUP_JOB_NAMES = {"full": "full_backup_job", "incremental": "incremental_backup_job"}


def backup_job(backup_type: str) -> dg.UnresolvedAssetJobDefinition:
    return dg.define_asset_job(
        BACKUP_JOB_NAMES[backup_type],
        selection=dg.AssetSelection.groups("mongo_backups")
        & dg.AssetSelection.key_prefixes(["backups", backup_type]),
        description=f"{backup_type} backup of every configured collection and the chatbot's files",
        tags={"bmc/operation": "backup", "bmc/backup_type": backup_type},
    )


backup_jobs = [backup_job("full"), backup_job("incremental")]
