"""Schedules: full backups daily at 02:00 UTC, incrementals every 6 hours (00, 06, 12, 18 UTC),
retention daily at 03:00 UTC, the health dashboard hourly.

They run as soon as the Dagster daemon runs (``DefaultScheduleStatus.RUNNING``): backups that wait
for someone to switch them on are backups that do not happen.
"""

from __future__ import annotations

import dagster as dg

from bmc_pipeline.jobs import backup_jobs

full_job, incremental_job = backup_jobs

full_backup_schedule = dg.build_schedule_from_partitioned_job(
    full_job,
    name="full_backup_daily",
    hour_of_day=2,
    minute_of_hour=0,
    default_status=dg.DefaultScheduleStatus.RUNNING,
)
incremental_backup_schedule = dg.build_schedule_from_partitioned_job(
    incremental_job,
    name="incremental_backup_6h",
    default_status=dg.DefaultScheduleStatus.RUNNING,
)
retention_job = dg.define_asset_job(
    "retention_job",
    selection=dg.AssetSelection.assets(dg.AssetKey(["backups", "retention"])),
    description="apply the retention policy",
    tags={"bmc/operation": "retention"},
)
# an hour after the daily full, so that the day's new full is there before anything is deleted
retention_schedule = dg.ScheduleDefinition(
    name="retention_daily",
    job=retention_job,
    cron_schedule="0 3 * * *",
    execution_timezone="UTC",
    default_status=dg.DefaultScheduleStatus.RUNNING,
)
health_job = dg.define_asset_job(
    "health_job",
    selection=dg.AssetSelection.assets(dg.AssetKey(["backups", "health"])),
    description="refresh the backup_health dashboard",
)
health_schedule = dg.ScheduleDefinition(
    name="health_hourly",
    job=health_job,
    cron_schedule="0 * * * *",
    execution_timezone="UTC",
    default_status=dg.DefaultScheduleStatus.RUNNING,
)
schedules = [full_backup_schedule, incremental_backup_schedule, retention_schedule, health_schedule]
