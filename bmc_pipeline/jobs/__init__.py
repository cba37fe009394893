"""Every Dagster job: backups, maintenance, restore and rollback, scan, storage upkeep; and the run history.

Each submodule builds its jobs; :func:`build_jobs` is what ``definitions.py`` assembles.
"""

from __future__ import annotations

import dagster as dg

from bmc_pipeline.config import Settings
from bmc_pipeline.jobs.backup import BACKUP_JOB_NAMES, build_backup_jobs
from bmc_pipeline.jobs.maintenance import build_maintenance_jobs
from bmc_pipeline.jobs.report import build_report_job
from bmc_pipeline.jobs.restore import build_restore_jobs
from bmc_pipeline.jobs.scan import build_scan_job
from bmc_pipeline.jobs.storage import build_storage_job


def build_jobs(
    settings: Settings,
) -> list[dg.JobDefinition | dg.UnresolvedAssetJobDefinition]:
    return [
        *build_backup_jobs(),
        *build_maintenance_jobs(),
        *build_restore_jobs(settings),
        build_scan_job(settings),
        build_storage_job(settings),
        build_report_job(settings),
    ]


__all__ = ["BACKUP_JOB_NAMES", "build_jobs"]
