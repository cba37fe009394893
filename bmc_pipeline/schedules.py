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


def _asset_schedule(
    name: str, job_name: str, key: list[str], cron: str, tags: dict[str, str]
) -> dg.ScheduleDefinition:
    """A schedule that materializes one unpartitioned asset, running by default."""
    job = dg.define_asset_job(
        job_name, selection=dg.AssetSelection.assets(dg.AssetKey(key)), tags=tags
    )
    return dg.ScheduleDefinition(
        name=name,
        job=job,
        cron_schedule=cron,
        execution_timezone="UTC",
        default_status=dg.DefaultScheduleStatus.RUNNING,
    )


# an hour after the daily full, so that the day's new full is there before anything is deleted
retention_schedule = _asset_schedule(
    "retention_daily", "retention_job", ["backups", "retention"], "0 3 * * *",
    {"bmc/operation": "retention"},
)  # fmt: skip
health_schedule = _asset_schedule(
    "health_hourly", "health_job", ["backups", "health"], "0 * * * *", {}
)
schedules = [full_backup_schedule, incremental_backup_schedule, retention_schedule, health_schedule]
