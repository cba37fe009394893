"""Schedules: full backups daily at 02:00 UTC, incrementals every 6 hours (00, 06, 12, 18 UTC),
retention daily at 03:00 UTC, the health dashboard hourly, the restore drill daily at 04:00 UTC
(``drill.schedule``).

They run as soon as the Dagster daemon runs (``DefaultScheduleStatus.RUNNING``): backups that wait
for someone to switch them on are backups that do not happen. The jobs are in ``jobs/``.
"""

from __future__ import annotations

from typing import Any

import dagster as dg

from bmc_pipeline.config import Settings
from bmc_pipeline.jobs.backup import BACKUP_JOB_NAMES
from bmc_pipeline.jobs.maintenance import DRILL_JOB, HEALTH_JOB, RETENTION_JOB
from bmc_pipeline.jobs.report import DAILY_REPORT_JOB


def _cron(name: str, job_name: str, cron: str) -> dg.ScheduleDefinition:
    return dg.ScheduleDefinition(
        name=name,
        job_name=job_name,
        cron_schedule=cron,
        execution_timezone="UTC",
        default_status=dg.DefaultScheduleStatus.RUNNING,
    )


def build_schedules(settings: Settings, jobs: dict[str, Any]) -> list[Any]:
    """The schedules, given the backup jobs by name (partitioned schedules need the job itself).

    ``Any``: Dagster's types for asset jobs and their schedules are not all public at run time.
    """
    return [
        dg.build_schedule_from_partitioned_job(
            jobs[BACKUP_JOB_NAMES["full"]],
            name="full_backup_daily",
            hour_of_day=2,
            minute_of_hour=0,
            default_status=dg.DefaultScheduleStatus.RUNNING,
        ),
        dg.build_schedule_from_partitioned_job(
            jobs[BACKUP_JOB_NAMES["incremental"]],
            name="incremental_backup_6h",
            default_status=dg.DefaultScheduleStatus.RUNNING,
        ),
        # an hour after the daily full, so that the day's new full is there before anything goes
        _cron("retention_daily", RETENTION_JOB, "0 3 * * *"),
        _cron("health_hourly", HEALTH_JOB, "0 * * * *"),
        _cron("drill_daily", DRILL_JOB, settings.drill.schedule),
        *(
            [_cron("daily_report", DAILY_REPORT_JOB, settings.alerts.daily_report)]
            if settings.alerts.daily_report
            else []
        ),
    ]
