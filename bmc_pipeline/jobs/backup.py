"""The backup jobs that the schedules, ``bmc-backup backup`` and the API launch."""

from __future__ import annotations

import dagster as dg

from bmc_pipeline.engine.vocabulary import BackupType

BACKUP_JOB_NAMES = {t.value: f"{t.value}_backup_job" for t in BackupType.scheduled()}


def backup_job(backup_type: str) -> dg.UnresolvedAssetJobDefinition:
    return dg.define_asset_job(
        BACKUP_JOB_NAMES[backup_type],
        selection=dg.AssetSelection.key_prefixes(["backups", backup_type]),
        description=f"{backup_type} backup of every configured collection and the chatbot's files",
        tags={"bmc/operation": "backup", "bmc/backup_type": backup_type},
    )


def build_backup_jobs() -> list[dg.UnresolvedAssetJobDefinition]:
    return [backup_job(t.value) for t in BackupType.scheduled()]
